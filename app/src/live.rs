//! Browser-side plumbing: periodic refresh and the POSTs behind the Shut down / Start buttons.
//!
//! The panel polls (rather than using server-sent events) because every answer comes from the
//! registry's cache, so a poll is cheap, survives proxies and reconnects by itself, and reuses
//! the same server functions that render the page.

use leptos::prelude::*;
use std::time::Duration;

/// How often the panel refreshes itself.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(1);

/// Keeps a view fresh: runs `load` every [`REFRESH_PERIOD`] while the calling component is
/// mounted (in the browser only, never two at once) and hands each result to `apply`. Returns a
/// callback that refreshes at once, e.g. after a button's action.
pub fn keep_fresh<T, Fut>(
    load: impl Fn() -> Fut + Clone + Send + Sync + 'static,
    apply: impl Fn(T) + Clone + Send + Sync + 'static,
) -> Callback<()>
where
    T: 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let in_flight = StoredValue::new(false);
    let refresh = move || {
        if in_flight.get_value() {
            return;
        }
        in_flight.set_value(true);
        let (load, apply) = (load.clone(), apply.clone());
        leptos::task::spawn_local(async move {
            apply(load().await);
            in_flight.set_value(false);
        });
    };
    every(REFRESH_PERIOD, refresh.clone());
    Callback::new(move |()| refresh())
}

/// Runs `tick` every `period` while the calling component is mounted (in the browser only).
pub fn every(period: Duration, tick: impl Fn() + Clone + 'static) {
    Effect::new(move |_| {
        let handle = set_interval_with_handle(tick.clone(), period).ok();
        on_cleanup(move || {
            if let Some(handle) = handle {
                handle.clear();
            }
        });
    });
}

/// Posts `{"model": name, "force": force}` to a control endpoint (`/backend/shutdown`,
/// `/backend/load`) and returns the error message of a failed call.
#[cfg(feature = "hydrate")]
pub async fn post_model_action(path: &str, model: &str, force: bool) -> Result<(), String> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        model: &'a str,
        force: bool,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        message: String,
    }
    let request = gloo_net::http::Request::post(path)
        .json(&Body { model, force })
        .map_err(|e| e.to_string())?;
    let response = request
        .send()
        .await
        .map_err(|e| format!("network error: {e}"))?;
    if response.ok() {
        return Ok(());
    }
    let status = response.status();
    Err(match response.json::<Envelope>().await {
        Ok(envelope) => envelope.error.message,
        Err(_) => format!("request failed with HTTP {status}"),
    })
}

/// Server-side rendering never runs the handlers; this keeps the call sites feature-free.
#[cfg(not(feature = "hydrate"))]
pub async fn post_model_action(_path: &str, _model: &str, _force: bool) -> Result<(), String> {
    Err("only available in the browser".to_string())
}

/// The current time in milliseconds since the Unix epoch (the browser's clock once hydrated).
pub fn now_unix_ms() -> u64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now() as u64
    }
    #[cfg(not(feature = "hydrate"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Asks the user to confirm; `true` outside the browser.
pub fn confirm(question: &str) -> bool {
    #[cfg(feature = "hydrate")]
    {
        window().confirm_with_message(question).unwrap_or(false)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = question;
        true
    }
}
