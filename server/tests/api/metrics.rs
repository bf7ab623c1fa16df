//! `GET /metrics`: the exposition, read with a real Prometheus text-format parser, agrees with
//! `/api/backends`; the `Status` histogram and the counters move where the work happens; read
//! keys may scrape; and the Grafana dashboard only queries metrics a real scrape has.

use crate::helpers::*;
use prometheus_parse::{Sample, Scrape, Value as Reading};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long a model may take to start, and the polls to add up.
const LIMIT: Duration = Duration::from_secs(20);

/// What Prometheus expects for the text format 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Parses a `/metrics` answer, checking its content type and that the lenient parser kept
/// every sample line (it skips lines it cannot read).
async fn parse(response: reqwest::Response) -> Scrape {
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(content_type.as_deref(), Some(TEXT_FORMAT));
    let text = response.text().await.expect("body");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition parses");
    let sample_lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            Reading::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(parsed, sample_lines, "every sample line parses:\n{text}");
    scrape
}

async fn scrape(app: &TestApp) -> Scrape {
    parse(app.get("/metrics").await).await
}

/// The sample called `name` with exactly these labels.
fn sample<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape.samples.iter().find(|s| {
        s.metric == name
            && s.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    })
}

/// The value of a gauge, counter or untyped sample.
fn number(sample: &Sample) -> Option<f64> {
    match sample.value {
        Reading::Gauge(v) | Reading::Counter(v) | Reading::Untyped(v) => Some(v),
        _ => None,
    }
}

/// The value of the sample called `name` with exactly these labels; panics when it is missing.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(scrape, name, labels)
        .and_then(number)
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
}

/// True when that sample exists and is at least `least`.
fn at_least(scrape: &Scrape, name: &str, labels: &[(&str, &str)], least: f64) -> bool {
    sample(scrape, name, labels)
        .and_then(number)
        .is_some_and(|v| v >= least)
}

/// A scrape and the model's `/api/backends` entry, taken while its observation did not change.
async fn consistent(app: &TestApp, model: &str) -> (Scrape, Value) {
    let start = Instant::now();
    loop {
        let before = app.backend(model).await;
        let scrape = scrape(app).await;
        let after = app.backend(model).await;
        let taken = before["observation"]["at_unix_ms"].as_u64();
        if taken.is_some() && taken == after["observation"]["at_unix_ms"].as_u64() {
            return (scrape, after);
        }
        assert!(
            start.elapsed() < LIMIT,
            "{model} has no stable observation: {after}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scrapes until `ready` holds (panics after [`LIMIT`]).
async fn scrape_until(app: &TestApp, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        let scrape = scrape(app).await;
        if ready(&scrape) {
            return scrape;
        }
        assert!(start.elapsed() < LIMIT, "no scrape with {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_describe_every_model_as_api_backends_does() {
    let scripted = spawn_backend(Behaviour {
        status_latency: Duration::from_millis(20),
        ..Behaviour::default()
    })
    .await;
    let port = server::supervisor::free_port().expect("free port");
    let app = spawn_app(&format!(
        "{}{}{}{}",
        demo_model("demo", &[], &["weights_mib:8", "kv_cache_mib:2"]),
        demo_model("legacy", &["--status-unimplemented"], &["weights_mib:8"]),
        external_model("scripted", &scripted.address),
        external_model("gone", &format!("127.0.0.1:{port}")),
    ))
    .await;
    for model in ["demo", "legacy", "scripted", "gone"] {
        app.wait_for_lifecycle(model, "running", LIMIT).await;
    }

    // The scripted backend reports fixed numbers.
    let (scrape, api) = consistent(&app, "scripted").await;
    let memory = &api["observation"]["status"]["memory"];
    let scripted_model = [("model", "scripted")];
    assert_eq!(
        value(&scrape, "backend_monitor_memory_bytes", &scripted_model),
        memory["total"].as_f64().expect("total")
    );
    assert_eq!(memory["total"], 3000);
    for (component, bytes) in memory["breakdown"].as_object().expect("breakdown") {
        let labels = [("model", "scripted"), ("component", component.as_str())];
        assert_eq!(
            value(&scrape, "backend_monitor_memory_component_bytes", &labels),
            bytes.as_f64().expect("bytes"),
            "{component}"
        );
    }
    assert_eq!(value(&scrape, "backend_monitor_up", &scripted_model), 1.0);
    assert!(
        sample(
            &scrape,
            "backend_monitor_process_resident_memory_bytes",
            &scripted_model
        )
        .is_none(),
        "an external backend without a pid has no process series"
    );

    // The demo backend: memory and process numbers as /api/backends shows them.
    let (scrape, api) = consistent(&app, "demo").await;
    let observation = &api["observation"];
    let demo = [("model", "demo")];
    let total = value(&scrape, "backend_monitor_memory_bytes", &demo);
    assert_eq!(
        total,
        observation["status"]["memory"]["total"].as_f64().unwrap()
    );
    let components: f64 = ["weights", "kv_cache", "runtime"]
        .iter()
        .map(|c| {
            value(
                &scrape,
                "backend_monitor_memory_component_bytes",
                &[("model", "demo"), ("component", c)],
            )
        })
        .sum();
    assert_eq!(
        components, total,
        "the demo's breakdown adds up to its total"
    );
    let process = &observation["process"];
    assert_eq!(
        value(
            &scrape,
            "backend_monitor_process_resident_memory_bytes",
            &demo
        ),
        process["memory_info"]["rss"].as_f64().unwrap()
    );
    assert!(
        value(
            &scrape,
            "backend_monitor_process_resident_memory_bytes",
            &demo
        ) >= 10.0 * 1024.0 * 1024.0
    );
    assert_eq!(
        value(
            &scrape,
            "backend_monitor_process_virtual_memory_bytes",
            &demo
        ),
        process["memory_info"]["vms"].as_f64().unwrap()
    );
    let cpu = value(&scrape, "backend_monitor_process_cpu_usage_ratio", &demo);
    assert!((cpu - process["cpu_percent"].as_f64().unwrap() / 100.0).abs() < 1e-9);

    // Lifecycle, state, up and info, for every model.
    let scrape = scrape_until(&app, "an observation of every model", |s| {
        at_least(s, "backend_monitor_up", &[("model", "legacy")], 1.0)
    })
    .await;
    for (model, kind, up, state) in [
        ("demo", "managed", 1.0, Some("ready")),
        ("legacy", "managed", 1.0, None),
        ("scripted", "external", 1.0, Some("ready")),
        ("gone", "external", 0.0, None),
    ] {
        let api = app.backend(model).await;
        let backend = api["backend"].as_str().unwrap();
        assert_eq!(
            value(
                &scrape,
                "backend_monitor_model_info",
                &[("model", model), ("backend", backend), ("kind", kind)]
            ),
            1.0
        );
        assert_eq!(
            value(&scrape, "backend_monitor_up", &[("model", model)]),
            up
        );
        for lifecycle in ["starting", "running", "stopping", "stopped", "failed"] {
            let want = if lifecycle == api["lifecycle"] {
                1.0
            } else {
                0.0
            };
            let labels = [("model", model), ("lifecycle", lifecycle)];
            assert_eq!(value(&scrape, "backend_monitor_lifecycle", &labels), want);
        }
        for name in ["uninitialized", "busy", "ready", "error"] {
            let want = if Some(name) == state { 1.0 } else { 0.0 };
            let labels = [("model", model), ("state", name)];
            assert_eq!(
                value(&scrape, "backend_monitor_backend_state", &labels),
                want,
                "{model} {name}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn generation_from_get_metrics_is_shown_where_implemented_and_not_asked_again_where_not() {
    let scripted = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&format!(
        "{}{}{}",
        demo_model("fast", &["--tokens-per-second", "40"], &["weights_mib:1"]),
        demo_model("legacy", &["--status-unimplemented"], &["weights_mib:1"]),
        external_model("scripted", &scripted.address),
    ))
    .await;
    for model in ["fast", "legacy", "scripted"] {
        app.wait_for_lifecycle(model, "running", LIMIT).await;
    }

    // The demo generates 40 tokens a second since its load: the count grows between looks.
    let (first_scrape, api) = consistent(&app, "fast").await;
    let generation = &api["observation"]["generation"];
    assert_eq!(generation["tokens_per_second"], 40.0, "{api}");
    let fast = [("model", "fast")];
    assert_eq!(
        value(
            &first_scrape,
            "backend_monitor_generation_tokens_per_second",
            &fast
        ),
        40.0
    );
    let first = generation["tokens_generated"].as_f64().expect("tokens");
    assert_eq!(
        value(&first_scrape, "backend_monitor_generated_tokens", &fast),
        first
    );
    let start = Instant::now();
    loop {
        let later = app.backend("fast").await["observation"]["generation"]["tokens_generated"]
            .as_f64()
            .expect("tokens");
        if later >= first + 8.0 {
            break;
        }
        assert!(start.elapsed() < LIMIT, "tokens stay at {later}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // UNIMPLEMENTED is "not reported": no field, no series, and not asked again in this run.
    let start = Instant::now();
    while scripted
        .status_calls
        .load(std::sync::atomic::Ordering::SeqCst)
        < 4
    {
        assert!(
            start.elapsed() < LIMIT,
            "the observer stopped calling Status"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        scripted
            .generation_calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let later = scrape(&app).await;
    for model in ["legacy", "scripted"] {
        let api = app.backend(model).await;
        assert!(api["observation"]["at_unix_ms"].is_u64(), "{api}");
        assert!(api["observation"].get("generation").is_none(), "{api}");
        assert!(
            sample(
                &later,
                "backend_monitor_generation_tokens_per_second",
                &[("model", model)]
            )
            .is_none()
        );
    }
    // LocalAI's /backend/monitor keeps its shape.
    let monitor: Value = app.monitor("fast").await.json().await.expect("json");
    assert_eq!(
        monitor
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["memory".to_string(), "state".to_string()])
    );
    app.stop().await;
}

#[tokio::test]
async fn status_latency_and_outcomes_are_recorded_by_the_observer() {
    let latency = Duration::from_millis(30);
    let scripted = spawn_backend(Behaviour {
        status_latency: latency,
        ..Behaviour::default()
    })
    .await;
    let port = server::supervisor::free_port().expect("free port");
    let app = spawn_app(&format!(
        "{}{}",
        external_model("scripted", &scripted.address),
        external_model("gone", &format!("127.0.0.1:{port}")),
    ))
    .await;

    let count = "backend_monitor_status_duration_seconds_count";
    let scripted_model = [("model", "scripted")];
    let scrape = scrape_until(&app, "three timed Status calls", |s| {
        at_least(s, count, &scripted_model, 3.0)
    })
    .await;
    let calls = value(&scrape, count, &scripted_model);
    let sum = value(
        &scrape,
        "backend_monitor_status_duration_seconds_sum",
        &scripted_model,
    );
    assert!(
        sum >= calls * latency.as_secs_f64(),
        "each call took at least {latency:?}: {sum} s for {calls}"
    );
    let buckets = match &sample(
        &scrape,
        "backend_monitor_status_duration_seconds",
        &scripted_model,
    )
    .expect("histogram")
    .value
    {
        Reading::Histogram(buckets) => buckets.clone(),
        other => panic!("not a histogram: {other:?}"),
    };
    let below = |bound: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == bound)
            .map(|b| b.count)
            .expect("bucket")
    };
    assert_eq!(below(0.025), 0.0, "no call was faster than {latency:?}");
    assert_eq!(below(f64::INFINITY), calls);
    let ok = value(
        &scrape,
        "backend_monitor_status_checks_total",
        &[("model", "scripted"), ("outcome", "ok")],
    );
    // The histogram and the counter are recorded one after the other, not atomically.
    assert!(ok >= calls - 1.0 && ok <= calls + 1.0, "{ok} vs {calls}");

    let scrape = scrape_until(&app, "a failed Status call", |s| {
        let labels = [("model", "gone"), ("outcome", "unreachable")];
        at_least(s, "backend_monitor_status_checks_total", &labels, 1.0)
    })
    .await;
    let gone_ok = [("model", "gone"), ("outcome", "ok")];
    assert_eq!(
        value(&scrape, "backend_monitor_status_checks_total", &gone_ok),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn monitor_answers_are_counted_by_source() {
    let scripted = spawn_backend(Behaviour::default()).await;
    let port = server::supervisor::free_port().expect("free port");
    let app = spawn_app(&format!(
        "{}{}{}",
        demo_model("legacy", &["--status-unimplemented"], &["weights_mib:1"]),
        external_model("scripted", &scripted.address),
        external_model("gone", &format!("127.0.0.1:{port}")),
    ))
    .await;
    app.wait_for_lifecycle("legacy", "running", LIMIT).await;
    let requests = "backend_monitor_monitor_requests_total";
    let count = |scrape: &Scrape, model: &str, result: &str| {
        value(scrape, requests, &[("model", model), ("result", result)])
    };

    let before = scrape(&app).await;
    for model in ["legacy", "scripted", "gone"] {
        for result in ["status", "fallback", "error"] {
            assert_eq!(count(&before, model, result), 0.0, "{model} {result}");
        }
    }

    for _ in 0..2 {
        assert_eq!(app.monitor("legacy").await.status(), 200);
    }
    assert_eq!(app.monitor("scripted").await.status(), 200);
    expect_error(app.monitor("gone").await, 500).await;
    expect_error(app.monitor("nope").await, 500).await;

    let after = scrape(&app).await;
    assert_eq!(count(&after, "legacy", "fallback"), 2.0);
    assert_eq!(count(&after, "legacy", "status"), 0.0);
    assert_eq!(count(&after, "scripted", "status"), 1.0);
    assert_eq!(count(&after, "scripted", "fallback"), 0.0);
    assert_eq!(count(&after, "gone", "error"), 1.0);
    assert!(
        !after
            .samples
            .iter()
            .any(|s| s.labels.get("model") == Some("nope")),
        "an unknown model name from a request makes no series"
    );
    app.stop().await;
}

#[tokio::test]
async fn read_keys_may_scrape_and_no_key_is_refused() {
    let scripted = spawn_backend(Behaviour::default()).await;
    let app = spawn_app_with_keys(
        &external_model("scripted", &scripted.address),
        &["admin-key"],
        &["read-key"],
    )
    .await;
    let client = client_without_redirects();

    // Not a panel page: a browser without a key gets 401, not the sign-in page.
    let response = client
        .get(app.url("/metrics"))
        .header("Accept", "text/html")
        .send()
        .await
        .expect("request sent");
    expect_error(response, 401).await;
    let response = client
        .get(app.url("/metrics"))
        .bearer_auth("wrong-key")
        .send()
        .await
        .expect("request sent");
    expect_error(response, 401).await;

    // Prometheus' `authorization` setting sends `Authorization: Bearer <key>`.
    let response = client
        .get(app.url("/metrics"))
        .bearer_auth("read-key")
        .send()
        .await
        .expect("request sent");
    let scrape = parse(response).await;
    assert_eq!(
        value(
            &scrape,
            "backend_monitor_lifecycle",
            &[("model", "scripted"), ("lifecycle", "running")]
        ),
        1.0
    );
    app.stop().await;
}

/// The `backend_monitor_*` names in a PromQL expression: identifiers (letters, digits, `_`,
/// `:`, not starting with a digit) with that prefix.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            current.push(c);
            continue;
        }
        if current.starts_with("backend_monitor_") {
            names.push(current.clone());
        }
        current.clear();
    }
    names
}

/// Every `expr` (panel queries) and string `query` (template variables) in the dashboard.
fn queries(json: &Value, found: &mut Vec<String>) {
    match json {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", Value::String(text)) => found.push(text.clone()),
                    _ => queries(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| queries(item, found)),
        _ => {}
    }
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le) (rate(backend_monitor_status_duration_seconds_bucket{model=~"$model"}[5m])))"#
        ),
        ["backend_monitor_status_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names(r#"backend_monitor_up{x="backend_monitor_not_a_name"} + backend_monitor_b"#),
        ["backend_monitor_up", "backend_monitor_b"]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_in_a_real_scrape() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dashboards/backend-monitor.json"
    );
    let text = std::fs::read_to_string(path).expect("dashboard exists");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert!(
        dashboard["templating"]["list"]
            .as_array()
            .expect("template variables")
            .iter()
            .any(|v| v["name"] == "model"),
        "the dashboard has a $model variable"
    );
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() >= 10, "the dashboard queries little: {used:?}");

    let app = spawn_app(&demo_model("demo", &[], &["weights_mib:4"])).await;
    app.wait_for_lifecycle("demo", "running", LIMIT).await;
    consistent(&app, "demo").await;
    let scrape = scrape_until(&app, "the host's and the tree's memory", |s| {
        sample(s, "backend_monitor_host_memory_total_bytes", &[]).is_some()
            && sample(
                s,
                "backend_monitor_measured_resident_memory_bytes",
                &[("model", "demo")],
            )
            .is_some()
    })
    .await;
    // GPU series exist only where an NVIDIA driver answers; elsewhere those panels are empty
    // by nature, not by a wrong name.
    let driver = server::gpu::Gpus::probe().present();
    let used: BTreeSet<String> = used
        .into_iter()
        .filter(|name| driver || !name.contains("_gpu_"))
        .collect();
    // A histogram's buckets are queried as `<name>_bucket`; the parser files them as `<name>`.
    let served: BTreeSet<String> = scrape
        .samples
        .iter()
        .flat_map(|s| match s.value {
            Reading::Histogram(_) => vec![format!("{}_bucket", s.metric)],
            _ => vec![s.metric.clone()],
        })
        .collect();
    let missing: Vec<&String> = used.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "not in a scrape: {missing:?}; served: {served:?}"
    );
    app.stop().await;
}
