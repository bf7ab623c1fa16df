//! The data a page is first drawn with, and how it travels from the server's render to the
//! browser's hydration.
//!
//! The registry answers from memory, so the server loads it synchronously before rendering
//! (no `Suspense`: Leptos walks a suspended tree once to find its resources and then again to
//! render it, which was most of the time of the panel's page). The server writes it into the
//! page once, as a JSON data block in the head (see [`PageData::script_json`]); the browser reads
//! it back from there before hydrating, so both draw the same first frame.

use crate::snapshot::{BackendsPage, ModelDetail};
use serde::{Deserialize, Serialize};

/// The `id` of the `<script type="application/json">` element that carries the data.
pub const ELEMENT_ID: &str = "page-data";

/// What the page shows first, and what the visitor may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageData {
    /// The page, with its data.
    pub page: Page,
    /// May shut down and start models (the server enforces it whatever the panel shows).
    pub can_control: bool,
}

/// A page of the panel and its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Page {
    /// `/` (`?page=N`): a page of the configured backends.
    Panel(BackendsPage),
    /// `/models/<name>`: one model (a boxed detail, so the enum stays small).
    Model(Box<ModelDetail>),
    /// `/models/<name>` for a name no model has.
    NoSuchModel(String),
    /// Any other path.
    NotFound,
    /// The data could not be loaded or read back; says why.
    Unavailable(String),
}

impl PageData {
    /// A page that says why it has no data, with no controls.
    pub fn unavailable(why: String) -> Self {
        Self {
            page: Page::Unavailable(why),
            can_control: false,
        }
    }

    /// The data block's text: JSON, with `<` escaped so that nothing in a model's name or log
    /// line can end the `<script>` element early.
    pub fn script_json(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_else(|e| {
            let unavailable = Self::unavailable(format!("cannot encode the page's data: {e}"));
            serde_json::to_string(&unavailable).unwrap_or_default()
        });
        json.replace('<', "\\u003c")
    }

    /// Decodes a data block's text (from bytes, like the server functions' answers, so the
    /// bundle carries one decoder per type); a page that says why when it cannot.
    pub fn from_script_json(text: &str) -> Self {
        serde_json::from_slice(text.as_bytes())
            .unwrap_or_else(|e| Self::unavailable(format!("cannot read the page's data: {e}")))
    }
}

/// The server's side: the data for the request being rendered.
#[cfg(feature = "ssr")]
impl PageData {
    /// Loads the data for the request's URL from the registry (through
    /// [`crate::directory::SharedDirectory`]) and the visitor's permissions, both from Leptos
    /// context; sets the response's status to 404 for a page that doesn't exist.
    pub fn load() -> Self {
        use crate::location::{Location, Route};
        use leptos::prelude::use_context;
        let can_control =
            use_context::<crate::snapshot::Permissions>().is_some_and(|p| p.can_control);
        let directory = use_context::<crate::directory::SharedDirectory>();
        let location = Location::current();
        let page = match (location.route(), directory) {
            (Route::NotFound, _) => Page::NotFound,
            (_, None) => Page::Unavailable("the backend directory is not available".to_owned()),
            (Route::Panel, Some(directory)) => {
                // A page number that doesn't parse shows the first page, like a missing one.
                let number = location.query_value("page").and_then(|n| n.parse().ok());
                Page::Panel(directory.page(number.unwrap_or(1)))
            }
            (Route::Model(name), Some(directory)) => match directory.detail(&name, 0) {
                Some(detail) => Page::Model(Box::new(detail)),
                None => Page::NoSuchModel(name),
            },
        };
        if matches!(page, Page::NotFound | Page::NoSuchModel(_))
            && let Some(response) = use_context::<leptos_axum::ResponseOptions>()
        {
            response.set_status(http::StatusCode::NOT_FOUND);
        }
        Self { page, can_control }
    }
}

/// The browser's side: the data the server wrote into the page.
#[cfg(feature = "hydrate")]
impl PageData {
    /// Reads the data block the server wrote.
    pub fn from_document() -> Self {
        let text = leptos::prelude::document()
            .get_element_by_id(ELEMENT_ID)
            .and_then(|element| element.text_content());
        match text {
            Some(text) => Self::from_script_json(&text),
            None => Self::unavailable("the page carries no data".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_in_the_data_can_close_the_script_element() {
        let data = PageData {
            page: Page::NoSuchModel("</script><script>alert(1)</script>".to_owned()),
            can_control: true,
        };
        let json = data.script_json();
        assert!(!json.contains('<'), "{json}");
        assert_eq!(PageData::from_script_json(&json), data);
    }

    #[test]
    fn unreadable_data_says_why() {
        let data = PageData::from_script_json("{not json");
        assert!(
            matches!(&data.page, Page::Unavailable(why) if why.starts_with("cannot read the page's data")),
            "{data:?}"
        );
        assert!(!data.can_control);
    }
}
