//! Hardening: random and malformed requests (property tests, in-process and over real HTTP
//! against a server with a running demo model), and a burst of 1,000 concurrent connections
//! against the real binary with its memory measured before and after.
//!
//! The HTTP properties compare every answer with what [`parse_model_request`] (the parser the
//! handlers use) says about the same bytes, and the pure properties check that parser against
//! independent expectations, so neither side can drift: a request that does not parse is a 400
//! in the envelope, a valid one naming an unknown model a 500 `model_not_found` (LocalAI's
//! contract), and nothing sent may stop, start or restart a model.

use crate::helpers::*;
use axum::response::IntoResponse;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use server::api::{ModelRequest, parse_model_request};
use server::error::ApiError;
use std::time::{Duration, Instant};

/// The running model every HTTP property checks is left alone.
const DEMO: &str = "demo";
/// The server's default `max_body_bytes`.
const BODY_LIMIT: usize = 64 * 1024;

/// A runner that runs `cases` cases, keeps no regression files in the source tree, and
/// shrinks a failure for at most a few seconds (each HTTP case is a real request).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 500,
        max_shrink_time: 10_000,
        ..Config::default()
    })
}

/// Runs `test` on `cases` values of `strategy`; panics with the minimal failing input.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(failure) = runner(cases).run(&strategy, test) {
        panic!("{failure}");
    }
}

// ---- Inputs -----------------------------------------------------------------------------

/// Model names: any unicode (controls, NUL, RTL marks, emoji), blank ones, URL and JSON
/// metacharacters, long ones, and now and then the running model's own name.
fn model_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "\\PC{1,40}",
        1 => "[ \t\n\r\u{a0}\u{2003}\u{3000}]{0,6}",
        1 => "[\\x00-\\x1f\"\\\\/%&=+?#;\u{202e}\u{fffd}]{1,12}",
        1 => "[a-z]{200,600}",
        1 => Just(DEMO.to_string()),
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        model_name().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON value that is neither a string nor null: a wrong type for `model`.
fn wrong_type() -> impl Strategy<Value = Value> {
    json_value().prop_filter("not a string or null", |v| !(v.is_string() || v.is_null()))
}

/// A JSON object with any, none or wrongly typed `model`, `force` and `return_to` fields,
/// among others.
fn json_object() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            3 => model_name().prop_map(Value::from),
            1 => json_value(),
        ]),
        prop::option::of(prop_oneof![
            any::<bool>().prop_map(Value::from),
            json_value()
        ]),
        prop::option::of(prop_oneof![
            Just(Value::from("/")),
            Just(Value::from("//evil.example")),
            json_value(),
        ]),
        prop::collection::btree_map("\\PC{0,8}", json_value(), 0..4),
    )
        .prop_map(|(model, force, return_to, extra)| {
            let mut object: serde_json::Map<String, Value> = extra.into_iter().collect();
            for (key, value) in [("model", model), ("force", force), ("return_to", return_to)] {
                if let Some(value) = value {
                    object.insert(key.to_string(), value);
                }
            }
            Value::Object(object)
        })
}

/// `key=value` pairs as a form or query would carry them (encoded), with the interesting keys
/// over-represented and values from every class.
fn form_pairs() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("model".to_string()),
        Just("force".to_string()),
        Just("return_to".to_string()),
        "\\PC{0,6}",
    ];
    let value = prop_oneof![
        model_name(),
        Just("true".to_string()),
        Just("On".to_string()),
        Just("/models/x".to_string()),
        "\\PC{0,10}",
    ];
    prop::collection::vec((key, value), 0..5)
        .prop_map(|pairs| serde_urlencoded::to_string(pairs).expect("pairs encode"))
}

/// Bytes as a careless client might put in a query or form: separators, stray and broken
/// percent escapes, `+`, non-ASCII.
fn raw_pairs() -> impl Strategy<Value = String> {
    "([a-z_]{0,9}|%[0-9a-fA-FgG]{0,2}|[=&;+?#/ ]|\\PC){0,24}"
}

/// A request body: JSON (well-formed or cut short), a form, random bytes or text.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_object().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (json_object(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            let at = cut.index(text.len());
            text[..at].to_vec()
        }),
        2 => form_pairs().prop_map(String::into_bytes),
        1 => raw_pairs().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
        1 => any::<String>().prop_map(String::into_bytes),
        1 => Just(Vec::new()),
    ]
}

/// A `Content-Type` header's bytes (every byte a header may carry, so also non-ASCII), or none.
fn content_type() -> impl Strategy<Value = Option<Vec<u8>>> {
    let header_bytes =
        prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..48)
            .prop_filter("a header value cannot start or end with blanks", |b| {
                b.first().is_none_or(|c| !c.is_ascii_whitespace())
                    && b.last().is_none_or(|c| !c.is_ascii_whitespace())
            });
    prop::option::of(prop_oneof![
        3 => Just(b"application/json".to_vec()),
        1 => Just(b"Application/JSON ; charset=utf-8".to_vec()),
        1 => Just(b"application/vnd.api+json".to_vec()),
        2 => Just(b"application/x-www-form-urlencoded".to_vec()),
        1 => Just(b"text/plain".to_vec()),
        1 => Just(b"multipart/form-data; boundary=x".to_vec()),
        2 => header_bytes,
    ])
}

/// A query string: none, encoded pairs or raw bytes.
fn query() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![form_pairs(), raw_pairs()])
}

/// One request to a model endpoint, as raw parts.
#[derive(Clone, Debug)]
struct Input {
    post: bool,
    query: Option<String>,
    content_type: Option<Vec<u8>>,
    body: Vec<u8>,
}

fn input() -> impl Strategy<Value = Input> {
    (any::<bool>(), query(), content_type(), body()).prop_map(
        |(post, query, content_type, body)| Input {
            post,
            query,
            content_type,
            body,
        },
    )
}

// ---- The parser, in-process (thousands of cases) ----------------------------------------

/// The error must be a 400 in the envelope; nothing a client sends is a server error.
fn assert_bad_request(error: ApiError) -> Result<(), TestCaseError> {
    prop_assert!(matches!(error, ApiError::BadRequest(_)), "{error:?}");
    prop_assert!(!error.to_string().is_empty());
    prop_assert_eq!(error.into_response().status().as_u16(), 400);
    Ok(())
}

/// What a parsed request must look like.
fn assert_well_formed(request: &ModelRequest) -> Result<(), TestCaseError> {
    prop_assert!(!request.model.trim().is_empty(), "{request:?}");
    if let Some(path) = &request.return_to {
        prop_assert!(server::access::is_panel_return(path), "{request:?}");
    }
    Ok(())
}

#[test]
fn the_parser_answers_any_bytes_with_a_request_or_a_400() {
    let any_text = prop::option::of(any::<String>());
    check(
        5000,
        (prop_oneof![query(), any_text.clone()], any_text, body()),
        |(query, content_type, body)| match parse_model_request(
            query.as_deref(),
            content_type.as_deref(),
            &body,
        ) {
            Ok(request) => assert_well_formed(&request),
            Err(error) => assert_bad_request(error),
        },
    );
}

#[test]
fn any_model_name_reaches_the_registry_unchanged_from_json_form_or_query() {
    check(2000, model_name(), |name| {
        let json = json!({ "model": name }).to_string();
        let form = serde_urlencoded::to_string([("model", &name)]).expect("encodes");
        let ways = [
            parse_model_request(None, Some("application/json"), json.as_bytes()),
            parse_model_request(
                None,
                Some("application/x-www-form-urlencoded"),
                form.as_bytes(),
            ),
            parse_model_request(Some(&form), None, b""),
        ];
        for parsed in ways {
            if name.trim().is_empty() {
                assert_bad_request(parsed.expect_err("a blank name is refused"))?;
            } else {
                let request = parsed.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&request.model, &name);
                prop_assert!(!request.force && request.return_to.is_none());
            }
        }
        Ok(())
    });
}

#[test]
fn a_model_or_force_of_the_wrong_json_type_is_a_400() {
    check(2000, (wrong_type(), wrong_type()), |(model, force)| {
        for body in [
            json!({ "model": model }),
            json!({ "model": DEMO, "force": force.clone() }),
        ] {
            if body.get("force").is_some_and(Value::is_boolean) {
                continue;
            }
            let parsed =
                parse_model_request(None, Some("application/json"), body.to_string().as_bytes());
            assert_bad_request(parsed.expect_err("a wrong type is refused"))?;
        }
        Ok(())
    });
}

// ---- Over HTTP, against a real server with a running demo model --------------------------

/// A server with the demo model running, the runtime it runs on, and the model's pid.
struct Live {
    runtime: tokio::runtime::Runtime,
    app: TestApp,
    http: reqwest::Client,
    pid: u64,
}

impl Live {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (app, pid) = runtime.block_on(async {
            let app = spawn_app(&demo_model(DEMO, &[], &["weights_mib:1"])).await;
            let entry = app
                .wait_for_lifecycle(DEMO, "running", Duration::from_secs(20))
                .await;
            let pid = entry["pid"].as_u64().expect("a pid");
            (app, pid)
        });
        Self {
            runtime,
            app,
            // Redirects are answers too (the no-JavaScript forms get a 303).
            http: client_without_redirects(),
            pid,
        }
    }

    /// Sends `input` to `path`; returns the status and the body.
    fn send(&self, path: &str, input: &Input) -> (u16, Vec<u8>, Option<String>) {
        let mut url = reqwest::Url::parse(&self.app.url(path)).expect("url");
        url.set_query(input.query.as_deref());
        let method = if input.post {
            Method::POST
        } else {
            Method::GET
        };
        let mut request = self.http.request(method, url).body(input.body.clone());
        if let Some(ct) = &input.content_type {
            let value = HeaderValue::from_bytes(ct).expect("generated header values are valid");
            request = request.header(CONTENT_TYPE, value);
        }
        self.runtime.block_on(async {
            let response = request.send().await.expect("request sent");
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| l.to_str().expect("ASCII location").to_string());
            let body = response.bytes().await.expect("body read").to_vec();
            (status, body, location)
        })
    }

    /// What the server's parser sees: the query as sent (after URL normalisation) and the
    /// content type as the handler reads it.
    fn parse(&self, input: &Input) -> Result<ModelRequest, ApiError> {
        let mut url = reqwest::Url::parse(&self.app.url("/")).expect("url");
        url.set_query(input.query.as_deref());
        let content_type = input.content_type.as_ref().map(|ct| {
            HeaderValue::from_bytes(ct)
                .ok()
                .and_then(|v| v.to_str().ok().map(str::to_owned))
                .unwrap_or_else(|| "invalid".to_string())
        });
        parse_model_request(url.query(), content_type.as_deref(), &input.body)
    }

    /// The demo model still runs as the same process.
    fn assert_demo_untouched(self) {
        self.runtime.block_on(async {
            let entry = self.app.backend(DEMO).await;
            assert_eq!(entry["lifecycle"], "running", "{entry}");
            assert_eq!(entry["pid"], self.pid, "{entry}");
            assert!(process_exists(self.pid as u32));
            self.app.stop().await;
        });
    }
}

/// The body is LocalAI's error envelope with this code and type.
fn assert_envelope(body: &[u8], code: u16, kind: &str) -> Result<(), TestCaseError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| TestCaseError::fail(format!("error body is not JSON: {e}")))?;
    prop_assert_eq!(&body["error"]["code"], &json!(code), "{}", body);
    prop_assert_eq!(&body["error"]["type"], &json!(kind), "{}", body);
    prop_assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        body
    );
    Ok(())
}

#[test]
fn monitor_answers_random_requests_as_its_parser_says_and_never_with_a_server_fault() {
    let live = Live::start();
    check(400, input(), |input| {
        let path = if input.post {
            "/v1/backend/monitor"
        } else {
            "/backend/monitor"
        };
        let (status, body, _) = live.send(path, &input);
        match live.parse(&input) {
            Err(_) => {
                prop_assert_eq!(status, 400);
                assert_envelope(&body, 400, "invalid_request_error")?;
            }
            Ok(request) if request.model == DEMO => {
                prop_assert_eq!(status, 200);
                let body: Value = serde_json::from_slice(&body).expect("JSON");
                prop_assert_eq!(&body["state"], &json!(2), "{}", body);
            }
            Ok(_) => {
                prop_assert_eq!(status, 500);
                assert_envelope(&body, 500, "model_not_found")?;
            }
        }
        Ok(())
    });
    live.assert_demo_untouched();
}

#[test]
fn random_shutdowns_and_loads_never_touch_a_model() {
    let live = Live::start();
    check(300, (any::<bool>(), input()), |(load, mut input)| {
        input.post = true;
        let parsed = live.parse(&input);
        if parsed.as_ref().is_ok_and(|r| r.model == DEMO) {
            // A valid request for the running model would rightly stop it.
            return Ok(());
        }
        let path = if load {
            "/backend/load"
        } else {
            "/backend/shutdown"
        };
        let (status, body, location) = live.send(path, &input);
        match parsed {
            Err(_) => {
                prop_assert_eq!(status, 400);
                assert_envelope(&body, 400, "invalid_request_error")?;
            }
            // A no-JavaScript form goes back to its page, with the error in the query.
            Ok(ModelRequest {
                return_to: Some(_), ..
            }) => {
                prop_assert_eq!(status, 303);
                let location = location.unwrap_or_default();
                prop_assert!(location.contains("error="), "{}", location);
            }
            Ok(_) => {
                prop_assert_eq!(status, 500);
                assert_envelope(&body, 500, "model_not_found")?;
            }
        }
        Ok(())
    });
    live.assert_demo_untouched();
}

#[test]
fn any_unicode_model_name_gets_the_answer_for_that_name_over_http() {
    let live = Live::start();
    check(200, (model_name(), 0..3usize), |(name, way)| {
        let input = match way {
            0 => Input {
                post: false,
                query: None,
                content_type: Some(b"application/json".to_vec()),
                body: json!({ "model": name }).to_string().into_bytes(),
            },
            1 => Input {
                post: true,
                query: None,
                content_type: Some(b"application/x-www-form-urlencoded".to_vec()),
                body: serde_urlencoded::to_string([("model", &name)])
                    .expect("encodes")
                    .into_bytes(),
            },
            _ => Input {
                post: false,
                query: Some(serde_urlencoded::to_string([("model", &name)]).expect("encodes")),
                content_type: None,
                body: Vec::new(),
            },
        };
        let (status, body, _) = live.send("/backend/monitor", &input);
        if name.trim().is_empty() {
            prop_assert_eq!(status, 400);
            assert_envelope(&body, 400, "invalid_request_error")?;
        } else if name == DEMO {
            prop_assert_eq!(status, 200);
        } else {
            prop_assert_eq!(status, 500);
            assert_envelope(&body, 500, "model_not_found")?;
            // The name comes back intact (JSON-escaped inside the message).
            let body: Value = serde_json::from_slice(&body).expect("JSON");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            prop_assert!(message.contains(&format!("{name:?}")), "{}", message);
        }
        Ok(())
    });
    live.assert_demo_untouched();
}

#[test]
fn bodies_over_the_limit_get_413_in_the_envelope_and_the_limit_itself_passes() {
    let live = Live::start();
    // Exactly the limit, valid JSON for the running model: accepted.
    let prefix = format!("{{\"model\":\"{DEMO}\",\"pad\":\"");
    let fill = BODY_LIMIT - prefix.len() - 2;
    let at_limit = format!("{prefix}{}\"}}", "x".repeat(fill));
    assert_eq!(at_limit.len(), BODY_LIMIT);
    let (status, _, _) = live.send(
        "/backend/monitor",
        &Input {
            post: true,
            query: None,
            content_type: Some(b"application/json".to_vec()),
            body: at_limit.into_bytes(),
        },
    );
    assert_eq!(status, 200, "a body of exactly max_body_bytes is fine");

    let over = (
        BODY_LIMIT + 1..=8 * BODY_LIMIT,
        content_type(),
        any::<bool>(),
        0..3usize,
    );
    check(40, over, |(size, content_type, post, path)| {
        let path = ["/backend/monitor", "/backend/shutdown", "/backend/load"][path];
        // Even a query naming the running model does not let the body through.
        let mut body = format!("{{\"model\":\"{DEMO}\",\"pad\":\"").into_bytes();
        body.resize(size, b'x');
        let input = Input {
            post: post || path != "/backend/monitor",
            query: Some(format!("model={DEMO}")),
            content_type,
            body,
        };
        let (status, body, _) = live.send(path, &input);
        prop_assert_eq!(status, 413);
        assert_envelope(&body, 413, "invalid_request_error")
    });
    live.assert_demo_untouched();
}

// ---- Load: 1,000 concurrent connections against the real binary --------------------------

/// Connections held open at once.
const CONNECTIONS: usize = 1000;

/// Raises this process's soft limit on open files (inherited by the server it starts) so that
/// both ends of [`CONNECTIONS`] sockets fit.
fn raise_open_files_limit(wanted: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return;
    }
    let maximum = limit.maximum.unwrap_or(u64::MAX);
    assert!(
        maximum >= wanted,
        "the hard limit on open files ({maximum}) is below {wanted}"
    );
    let mut raised = limit;
    raised.current = Some(wanted);
    setrlimit(Resource::Nofile, raised).expect("raise RLIMIT_NOFILE");
}

/// The server's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    server::process::read_memory_info(pid)
        .expect("server is running")
        .rss
}

/// How many file descriptors the process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One client's two requests; the error says which failed and how.
async fn monitor_then_list(
    base: &str,
    connected: tokio::sync::mpsc::Sender<()>,
    gate: std::sync::Arc<tokio::sync::RwLock<()>>,
) -> Result<(), String> {
    // Its own client, so its own connection, kept alive between the two requests.
    let http = test_client();
    let response = http
        .get(format!("{base}/backend/monitor?model={DEMO}"))
        .send()
        .await
        .map_err(|e| format!("monitor: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("monitor body: {e}"))?;
    if status != 200 || !(body["state"].is_number() || body["memory_info"].is_object()) {
        return Err(format!("monitor: {status} {body}"));
    }
    // Hold the connection open until every client has one.
    let _ = connected.send(()).await;
    drop(gate.read().await);
    let response = http
        .get(format!("{base}/api/backends"))
        .send()
        .await
        .map_err(|e| format!("backends: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("backends body: {e}"))?;
    if status != 200 || body["backends"][0]["name"] != DEMO {
        return Err(format!("backends: {status} {body}"));
    }
    Ok(())
}

/// What one burst of [`CONNECTIONS`] clients saw.
struct Burst {
    /// Clients that got their first answer and held their connection open.
    held: usize,
    /// The server's open fds while they all held it.
    fds_busy: usize,
    /// Failed requests, with what went wrong.
    failures: Vec<String>,
    /// Whether every client finished within the limit.
    finished: bool,
    elapsed: Duration,
}

/// [`CONNECTIONS`] clients at once, each with its own connection: a `/backend/monitor`, then,
/// once every connection is open, an `/api/backends` on the same connection.
async fn burst(base: &str, pid: u32) -> Burst {
    let started = Instant::now();
    let gate = std::sync::Arc::new(tokio::sync::RwLock::new(()));
    let closed = gate.clone().write_owned().await;
    let (connected, mut arrivals) = tokio::sync::mpsc::channel(CONNECTIONS);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let base = base.to_string();
        let (connected, gate) = (connected.clone(), gate.clone());
        clients.spawn(async move { monitor_then_list(&base, connected, gate).await });
    }
    drop(connected);
    let mut held = 0;
    let _ = tokio::time::timeout(Duration::from_secs(90), async {
        while held < CONNECTIONS && arrivals.recv().await.is_some() {
            held += 1;
        }
    })
    .await;
    let fds_busy = open_fds(pid);
    drop(closed);
    let mut failures = Vec::new();
    let finished = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(result) = clients.join_next().await {
            if let Err(e) = result.expect("client task") {
                failures.push(e);
            }
        }
    })
    .await
    .is_ok();
    Burst {
        held,
        fds_busy,
        failures,
        finished,
        elapsed: started.elapsed(),
    }
}

/// The server's RSS once it settles below `bound` (polled for up to 10 s), then a purge delay later.
async fn settled_rss(pid: u32, bound: u64) -> u64 {
    let settle = Instant::now();
    while rss(pid) > bound && settle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A whole purge delay and a margin, so the free pages are handed back before the reading.
    tokio::time::sleep(server::allocator::PURGE_DELAY + Duration::from_secs(1)).await;
    rss(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connections_all_succeed_and_memory_comes_back() {
    raise_open_files_limit(4 * CONNECTIONS as u64);
    let config = config_file(&format!(
        "[settings]\nhealth_interval = \"100ms\"\nstatus_timeout = \"20s\"\n{}",
        demo_model(DEMO, &[], &["weights_mib:1"])
    ));
    let mut server = start_server(&config).await;
    let pid = server.child.id();
    running_pids(&server).await;

    // Warm up (lazy statics, the gRPC channel, allocator arenas), then settle.
    let http = test_client();
    for _ in 0..50 {
        for path in [
            format!("/backend/monitor?model={DEMO}"),
            "/api/backends".into(),
        ] {
            let response = http
                .get(format!("{}{path}", server.base))
                .send()
                .await
                .expect("warm-up request");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("warm-up body");
        }
    }
    drop(http);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss(pid);
    let fds_idle = open_fds(pid);
    let bound = idle + idle / 2 + 8 * 1024 * 1024;

    // Two bursts: the first shows whether memory comes back, the second whether it leaks
    // (a retaining allocator reuses what it kept; a leak grows again).
    let first = burst(&server.base, pid).await;
    let peak = server::process::read_memory_info(pid)
        .expect("server is running")
        .hwm;
    let after_first = settled_rss(pid, bound).await;
    let second = burst(&server.base, pid).await;
    let after_second = settled_rss(pid, bound).await;
    send_signal(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = server.child.wait();

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "load: {CONNECTIONS} connections x 2 requests, twice, in {:?} and {:?}; server fds {fds_idle} \
         idle, {} and {} while held; RSS idle {:.1} MiB, peak (VmHWM) {:.1} MiB, after the first \
         burst {:.1} MiB ({:+.0}% of idle), after the second {:.1} MiB",
        first.elapsed,
        second.elapsed,
        first.fds_busy,
        second.fds_busy,
        mib(idle),
        mib(peak),
        mib(after_first),
        (after_first as f64 / idle as f64 - 1.0) * 100.0,
        mib(after_second),
    );
    for run in [&first, &second] {
        assert_eq!(
            run.held, CONNECTIONS,
            "clients that got their first answer within 90 s"
        );
        assert!(
            run.fds_busy >= fds_idle + CONNECTIONS,
            "the server held {} fds (idle {fds_idle}): the connections were not concurrent",
            run.fds_busy
        );
        assert!(run.finished, "the clients did not finish within 90 s");
        assert!(
            run.failures.is_empty(),
            "{} of {} requests failed, e.g. {:?}",
            run.failures.len(),
            2 * CONNECTIONS,
            run.failures.first()
        );
    }
    assert!(
        after_second <= after_first + after_first / 10 + 4 * 1024 * 1024,
        "RSS grew again with the second burst (a leak): {after_first} B, then {after_second} B"
    );
    assert!(
        after_first <= bound,
        "RSS did not come back: idle {idle} B, after {after_first} B, bound {bound} B"
    );
}

// ---- The config loader, in-process ---------------------------------------------------------

/// A valid configuration using most keys, for the edits below to break.
const VALID_CONFIG: &str = r#"[settings]
listen = "127.0.0.1:8080"
status_timeout = "2s"
health_attempts = 20
allowed_hosts = ["gpu-box.lan"]
max_body_bytes = 65536

[[models]]
name = "llama"
command = ["/opt/run.sh", "--flag"]
env = { CUDA_VISIBLE_DEVICES = "0" }
model = "/models/llama.gguf"
context_size = 8192
options = ["a:1"]
restart = "on-failure"
idle_timeout = "15m"

[[models]]
name = "ext"
address = "127.0.0.1:50051"
pid = 4242
"#;

/// The valid configuration with a few random edits: bytes deleted, or text (TOML punctuation,
/// keys, values of every type, any unicode) inserted or written over, at random places.
fn edited_config() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("=".to_string()),
        Just("[[models]]\n".to_string()),
        Just("[settings]\n".to_string()),
        Just("\"".to_string()),
        Just("\nname = \"llama\"\n".to_string()),
        Just("\ncommand = []\n".to_string()),
        Just("\naddress = \"nowhere\"\n".to_string()),
        Just("\nstatus_timeout = \"0s\"\n".to_string()),
        Just("\nhealth_attempts = -1\n".to_string()),
        Just("\npid = 99999999999\n".to_string()),
        "[a-z_]{1,12} = (\"\\PC{0,8}\"|-?[0-9]{1,20}|true|\\[\\]|\\{\\})\n",
        any::<String>(),
    ];
    let edit = (
        any::<prop::sample::Index>(),
        0..3usize,
        fragment,
        0..40usize,
    );
    prop::collection::vec(edit, 1..4).prop_map(|edits| {
        let mut text = VALID_CONFIG.to_string();
        for (at, how, fragment, len) in edits {
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            match how {
                0 => text.replace_range(at..end, ""),
                1 => text.insert_str(at, &fragment),
                _ => text.replace_range(at..end, &fragment),
            }
        }
        text
    })
}

#[test]
fn the_config_loader_answers_any_text_with_a_config_or_an_error_naming_the_file() {
    let path = std::path::Path::new("fuzzed.toml");
    assert!(server::config::parse(VALID_CONFIG, path).is_ok());
    check(
        3000,
        prop_oneof![4 => edited_config(), 1 => any::<String>()],
        |text| {
            match server::config::parse(&text, path) {
                Ok((settings, models)) => {
                    // What it accepts is usable: no empty or repeated names, no zero deadlines.
                    prop_assert!(settings.validate().is_ok());
                    let mut names = std::collections::HashSet::new();
                    for model in &models {
                        prop_assert!(!model.name.trim().is_empty(), "{:?}", model.name);
                        prop_assert!(names.insert(model.name.clone()), "{:?}", model.name);
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    prop_assert!(message.contains("fuzzed.toml"), "{}", message);
                }
            }
            Ok(())
        },
    );
}
