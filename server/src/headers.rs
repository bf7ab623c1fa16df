//! Security headers on every response, and the per-request nonce that lets Leptos' inline
//! hydration script run under the Content-Security-Policy.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use leptos::nonce::Nonce;
use leptos::prelude::{provide_context, use_context};

/// The policy for a response whose inline scripts carry `nonce`.
///
/// Scripts: this server's files and the one inline script with the nonce; `'wasm-unsafe-eval'`
/// lets the page compile its WebAssembly module. Style attributes are allowed (the memory bars
/// set their widths with them; an attribute cannot run code), style sheets only from here.
/// Nothing may frame the panel, and forms only post here.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self'; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Middleware: draws a nonce for the request (read by [`provide_request_nonce`] while the
/// page renders) and adds the security headers to the response, whatever produced it.
pub async fn security_headers(mut request: Request, next: Next) -> Response {
    let nonce = Nonce::new();
    request.extensions_mut().insert(nonce.clone());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(&nonce)) {
        headers.insert(CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Leptos context: makes the request's nonce the one `HydrationScripts` and resource scripts
/// use, so it matches the policy header (leptos_axum would otherwise draw its own).
pub fn provide_request_nonce() {
    if let Some(nonce) = use_context::<Parts>().and_then(|p| p.extensions.get::<Nonce>().cloned()) {
        provide_context(nonce);
    }
}
