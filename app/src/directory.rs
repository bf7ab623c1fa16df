//! The server-side source of panel data, provided to server functions through Leptos context.
//!
//! The server crate implements it with its registry, so the panel reads exactly what the JSON API
//! reads (one code path), and this crate does not depend on the server.

use crate::snapshot::{BackendsPage, ModelDetail};
use std::sync::Arc;

/// Read access to what the registry knows; answers from cached observations, so it never blocks
/// on a backend.
pub trait BackendDirectory: Send + Sync + 'static {
    /// Page `page` of the panel's table (see [`BackendsPage::rows`]): the summaries of its rows,
    /// with totals and the host view over every backend.
    fn page(&self, page: usize) -> BackendsPage;
    /// One backend with its history and its log lines after `logs_since` (all for 0); `None`
    /// when no model has that name.
    fn detail(&self, model: &str, logs_since: u64) -> Option<ModelDetail>;
}

/// The context value server functions look up.
pub type SharedDirectory = Arc<dyn BackendDirectory>;
