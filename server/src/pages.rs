//! The panel's pages (`/` and `/models/<name>`), rendered by Leptos in one synchronous pass.
//!
//! A page's data is in memory before it renders (see `app::page_data`), so nothing in it waits.
//! leptos_axum's rendering modes all go through Leptos' streaming renderer, which allocates
//! two strings per element to build chunks for content that might suspend; rendering the view
//! straight into one string does the same work in about half the time. leptos_axum still
//! provides the request's context, the response options (a 404 status) and the hydration
//! scripts.

use futures_util::{Stream, StreamExt};
use leptos::prelude::IntoView;
use leptos::tachys::view::Position;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

/// HTML chunks of a response, as leptos_axum passes them around.
type Chunks = Pin<Box<dyn Stream<Item = String> + Send>>;

/// The length of the last page rendered. A page starts with room for as much (Leptos starts
/// from a few bytes, and a page of a hundred rows, about 200 KB, grew its string a dozen times,
/// copying it each time).
static LAST_PAGE_LEN: AtomicUsize = AtomicUsize::new(0);

/// Renders `app` with Leptos' synchronous renderer, then appends the chunks leptos_axum adds
/// after the page (the hydration context's scripts). The signature is leptos_axum's
/// stream builder's, for [`leptos_axum::handle_response_inner`].
pub fn render_whole<IV>(
    app: IV,
    then: Box<dyn FnOnce() -> Chunks + Send>,
    _out_of_order: bool,
) -> Pin<Box<dyn Future<Output = Chunks> + Send>>
where
    IV: IntoView + 'static,
{
    Box::pin(async move {
        // What `to_html` does, into a string of the expected size.
        let mut html = String::with_capacity(LAST_PAGE_LEN.load(Ordering::Relaxed) + 1024);
        app.to_html_with_buf(&mut html, &mut Position::FirstChild, true, false, vec![]);
        LAST_PAGE_LEN.store(html.len(), Ordering::Relaxed);
        Box::pin(futures_util::stream::once(async move { html }).chain(then())) as Chunks
    })
}
