//! Making the server safe to expose: cross-site requests, DNS rebinding, API keys and the
//! sign-in page, redirect targets, body and time limits, security headers.

use crate::helpers::*;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use std::sync::atomic::Ordering;
use std::time::Duration;

const ADMIN_KEY: &str = "admin-key-5b1d0c2e8f";
const READ_KEY: &str = "read-key-93a7e4c1d6";
const FORM: &str = "application/x-www-form-urlencoded";

fn external(name: &str, address: &str) -> String {
    format!("[[models]]\nname = {name:?}\naddress = {address:?}\n")
}

/// An app watching one scripted backend, `llm`, already running.
async fn app_with_backend() -> (TestApp, TestBackend) {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external("llm", &backend.address)).await;
    app.wait_for_lifecycle("llm", "running", Duration::from_secs(10))
        .await;
    (app, backend)
}

async fn app_with_keys() -> (TestApp, TestBackend) {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app_with_keys(
        &external("llm", &backend.address),
        &[ADMIN_KEY],
        &[READ_KEY],
    )
    .await;
    (app, backend)
}

/// `POST path` with a form body and extra headers.
async fn post_form(
    app: &TestApp,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(path))
        .header(CONTENT_TYPE, FORM)
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request sent")
}

// Cross-site requests

#[tokio::test]
async fn a_cross_site_form_post_is_refused_and_the_model_keeps_running() {
    let (app, backend) = app_with_backend().await;
    let response = post_form(
        &app,
        "/backend/shutdown",
        "model=llm&return_to=%2F",
        &[
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    )
    .await;
    let body = expect_error(response, 403).await;
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 0);
    assert_eq!(app.backend("llm").await["lifecycle"], "running");
    app.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_or_fetch_site_alone_is_refused() {
    let (app, backend) = app_with_backend().await;
    let cases: [&[(&str, &str)]; 4] = [
        &[("Origin", "http://evil.example")],
        &[("Origin", "null")],
        &[("Origin", "http://127.0.0.1:1")],
        &[("Sec-Fetch-Site", "same-site")],
    ];
    for headers in cases {
        let response = post_form(&app, "/backend/shutdown", "model=llm", headers).await;
        expect_error(response, 403).await;
    }
    // Server functions and load are guarded the same way.
    let response = post_form(
        &app,
        "/_panel/snapshot",
        "",
        &[("Sec-Fetch-Site", "cross-site")],
    )
    .await;
    expect_error(response, 403).await;
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 0);
    app.stop().await;
}

#[tokio::test]
async fn same_origin_and_header_less_posts_work() {
    let (app, backend) = app_with_backend().await;
    let origin = app.base.clone();
    let response = post_form(
        &app,
        "/backend/shutdown",
        "model=llm",
        &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 1);
    // Under `Referrer-Policy: no-referrer`, browsers send `Origin: null` on same-origin form
    // posts; `Sec-Fetch-Site` is what tells.
    assert_eq!(app.load("llm").await.status(), 200);
    let response = post_form(
        &app,
        "/backend/shutdown",
        "model=llm",
        &[("Origin", "null"), ("Sec-Fetch-Site", "same-origin")],
    )
    .await;
    assert_eq!(response.status(), 200);
    // curl and scripts send neither header.
    assert_eq!(app.load("llm").await.status(), 200);
    assert_eq!(
        app.shutdown(serde_json::json!({"model": "llm"}))
            .await
            .status(),
        200
    );
    // The panel's own server function, posted from its page.
    let response = post_form(
        &app,
        "/_panel/snapshot",
        "page=1",
        &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
    )
    .await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

// DNS rebinding

async fn get_with_host(app: &TestApp, path: &str, host: &str) -> reqwest::Response {
    app.http
        .get(app.url(path))
        .header(HOST, host)
        .send()
        .await
        .expect("request sent")
}

#[tokio::test]
async fn a_foreign_host_is_refused_and_loopback_names_pass() {
    let app = spawn_app("").await;
    let port = app.base.rsplit(':').next().expect("port").to_string();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("192.168.1.5:{port}"),
    ] {
        expect_error(get_with_host(&app, "/version", &host).await, 403).await;
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let response = get_with_host(&app, "/version", &host).await;
        assert_eq!(response.status(), 200, "{host}");
    }
    app.stop().await;
}

#[tokio::test]
async fn allowed_hosts_are_accepted() {
    let app =
        spawn_app("[settings]\nlisten = \"127.0.0.1:0\"\nallowed_hosts = [\"monitor.lan\"]\n")
            .await;
    let response = get_with_host(&app, "/version", "Monitor.LAN:8080").await;
    assert_eq!(response.status(), 200);
    expect_error(get_with_host(&app, "/version", "other.lan").await, 403).await;
    app.stop().await;
}

// API keys

#[tokio::test]
async fn without_a_key_api_requests_get_the_401_envelope() {
    let (app, _backend) = app_with_keys().await;
    let response = app.get("/api/backends").await;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let body = expect_error(response, 401).await;
    assert_eq!(body["error"]["type"], "authentication_error");
    expect_error(app.monitor("llm").await, 401).await;
    let wrong = app
        .http
        .get(app.url("/api/backends"))
        .bearer_auth("not-a-key")
        .send()
        .await
        .expect("sent");
    let body = expect_error(wrong, 401).await;
    assert_eq!(body["error"]["type"], "authentication_error");
    let wrong = app
        .http
        .get(app.url("/api/backends"))
        .header("x-api-key", "not-a-key")
        .send()
        .await
        .expect("sent");
    expect_error(wrong, 401).await;
    // A server function is an API request too.
    expect_error(post_form(&app, "/_panel/snapshot", "", &[]).await, 401).await;
    app.stop().await;
}

#[tokio::test]
async fn a_read_key_can_monitor_but_not_shut_down_or_start() {
    let (app, backend) = app_with_keys().await;
    let monitor = app
        .http
        .get(app.url("/backend/monitor?model=llm"))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .expect("sent");
    assert_eq!(monitor.status(), 200);
    for path in ["/backend/shutdown", "/v1/backend/shutdown", "/backend/load"] {
        let response = app
            .http
            .post(app.url(path))
            .bearer_auth(READ_KEY)
            .json(&serde_json::json!({"model": "llm"}))
            .send()
            .await
            .expect("sent");
        let body = expect_error(response, 403).await;
        assert_eq!(body["error"]["type"], "permission_error", "{path}");
    }
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 0);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_key_can_shut_down_with_either_header() {
    let (app, backend) = app_with_keys().await;
    let response = app
        .http
        .post(app.url("/backend/shutdown"))
        .header("x-api-key", ADMIN_KEY)
        .json(&serde_json::json!({"model": "llm"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 1);
    let response = app
        .http
        .post(app.url("/backend/load"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"model": "llm"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn healthz_and_static_assets_need_no_key() {
    let (app, _backend) = app_with_keys().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    // The tests serve `public/` as the site: its favicon is there, the bundle is not, and
    // neither answer asks for a key.
    assert_eq!(app.get("/favicon.svg").await.status(), 200);
    assert_eq!(app.get("/pkg/backend-monitor.css").await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn a_browser_without_a_session_is_sent_to_sign_in() {
    let (app, _backend) = app_with_keys().await;
    let http = client_without_redirects();
    let response = http
        .get(app.url("/models/llm"))
        .header("Accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()[LOCATION],
        "/sign-in?return_to=%2Fmodels%2Fllm"
    );
    let page = http
        .get(app.url("/sign-in?return_to=%2Fmodels%2Fllm"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("text");
    assert!(
        html.contains(r#"<form method="post" action="/sign-in">"#),
        "{html}"
    );
    assert!(html.contains(r#"value="/models/llm""#), "{html}");
    app.stop().await;
}

/// Signs in with `key` and returns the `name=value` of the session cookie and the whole header.
async fn sign_in(app: &TestApp, key: &str, return_to: &str) -> (String, String) {
    let http = client_without_redirects();
    let body = serde_urlencoded::to_string([("key", key), ("return_to", return_to)])
        .expect("form encodes");
    let response = http
        .post(app.url("/sign-in"))
        .header(CONTENT_TYPE, FORM)
        .header(ORIGIN, app.base.as_str())
        .header("Sec-Fetch-Site", "same-origin")
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], return_to);
    let set_cookie = response.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_string();
    let pair = set_cookie
        .split(';')
        .next()
        .expect("name=value")
        .trim()
        .to_string();
    (pair, set_cookie)
}

#[tokio::test]
async fn sign_in_sets_an_http_only_strict_cookie_that_then_works() {
    let (app, backend) = app_with_keys().await;
    let (cookie, header) = sign_in(&app, READ_KEY, "/models/llm").await;
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Strict"), "{header}");
    assert!(header.contains("Path=/"), "{header}");
    assert!(
        !header.contains(READ_KEY),
        "the cookie must not carry the key"
    );

    let with_cookie = |method: Method, path: &str| {
        app.http
            .request(method, app.url(path))
            .header(COOKIE, cookie.as_str())
    };
    let response = with_cookie(Method::GET, "/api/backends")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    // A read session sees the panel but may not shut down.
    let response = with_cookie(Method::POST, "/backend/shutdown")
        .header(CONTENT_TYPE, FORM)
        .body("model=llm&return_to=%2F")
        .send()
        .await
        .expect("sent");
    expect_error(response, 403).await;
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 0);

    // An admin session may.
    let (admin_cookie, _) = sign_in(&app, ADMIN_KEY, "/").await;
    let response = app
        .http
        .post(app.url("/backend/shutdown"))
        .header(COOKIE, admin_cookie.as_str())
        .json(&serde_json::json!({"model": "llm"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    // A made-up session is no session.
    let response = app
        .http
        .get(app.url("/api/backends"))
        .header(COOKIE, "backend_monitor_session=00ff")
        .send()
        .await
        .expect("sent");
    expect_error(response, 401).await;
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_key_on_the_sign_in_page_sets_no_cookie() {
    let (app, _backend) = app_with_keys().await;
    let response = post_form(&app, "/sign-in", "key=nope&return_to=%2F", &[]).await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().get(SET_COOKIE).is_none());
    // And a cross-site sign-in (login CSRF) is refused like any other cross-site post.
    let response = post_form(
        &app,
        "/sign-in",
        &format!("key={ADMIN_KEY}"),
        &[("Sec-Fetch-Site", "cross-site")],
    )
    .await;
    expect_error(response, 403).await;
    app.stop().await;
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let (app, _backend) = app_with_keys().await;
    let (cookie, _) = sign_in(&app, ADMIN_KEY, "/").await;
    let response = client_without_redirects()
        .post(app.url("/sign-out"))
        .header(COOKIE, cookie.as_str())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 303);
    let response = app
        .http
        .get(app.url("/api/backends"))
        .header(COOKIE, cookie.as_str())
        .send()
        .await
        .expect("sent");
    expect_error(response, 401).await;
    app.stop().await;
}

// Redirects

#[tokio::test]
async fn return_to_must_be_a_page_of_the_panel() {
    let (app, backend) = app_with_backend().await;
    for bad in [
        "/\t/evil.example",
        "//evil",
        "/\\evil",
        "https://x",
        "/models/../../x",
        "/%0a",
        "/?page=2&x=//evil",
        "/?page=-1",
        "/models/llm?page=2",
        "/?next=//evil",
    ] {
        let body = serde_urlencoded::to_string([("model", "llm"), ("return_to", bad)])
            .expect("form encodes");
        let response = post_form(&app, "/backend/shutdown", &body, &[]).await;
        expect_error(response, 400).await;
    }
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 0);
    let response = client_without_redirects()
        .post(app.url("/backend/shutdown"))
        .header(CONTENT_TYPE, FORM)
        .body("model=llm&return_to=%2Fmodels%2Fllm")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 303);
    let location = response.headers()[LOCATION].to_str().expect("ascii");
    assert!(location.starts_with("/models/llm?notice="), "{location}");
    app.stop().await;
}

// Limits

#[tokio::test]
async fn an_oversize_body_gets_413_on_the_api_and_on_server_functions() {
    let (app, _backend) = app_with_backend().await;
    let padding = "x".repeat(100 * 1024);
    let json = format!(r#"{{"model": "llm", "padding": "{padding}"}}"#);
    let response = app
        .send(
            Method::POST,
            "/backend/monitor",
            Some("application/json"),
            &json,
        )
        .await;
    let body = expect_error(response, 413).await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let response = post_form(&app, "/_panel/snapshot", &format!("x={padding}"), &[]).await;
    expect_error(response, 413).await;
    // Under the limit still works.
    let response = app
        .send(
            Method::POST,
            "/backend/monitor",
            Some("application/json"),
            r#"{"model": "llm"}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_read_only_request_past_the_deadline_gets_503() {
    let backend = spawn_backend(Behaviour {
        status_latency: Duration::from_secs(3),
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nstatus_timeout = \"10s\"\nrequest_timeout = \"300ms\"\n{}",
        external("slow", &backend.address)
    ))
    .await;
    let body = expect_error(app.monitor("slow").await, 503).await;
    assert_eq!(body["error"]["type"], "timeout");
    app.stop().await;
}

// Headers

fn assert_security_headers(response: &reqwest::Response) -> String {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("x-frame-options"), "DENY");
    let csp = header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("'wasm-unsafe-eval'"), "{csp}");
    let scripts = csp
        .split(';')
        .find(|d| d.trim().starts_with("script-src "))
        .unwrap_or_default();
    assert!(
        !scripts.contains("'unsafe-inline'") && !scripts.contains("'unsafe-eval'"),
        "{csp}"
    );
    csp
}

#[tokio::test]
async fn security_headers_are_on_pages_api_answers_and_errors() {
    let (app, _backend) = app_with_backend().await;
    assert_security_headers(&app.get("/version").await);
    assert_security_headers(&app.get("/api/nothing-here").await);
    assert_security_headers(&get_with_host(&app, "/version", "evil.example").await);
    let page = app.get("/").await;
    assert_eq!(page.status(), 200);
    let csp = assert_security_headers(&page);
    let nonce = csp
        .split(';')
        .find_map(|d| d.trim().strip_prefix("script-src "))
        .and_then(|sources| {
            sources
                .split_whitespace()
                .find_map(|s| s.strip_prefix("'nonce-")?.strip_suffix('\''))
        })
        .expect("script-src has a nonce")
        .to_string();
    assert!(nonce.len() >= 16, "{nonce}");
    let html = page.text().await.expect("html");
    assert!(
        html.contains(&format!(r#"<script type="module" nonce="{nonce}">"#)),
        "the hydration script carries the header's nonce: {html}"
    );
    // A fresh nonce for every response.
    let again = assert_security_headers(&app.get("/").await);
    assert_ne!(csp, again);
    app.stop().await;
}

/// The opening tag of the button labelled `label` in `html`.
fn button_tag<'a>(html: &'a str, label: &str) -> &'a str {
    let at = html
        .find(&format!(r#"aria-label="{label}""#))
        .unwrap_or_else(|| panic!("no button {label:?} in {html}"));
    let start = html[..at].rfind("<button").expect("button start");
    let end = at + html[at..].find('>').expect("button end");
    &html[start..=end]
}

#[tokio::test]
async fn a_read_session_sees_the_panel_with_its_controls_disabled() {
    let (app, _backend) = app_with_keys().await;
    app.wait_for_lifecycle_with_key("llm", "running", ADMIN_KEY)
        .await;
    let page = |cookie: String| {
        let app = &app;
        async move {
            let response = app
                .http
                .get(app.url("/"))
                .header(COOKIE, cookie)
                .header("Accept", "text/html")
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 200);
            response.text().await.expect("html")
        }
    };
    let (read, _) = sign_in(&app, READ_KEY, "/").await;
    let html = page(read).await;
    let tag = button_tag(&html, "Shut down llm");
    assert!(tag.contains(" disabled"), "{tag}");
    let (admin, _) = sign_in(&app, ADMIN_KEY, "/").await;
    let html = page(admin).await;
    let tag = button_tag(&html, "Shut down llm");
    assert!(!tag.contains(" disabled"), "{tag}");
    app.stop().await;
}

#[tokio::test]
async fn listening_beyond_loopback_without_keys_logs_a_warning() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(SERVER_BINARY)
        .args(["--addr", "0.0.0.0:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let warned = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("WITHOUT API KEYS") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let _ = child.kill().await;
    assert!(warned, "no warning about listening without keys");
}
