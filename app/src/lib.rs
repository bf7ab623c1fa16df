//! The backend-monitor panel: server-rendered with Leptos and hydrated as WebAssembly.
//!
//! `snapshot` holds the types shared with the server; `panel` and `model_page` are the two pages
//! with the server functions they call; `widgets` are the pieces both pages draw.

// Deeply nested views produce deep types in the hydrate build.
#![recursion_limit = "256"]

pub mod chart;
pub mod directory;
pub mod format;
pub mod live;
pub mod location;
pub mod model_page;
pub mod page_data;
pub mod panel;
pub mod snapshot;
pub mod widgets;

use leptos::prelude::*;
use page_data::{Page, PageData};

/// The HTML document around the app, rendered on the server: loads the page's data (see
/// [`page_data`]), writes it into the head for the browser, and renders the app with it.
#[cfg(feature = "ssr")]
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let data = PageData::load();
    let json = data.script_json();
    provide_context(data);
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <title>"backend-monitor"</title>
                // Static tags in the server-only shell: no head management in the browser bundle.
                <link id="leptos" rel="stylesheet" href="/pkg/backend-monitor.css" />
                <link rel="icon" type="image/svg+xml" href="/favicon.svg" />
                <script type="application/json" id=page_data::ELEMENT_ID inner_html=json></script>
                <AutoReload options=options.clone() />
                <HydrationScripts options />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The root component: the header and the page the URL names, drawn from the [`PageData`] in
/// context (taken, not cloned: nothing else reads it, and a page holds a hundred backends).
/// Links between pages are plain links, answered by the server (see [`location`]).
#[component]
pub fn App() -> impl IntoView {
    let data = take_context::<PageData>()
        .unwrap_or_else(|| PageData::unavailable("the page's data is missing".to_owned()));
    let can_control = data.can_control;
    let page = match data.page {
        Page::Panel(page) => view! { <panel::PanelPage page can_control /> }.into_any(),
        Page::Model(detail) => {
            view! { <model_page::ModelPage detail=*detail can_control /> }.into_any()
        }
        Page::NoSuchModel(name) => view! {
            <p class="breadcrumb"><a href="/">"← All backends"</a></p>
            <h1>"No such model"</h1>
            <p>{format!("No model named \"{name}\" is configured.")}</p>
        }
        .into_any(),
        Page::NotFound => {
            view! { <h1>"Page not found"</h1><p><a href="/">"Back to the panel"</a></p> }.into_any()
        }
        Page::Unavailable(why) => view! {
            <p class="error-message" role="alert">{format!("Cannot load this page: {why}")}</p>
        }
        .into_any(),
    };
    view! {
            <header class="topbar">
                <a href="/" class="brand">
                    <img src="/favicon.svg" alt="" width="22" height="22" />
                    "backend-monitor"
                </a>
                <nav aria-label="API">
                    <a href="/api/backends">"JSON"</a>
                    <a href="/system">"System"</a>
                    <a href="/api/docs">"API reference"</a>
                    <a href="/metrics">"Metrics"</a>
                </nav>
            </header>
            <main>{page}</main>
    }
}

/// Entry point of the WebAssembly bundle: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    // Panic messages in the console while developing; release builds leave the hook out.
    #[cfg(debug_assertions)]
    console_error_panic_hook::set_once();
    let data = PageData::from_document();
    leptos::mount::hydrate_body(move || {
        provide_context(data);
        view! { <App /> }
    });
}
