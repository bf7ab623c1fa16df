//! `/backend/monitor`: the backend's own status, the OS fallback, deadlines and bad input.

use crate::helpers::*;
use proto::State;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn external(name: &str, address: &str, pid: Option<u32>) -> String {
    let pid = pid.map(|p| format!("pid = {p}\n")).unwrap_or_default();
    format!("[[models]]\nname = {name:?}\naddress = {address:?}\n{pid}")
}

#[tokio::test]
async fn monitor_returns_the_status_a_backend_reports() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external("llm", &backend.address, None)).await;

    let response = app.monitor("llm").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"state": 2, "memory": {"total": 3000, "breakdown": {"weights": 2000, "kv_cache": 1000}}})
    );
    app.stop().await;
}

#[tokio::test]
async fn monitor_accepts_the_query_string_and_the_v1_alias() {
    let backend = spawn_backend(Behaviour {
        state: State::Busy,
        memory: None,
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&external("llm", &backend.address, None)).await;

    for path in [
        "/backend/monitor?model=llm",
        "/v1/backend/monitor?model=llm",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"state": 1}),
            "memory is absent when not reported"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn monitor_accepts_post_as_in_localais_curl_example() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external("llm", &backend.address, None)).await;
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
async fn monitor_ignores_unknown_json_fields() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external("llm", &backend.address, None)).await;
    let response = app
        .send(
            Method::GET,
            "/backend/monitor",
            Some("application/json; charset=utf-8"),
            r#"{"model": "llm", "verbose": true, "extra": [1, 2]}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn monitor_falls_back_to_process_metrics_that_match_proc() {
    let app = spawn_app(&demo_model(
        "legacy",
        &["--status-unimplemented"],
        &["weights_mib:32"],
    ))
    .await;
    let backend = app
        .wait_for_lifecycle("legacy", "running", Duration::from_secs(20))
        .await;
    let pid = backend["pid"]
        .as_u64()
        .expect("managed backends have a pid") as u32;

    let before = server::process::read_memory_info(pid).expect("process exists");
    let response = app.monitor("legacy").await;
    let after = server::process::read_memory_info(pid).expect("process exists");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("state").is_none(), "{body}");
    let rss = body["memory_info"]["rss"].as_u64().unwrap();
    let vms = body["memory_info"]["vms"].as_u64().unwrap();
    assert!(
        rss >= before.rss.min(after.rss) && rss <= before.rss.max(after.rss),
        "{rss} vs {before:?}"
    );
    assert!(
        vms >= before.vms.min(after.vms) && vms <= before.vms.max(after.vms),
        "{vms} vs {before:?}"
    );
    assert!(
        rss >= 32 * 1024 * 1024,
        "the loaded 32 MiB are resident: {rss}"
    );
    for field in ["hwm", "data", "stack", "locked", "swap"] {
        assert!(body["memory_info"][field].is_u64(), "{field}: {body}");
    }
    assert!(body["memory_info"]["hwm"].as_u64().unwrap() >= rss);
    let percent = body["memory_percent"].as_f64().unwrap();
    assert!(percent > 0.0 && percent < 100.0, "{percent}");
    assert!(body["cpu_percent"].as_f64().unwrap() >= 0.0);
    app.stop().await;
}

#[tokio::test]
async fn a_hung_backend_is_bounded_by_the_status_deadline() {
    let backend = spawn_backend(Behaviour {
        status_latency: Duration::from_secs(60),
        ..Behaviour::default()
    })
    .await;
    let own_pid = std::process::id();
    let app = spawn_app(&format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nstatus_timeout = \"300ms\"\n{}{}",
        external("hung", &backend.address, None),
        external("hung-with-pid", &backend.address, Some(own_pid)),
    ))
    .await;

    let started = Instant::now();
    let response = app.monitor("hung").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    expect_error(response, 500).await;

    let response = app.monitor("hung-with-pid").await;
    assert_eq!(response.status(), 200, "falls back when a pid is known");
    let body: Value = response.json().await.unwrap();
    assert!(body["memory_info"]["rss"].as_u64().unwrap() > 0);
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_backend_without_a_pid_is_a_500() {
    let port = server::supervisor::free_port().unwrap();
    let app = spawn_app(&external("gone", &format!("127.0.0.1:{port}"), None)).await;
    let response = app.monitor("gone").await;
    let body = expect_error(response, 500).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("gone"));
    app.stop().await;
}

#[tokio::test]
async fn monitor_returns_500_for_an_unknown_model() {
    let app = spawn_app("").await;
    let response = app.monitor("nope").await;
    let body = expect_error(response, 500).await;
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_400_with_an_error_envelope() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external("llm", &backend.address, None)).await;
    let cases: Vec<(Option<&str>, &str)> = vec![
        (Some("application/json"), ""),
        (Some("application/json"), "{}"),
        (Some("application/json"), r#"{"model": ""}"#),
        (Some("application/json"), r#"{"model": "   "}"#),
        (Some("application/json"), r#"{"model": 42}"#),
        (Some("application/json"), r#"{"model": ["llm"]}"#),
        (Some("application/json"), r#"{"model": "llm""#),
        (Some("application/json"), r#""llm""#),
        (
            Some("application/json"),
            r#"{"model": "llm", "force": "yes"}"#,
        ),
        (Some("text/plain"), r#"{"model": "llm"}"#),
        (None, r#"{"model": "llm"}"#),
        (Some("application/x-www-form-urlencoded"), "force=1"),
    ];
    for (content_type, body) in cases {
        let response = app
            .send(Method::GET, "/backend/monitor", content_type, body)
            .await;
        expect_error(response, 400).await;
    }
    let response = app.get("/backend/monitor?model=").await;
    assert_eq!(response.status(), 400);
    // The server is still fine afterwards.
    assert_eq!(app.monitor("llm").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn wrong_methods_and_unknown_api_paths_get_an_error_envelope() {
    let app = spawn_app("").await;
    let response = app.send(Method::DELETE, "/backend/monitor", None, "").await;
    expect_error(response, 405).await;
    for path in ["/backend/monitr", "/v1/nothing", "/api/nope/deeper"] {
        expect_error(app.get(path).await, 404).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn system_version_and_backends_describe_the_registry() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&format!(
        "{}backend = \"llama-cpp\"\n",
        external("llm", &backend.address, None)
    ))
    .await;
    let system: Value = app.get("/system").await.json().await.unwrap();
    assert_eq!(
        system,
        json!({"backends": ["llama-cpp"], "loaded_models": [{"id": "llm", "backend": "llama-cpp"}]})
    );
    let version: Value = app.get("/version").await.json().await.unwrap();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));

    // The background observer fills in the latest observation.
    app.wait_for_observation("llm").await;
    let entry = app.backend("llm").await;
    assert_eq!(entry["lifecycle"], "running");
    assert_eq!(entry["kind"], "external");
    assert_eq!(entry["address"], backend.address.as_str());
    assert_eq!(entry["observation"]["status"]["memory"]["total"], 3000);

    let detail = app.get("/api/backends/llm").await;
    assert_eq!(detail.status(), 200);
    let missing = app.get("/api/backends/nope").await;
    expect_error(missing, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn the_panel_is_server_rendered_with_every_model_and_its_controls() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&format!(
        "{}{}",
        external("llm", &backend.address, None),
        external("my model/v2", &backend.address, None)
    ))
    .await;
    // Wait for the first observation so the memory cell has data.
    app.wait_for_observation("llm").await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"data-model="llm""#), "{html}");
    assert!(html.contains(r#"action="/backend/shutdown""#), "{html}");
    assert!(html.contains(r#"aria-label="Shut down llm""#), "{html}");
    assert!(html.contains("2.9 KiB"), "memory total is rendered: {html}");

    let page = app.get("/models/llm").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Last minutes"));

    // Names that are not URL-safe link to their page correctly.
    assert!(html.contains(r#"href="/models/my%20model%2Fv2""#), "{html}");
    let page = app.get("/models/my%20model%2Fv2").await;
    assert_eq!(page.status(), 200);
    // (Hydration markers may follow the text inside the heading.)
    assert!(page.text().await.unwrap().contains("<h1>my model/v2<"));

    // A model that is not configured, and a page that does not exist, are 404s with a page
    // that says so.
    let page = app.get("/models/ghost").await;
    assert_eq!(page.status(), 404);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(r#"No model named "ghost" is configured."#)
    );
    let page = app.get("/models/llm/extra").await;
    assert_eq!(page.status(), 404);
    assert!(page.text().await.unwrap().contains("Page not found"));
    app.stop().await;
}

#[tokio::test]
async fn the_panel_shows_a_hundred_backends_a_page_with_totals_over_all() {
    let backend = spawn_backend(Behaviour::default()).await;
    let config: String = (0..130)
        .map(|i| external(&format!("m{i:03}"), &backend.address, None))
        .collect();
    let app = spawn_app(&config).await;
    let rows = |html: &str| html.matches("<tr data-model=").count();

    let first = app.get("/").await.text().await.unwrap();
    assert_eq!(rows(&first), 100, "{first}");
    assert!(first.contains(r#"data-model="m000""#) && first.contains(r#"data-model="m099""#));
    assert!(!first.contains(r#"data-model="m100""#));
    assert!(
        first.contains("Backends 1–100 of 130 · page 1 of 2"),
        "{first}"
    );
    assert!(first.contains(r#"href="/?page=2""#) && !first.contains(r#"rel="prev""#));
    // The totals count every backend, not only this page's.
    assert!(first.contains(" of 130<"), "{first}");

    let second = app.get("/?page=2").await.text().await.unwrap();
    assert_eq!(rows(&second), 30, "{second}");
    assert!(second.contains(r#"data-model="m100""#) && second.contains(r#"data-model="m129""#));
    assert!(
        second.contains("Backends 101–130 of 130 · page 2 of 2"),
        "{second}"
    );
    assert!(second.contains(r#"href="/?page=1""#) && !second.contains(r#"rel="next""#));

    // Past the end shows the last page; a page number that doesn't parse, the first.
    let past = app.get("/?page=9").await.text().await.unwrap();
    assert!(past.contains("page 2 of 2") && rows(&past) == 30);
    let unparsed = app.get("/?page=two").await.text().await.unwrap();
    assert!(unparsed.contains("page 1 of 2") && rows(&unparsed) == 100);

    // The browser's refresh asks for its page only.
    let refresh = app
        .http
        .post(app.url("/_panel/snapshot"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("page=2")
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 200);
    let refresh: serde_json::Value = refresh.json().await.unwrap();
    assert_eq!(
        refresh["snapshot"]["backends"].as_array().map(Vec::len),
        Some(30)
    );
    assert_eq!(refresh["total"], 130);
    assert_eq!(refresh["page"], 2);
    app.stop().await;
}

#[tokio::test]
async fn cpu_percent_is_recent_usage_not_the_lifetime_average() {
    // Burns CPU for about three seconds, then idles: a lifetime average stays high, recent use drops.
    let mut child = std::process::Command::new("perl")
        .args(["-e", "my $end = time + 3; 1 while time < $end; sleep 30"])
        .spawn()
        .expect("perl runs");
    let port = server::supervisor::free_port().unwrap();
    let app = spawn_app(&external(
        "busy",
        &format!("127.0.0.1:{port}"),
        Some(child.id()),
    ))
    .await;

    let cpu = |body: Value| body["cpu_percent"].as_f64().unwrap();
    let start = Instant::now();
    let mut peak: f64 = 0.0;
    let mut latest = f64::MAX;
    while start.elapsed() < Duration::from_secs(10) {
        latest = cpu(app.monitor("busy").await.json().await.unwrap());
        peak = peak.max(latest);
        if peak > 20.0 && latest < 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    // Other tests and builds share the cores, so the busy phase may get well under 100 %.
    assert!(peak > 20.0, "the busy phase was seen: peak {peak}");
    assert!(latest < 5.0, "idle again shortly after: {latest}");
    app.stop().await;
}

#[tokio::test]
async fn the_host_view_shows_memory_cpu_and_what_the_backends_hold() {
    let app = spawn_app(&demo_model(
        "chat",
        &["--status-unimplemented"],
        &["weights_mib:16"],
    ))
    .await;
    app.wait_for_lifecycle("chat", "running", Duration::from_secs(20))
        .await;
    let observation = app.wait_for_observation("chat").await;
    let rss = observation["process"]["memory_info"]["rss"]
        .as_u64()
        .unwrap();
    let start = Instant::now();
    let host = loop {
        let all: Value = app.get("/api/backends").await.json().await.unwrap();
        if !all["host"].is_null() {
            break all["host"].clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no host view: {all}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mem_total_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let total = host["memory_total"].as_u64().unwrap();
    assert!(total > 0 && total <= mem_total_kib * 1024, "{host}");
    let used = host["memory_used"].as_u64().unwrap();
    assert!(used > 0 && used <= total, "{host}");
    assert_eq!(
        used + host["memory_available"].as_u64().unwrap(),
        total,
        "{host}"
    );
    assert!(host["cpus"].as_u64().unwrap() >= 1, "{host}");
    assert_eq!(host["load"].as_array().unwrap().len(), 3);
    // The backend holds at least its 16 MiB of weights, and its RSS moves by a few pages only.
    let held = host["backends_memory"].as_u64().unwrap();
    assert!(held >= 16 * 1024 * 1024, "{host}");
    assert!(held.abs_diff(rss) < rss / 10, "{held} vs {rss}");
    let page = app.get("/").await.text().await.unwrap();
    assert!(
        page.contains("host memory used"),
        "the panel shows the host"
    );
    app.stop().await;
}

#[tokio::test]
async fn activity_counts_the_busy_answers_of_the_last_minutes() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external("llm", &backend.address, None)).await;
    app.wait_for_observation("llm").await;
    let entry = app.backend("llm").await;
    let activity = &entry["activity"];
    assert_eq!(activity["busy_now"], false, "{entry}");
    assert_eq!(activity["busy_ratio"], 0.0, "{entry}");

    *backend.state.lock().unwrap() = proto::State::Busy;
    let start = Instant::now();
    let entry = loop {
        let entry = app.backend("llm").await;
        if entry["activity"]["busy_now"] == true {
            break entry;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never busy: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ratio = entry["activity"]["busy_ratio"].as_f64().unwrap();
    assert!(
        ratio > 0.0 && ratio < 1.0,
        "some answers were BUSY: {entry}"
    );
    // The panel says it in words: a share above 0 %.
    let page = app.get("/").await.text().await.unwrap();
    let shown = page
        .split("busy ")
        .skip(1)
        .find_map(|rest| rest.split(" % of the last").next()?.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no activity share on the panel: {page}"));
    assert!(shown > 0, "the panel shows {shown} % busy");
    app.stop().await;
}
