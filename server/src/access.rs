//! Who may do what: the one guard every request passes, the API key store, the panel's sessions
//! and its sign-in page.
//!
//! The guard ([`guard`]) checks, in order:
//! 1. **`Host`** (DNS rebinding): loopback names (`localhost`, `*.localhost`) and loopback
//!    addresses always pass; names in `allowed_hosts` pass (`*` passes everything). When the
//!    server listens on a non-loopback address, address literals that it listens on pass too
//!    (any address when it listens on `0.0.0.0`/`::`): a rebinding attack needs a DNS *name*, so
//!    an address literal cannot be one, and LAN users can reach `http://192.168.1.5:8080` at
//!    once. LAN *names* (`http://gpu-box.lan:8080`) must be listed. Anything else: 403.
//! 2. **Cross-site requests**: a request with a method that may change state (anything but
//!    GET, HEAD, OPTIONS) is refused (403) when the browser says it is not same-origin
//!    (`Sec-Fetch-Site` other than `same-origin` or `none`), or, from a browser too old to send
//!    `Sec-Fetch-Site`, when its `Origin` is not this server.
//!    Requests without those headers (curl, scripts) are not browser requests and pass.
//! 3. **API keys**, when any is configured: every route except static assets, `/healthz` and the
//!    sign-in page needs `Authorization: Bearer <key>`, `x-api-key: <key>` or a session cookie
//!    from the sign-in page. Without one, browsers asking for a panel page are sent to
//!    `/sign-in`; everything else gets 401. Read keys may not shut down or start models (403);
//!    they may scrape `/metrics` (Prometheus sends `Authorization: Bearer <key>`).
//! 4. **Body size**: every body is read here, up to `max_body_bytes` (413 beyond).
//! 5. **Deadline**: every route but shutdown and load must answer within `request_timeout`
//!    (503 otherwise); those two legitimately wait for backends for minutes.

use crate::config::Settings;
use crate::error::ApiError;
use crate::html::{escape, page};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, RawQuery, Request, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Limited};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The sign-in page's path.
pub const SIGN_IN: &str = "/sign-in";
/// Where a signed-in browser posts to end its session.
pub const SIGN_OUT: &str = "/sign-out";
/// Name of the session cookie set by the sign-in page.
pub const SESSION_COOKIE: &str = "backend_monitor_session";
/// How long a panel session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the ones closest to expiry make room for new ones.
const MAX_SESSIONS: usize = 1024;

/// What a key or session may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// View the panel and the JSON views, monitor.
    Read,
    /// Also shut down and start models.
    Admin,
}

/// Leptos context: tells the panel's server functions what the request's key or session may do
/// (the guard put its [`Role`] on the request).
pub fn provide_permissions() {
    let role = leptos::prelude::use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Role>().copied());
    leptos::prelude::provide_context(app::snapshot::Permissions {
        can_control: role == Some(Role::Admin),
    });
}

/// What a path is, as far as the guard is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteClass {
    /// Static assets, `/healthz`, the sign-in page: no key needed.
    Open,
    /// Shut down and load: admin keys only, no deadline.
    Control,
    /// The JSON API and the panel's server functions: 401 without a key.
    Api,
    /// Panel pages: browsers without a key are sent to sign in.
    Page,
}

impl RouteClass {
    fn of(path: &str) -> Self {
        const CONTROL: [&str; 4] = [
            "/backend/shutdown",
            "/v1/backend/shutdown",
            "/backend/load",
            "/v1/backend/load",
        ];
        const API_PREFIXES: [&str; 4] = ["/api/", "/backend/", "/v1/", "/_panel/"];
        if CONTROL.contains(&path) {
            RouteClass::Control
        } else if path.starts_with("/pkg/")
            || ["/favicon.svg", "/healthz", SIGN_IN, SIGN_OUT].contains(&path)
        {
            RouteClass::Open
        } else if API_PREFIXES.iter().any(|p| path.starts_with(p))
            || ["/system", "/version", "/metrics"].contains(&path)
        {
            RouteClass::Api
        } else {
            RouteClass::Page
        }
    }
}

/// Which `Host` values are accepted (see the module documentation).
struct HostPolicy {
    any: bool,
    names: Vec<String>,
    listen: IpAddr,
}

impl HostPolicy {
    fn allows(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let Some(host) = host_name(authority) else {
            return false;
        };
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            if ip.is_loopback() {
                return true;
            }
            if !self.listen.is_loopback() && (self.listen.is_unspecified() || self.listen == ip) {
                return true;
            }
        }
        self.names.contains(&host)
    }
}

/// The host part of a `Host` value or `allowed_hosts` entry: lower case, without port,
/// brackets or trailing dot. `None` when it is not a plausible host.
fn host_name(authority: &str) -> Option<String> {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':')?.parse::<u16>().is_ok()) {
            return None;
        }
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        inner
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => {
                port.parse::<u16>().ok()?;
                host
            }
            None => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let plausible = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    plausible.then(|| host.to_ascii_lowercase())
}

/// True for `*`, a host name or an address (IPv6 optionally in brackets) without port.
pub fn is_valid_host_pattern(entry: &str) -> bool {
    entry == "*"
        || entry.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
        || (!entry.is_empty()
            && entry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
}

/// A signed-in browser.
struct Session {
    role: Role,
    expires: Instant,
}

/// The keys, sessions and limits the guard enforces; built once at start-up.
pub struct Access {
    /// SHA-256 of each key with its role: compared in constant time, and fixed-length, so the
    /// comparison says nothing about a key's length either.
    keys: Vec<([u8; 32], Role)>,
    /// Sessions by SHA-256 of their token; the browser holds the token, never a key.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    hosts: HostPolicy,
    max_body_bytes: usize,
    request_timeout: Duration,
}

impl Access {
    /// Builds the guard's state from the settings and the address actually bound.
    pub fn new(settings: &Settings, local: SocketAddr) -> Self {
        let keys = settings
            .api_keys
            .admin
            .iter()
            .map(|k| (digest(k.expose()), Role::Admin))
            .chain(
                settings
                    .api_keys
                    .read
                    .iter()
                    .map(|k| (digest(k.expose()), Role::Read)),
            )
            .collect();
        let names = settings
            .allowed_hosts
            .iter()
            .filter_map(|h| host_name(h.trim_matches(['[', ']'])))
            .collect();
        Self {
            keys,
            sessions: Mutex::new(HashMap::new()),
            hosts: HostPolicy {
                any: settings.allowed_hosts.iter().any(|h| h == "*"),
                names,
                listen: local.ip(),
            },
            max_body_bytes: settings.max_body_bytes,
            request_timeout: settings.request_timeout,
        }
    }

    /// Logs loudly when the configuration leaves the server open to its network.
    pub fn warn_if_exposed(&self, local: SocketAddr) {
        if !local.ip().is_loopback() && self.keys.is_empty() {
            tracing::warn!(
                "LISTENING ON {local} WITHOUT API KEYS: anyone who can reach this address can shut down and start your models. Set admin keys with --api-keys or API_KEY (and read-only keys with --read-api-keys), or listen on 127.0.0.1."
            );
        }
        if self.hosts.any {
            tracing::warn!(
                "allowed_hosts contains \"*\": any Host is accepted, so DNS rebinding is only stopped if a proxy in front checks Host"
            );
        }
    }

    /// True when API keys are configured.
    pub fn requires_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The role of a key, comparing against every key in constant time.
    fn role_of_key(&self, key: &str) -> Option<Role> {
        let presented = digest(key);
        let mut found = None;
        for (known, role) in &self.keys {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(*role);
            }
        }
        found
    }

    /// The role of a live session.
    fn role_of_session(&self, token: &str) -> Option<Role> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(&digest(token))
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.role)
    }

    /// Starts a session and returns its token (64 hex digits, 256 random bits).
    fn open_session(&self, role: Role) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest(&token),
            Session {
                role,
                expires: now + SESSION_LIFETIME,
            },
        );
        token
    }

    fn close_session(&self, token: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(&digest(token));
    }

    /// The role the request's key or session grants; `Ok(None)` when it carries neither.
    /// A key in a header that is wrong is an error, not "no key": the caller meant to use it.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Role>, ApiError> {
        let invalid = || ApiError::Unauthorized("invalid API key".into());
        if let Some(value) = headers.get(AUTHORIZATION) {
            let value = value.to_str().map_err(|_| invalid())?;
            let key = match value.trim().split_once(' ') {
                Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
                _ => {
                    return Err(ApiError::Unauthorized(
                        "the Authorization header must be `Bearer <key>`".into(),
                    ));
                }
            };
            return self.role_of_key(key).map(Some).ok_or_else(invalid);
        }
        if let Some(value) = headers.get("x-api-key") {
            let key = value.to_str().map_err(|_| invalid())?.trim();
            return self.role_of_key(key).map(Some).ok_or_else(invalid);
        }
        Ok(cookie(headers, SESSION_COOKIE).and_then(|token| self.role_of_session(token)))
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The value of a cookie, from any `Cookie` header.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The authority the client addressed: `Host`, or the URI's (HTTP/2).
fn request_host(request: &Request) -> Option<String> {
    match request.headers().get(HOST) {
        Some(value) => value.to_str().ok().map(str::to_owned),
        None => request.uri().authority().map(|a| a.as_str().to_owned()),
    }
}

/// Refuses browser requests from other sites (see the module documentation).
///
/// `Sec-Fetch-Site` decides when present: browsers set it and pages cannot forge it. Only
/// without it (older browsers) does `Origin` decide; it cannot decide first, because under our
/// own `Referrer-Policy: no-referrer` browsers send `Origin: null` even on same-origin form posts.
fn check_same_origin(headers: &HeaderMap, host: &str) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return if matches!(site.as_bytes(), b"same-origin" | b"none") {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "cross-site requests may not change anything here (Sec-Fetch-Site is not same-origin)"
                    .into(),
            ))
        };
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .is_some_and(|origin| origin_is_host(origin, host));
        if !same {
            return Err(ApiError::Forbidden(
                "cross-site requests may not change anything here (Origin is not this server)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Whether `scheme://authority` names the same authority as `Host` (default ports ignored).
/// `Origin: null` (sandboxed or opaque origins) never matches.
fn origin_is_host(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let normalize = |a: &str| {
        let a = a.trim().to_ascii_lowercase();
        match a.strip_suffix(default_port) {
            Some(stripped) => stripped.to_string(),
            None => a,
        }
    };
    normalize(authority) == normalize(host)
}

/// True for where a panel form may send the browser back to: a panel page (see
/// [`is_panel_path`]), or a page of the panel's table, `/?page=N`.
pub fn is_panel_return(path: &str) -> bool {
    match path.split_once('?') {
        None => is_panel_path(path),
        Some((path, query)) => {
            path == "/"
                && query.strip_prefix("page=").is_some_and(|n| {
                    (1..=9).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit())
                })
        }
    }
}

/// True for the panel's own pages: `/` and `/models/<percent-encoded name>`, made only of
/// unreserved characters and `%XX` escapes. Everything a browser could read as another site
/// (`//`, `\`, tabs and other control characters, a scheme) is refused.
pub fn is_panel_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    let Some(name) = path.strip_prefix("/models/") else {
        return false;
    };
    if name.is_empty() || name == "." || name == ".." {
        return false;
    }
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escape = bytes.get(i + 1..i + 3);
                if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => i += 1,
            _ => return false,
        }
    }
    true
}

/// The middleware applied to every route in `startup::router` (see the module documentation).
pub async fn guard(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let host = request_host(&request)
        .ok_or_else(|| ApiError::Forbidden("the request has no Host header".into()))?;
    if !access.hosts.allows(&host) {
        return Err(ApiError::Forbidden(format!(
            "Host {host:?} is not allowed: use localhost, or add the name to `allowed_hosts`"
        )));
    }
    if !request.method().is_safe() {
        check_same_origin(request.headers(), &host)?;
    }
    let class = RouteClass::of(request.uri().path());
    if access.requires_keys() && class != RouteClass::Open {
        let role = match access.authenticate(request.headers())? {
            Some(role) => role,
            None if class == RouteClass::Page && wants_html(request.headers()) => {
                return Ok(Redirect::to(&sign_in_location(request.uri().path())).into_response());
            }
            None => {
                return Err(ApiError::Unauthorized(
                    "an API key is required: send `Authorization: Bearer <key>` or `x-api-key: <key>`"
                        .into(),
                ));
            }
        };
        if class == RouteClass::Control && role != Role::Admin {
            return Err(ApiError::Forbidden(
                "this key is read-only: it may view and monitor, not shut down or start models"
                    .into(),
            ));
        }
        request.extensions_mut().insert(role);
    } else {
        request.extensions_mut().insert(Role::Admin);
    }
    let deadline = access.request_timeout;
    let request = tokio::time::timeout(deadline, read_body(request, access.max_body_bytes))
        .await
        .map_err(|_| ApiError::Timeout(deadline))??;
    if class == RouteClass::Control {
        Ok(next.run(request).await)
    } else {
        tokio::time::timeout(deadline, next.run(request))
            .await
            .map_err(|_| ApiError::Timeout(deadline))
    }
}

/// An oversized body up to this size is read to its end (and dropped) before the 413 is sent:
/// a client still sending would otherwise see its connection reset instead of the answer. A
/// larger one is cut short and its connection closed.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// How long reading an oversized body to its end may take.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads the whole body, refusing more than `limit` bytes, so that no handler (server
/// functions included) ever sees a larger one.
async fn read_body(request: Request, limit: usize) -> Result<Request, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("the request body exceeds {limit} bytes"));
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (parts, mut body) = request.into_parts();
    if declared.is_some_and(|length| length > limit as u64) {
        drain(body).await;
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                drain(body).await;
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Reads and drops what is left of a body, up to [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`].
async fn drain(body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIME, Limited::new(body, DRAIN_LIMIT).collect()).await;
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

fn sign_in_location(path: &str) -> String {
    if path == "/" || !is_panel_path(path) {
        return SIGN_IN.to_string();
    }
    let query = serde_urlencoded::to_string([("return_to", path)]).unwrap_or_default();
    format!("{SIGN_IN}?{query}")
}

/// The sign-in page and sign-out; merged into the app router in `startup.rs`.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Access>: FromRef<S>,
{
    Router::new()
        .route(SIGN_IN, get(sign_in_page).post(sign_in))
        .route(SIGN_OUT, post(sign_out))
}

/// One field of a form or query string.
fn form_field(input: &[u8], name: &str) -> Result<Option<String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(input)
        .map_err(|e| ApiError::BadRequest(format!("malformed form: {e}")))?;
    Ok(pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
}

async fn sign_in_page(
    State(access): State<Arc<Access>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if !access.requires_keys() {
        return Ok(Redirect::to("/").into_response());
    }
    let return_to = form_field(query.unwrap_or_default().as_bytes(), "return_to")?
        .filter(|p| is_panel_path(p))
        .unwrap_or_else(|| "/".into());
    Ok(sign_in_form(StatusCode::OK, None, &return_to))
}

async fn sign_in(
    State(access): State<Arc<Access>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !access.requires_keys() {
        return Ok(Redirect::to("/").into_response());
    }
    let body = body.map_err(|e| ApiError::BadRequest(format!("cannot read the form: {e}")))?;
    let return_to = form_field(&body, "return_to")?
        .filter(|p| is_panel_path(p))
        .unwrap_or_else(|| "/".into());
    let role = form_field(&body, "key")?.and_then(|key| access.role_of_key(key.trim()));
    let Some(role) = role else {
        return Ok(sign_in_form(
            StatusCode::UNAUTHORIZED,
            Some("That key is not valid."),
            &return_to,
        ));
    };
    let token = access.open_session(role);
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    );
    Ok(([(SET_COOKIE, cookie)], Redirect::to(&return_to)).into_response())
}

async fn sign_out(State(access): State<Arc<Access>>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        access.close_session(token);
    }
    let expired = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(SET_COOKIE, expired)], Redirect::to(SIGN_IN)).into_response()
}

/// A plain server-rendered form: works without JavaScript and runs no script at all.
fn sign_in_form(status: StatusCode, error: Option<&str>, return_to: &str) -> Response {
    let error = error
        .map(|e| format!(r#"<p class="banner error" role="alert">{}</p>"#, escape(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<h1>Sign in</h1>
<p>This backend-monitor needs an API key. Read keys can watch; admin keys can also shut down and start models.</p>
{error}
<form method="post" action="{SIGN_IN}">
<input type="hidden" name="return_to" value="{return_to}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit" class="primary">Sign in</button>
</form>"#,
        return_to = escape(return_to),
    );
    (status, Html(page("Sign in", "sign-in", &body))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_paths_are_only_the_panels_own_pages() {
        for good in [
            "/",
            "/models/demo-chat",
            "/models/a%20b%2Fc",
            "/models/%C3%A9",
        ] {
            assert!(is_panel_path(good), "{good}");
            assert!(is_panel_return(good), "{good}");
        }
        for bad in [
            "",
            "//evil.example",
            "/\t/evil.example",
            "/\\evil.example",
            "https://evil.example",
            "/models/",
            "/models/..",
            "/models/a/b",
            "/models/a%2",
            "/models/a%zz",
            "/models/a?x",
            "/other",
            "/models/a\nb",
        ] {
            assert!(!is_panel_return(bad), "{bad:?}");
            assert!(!is_panel_path(bad), "{bad:?}");
        }
        // A page of the table is somewhere to return to, not a page route of its own.
        assert!(is_panel_return("/?page=12") && !is_panel_path("/?page=12"));
        for bad in [
            "/?page=",
            "/?page=1x",
            "/?page=1&page=2",
            "/?page=1234567890",
        ] {
            assert!(!is_panel_return(bad), "{bad:?}");
        }
    }

    #[test]
    fn host_names_lose_port_brackets_and_case() {
        assert_eq!(host_name("LocalHost:8080").as_deref(), Some("localhost"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_name("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host_name("a b"), None);
        assert_eq!(host_name("x:notaport"), None);
        assert_eq!(host_name("[zz]:1"), None);
    }

    #[test]
    fn hosts_follow_the_listen_address() {
        let policy = |listen: [u8; 4], names: &[&str]| HostPolicy {
            any: false,
            names: names.iter().map(|n| n.to_string()).collect(),
            listen: IpAddr::from(listen),
        };
        let local = policy([127, 0, 0, 1], &[]);
        assert!(
            local.allows("localhost:1") && local.allows("127.0.0.2") && local.allows("[::1]:9")
        );
        assert!(!local.allows("evil.example") && !local.allows("192.168.1.5:80"));
        let lan = policy([0, 0, 0, 0], &["gpu-box.lan"]);
        assert!(lan.allows("192.168.1.5:8080") && lan.allows("GPU-box.lan:8080"));
        assert!(!lan.allows("evil.example:8080"));
        let one = policy([192, 168, 1, 5], &[]);
        assert!(one.allows("192.168.1.5") && !one.allows("10.0.0.1"));
    }

    #[test]
    fn origins_match_the_host_ignoring_default_ports() {
        assert!(origin_is_host("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(origin_is_host("http://example.com", "example.com:80"));
        assert!(!origin_is_host("http://evil.example", "127.0.0.1:8080"));
        assert!(!origin_is_host("null", "127.0.0.1:8080"));
        assert!(!origin_is_host("http://127.0.0.1:9999", "127.0.0.1:8080"));
    }
}
