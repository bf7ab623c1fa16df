//! Managed backends: start-up, failures, shutdown (busy, force, SIGKILL), restart, concurrency.

use crate::helpers::*;
use proto::State;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(20);

#[tokio::test]
async fn shutdown_stops_and_reaps_a_managed_backend_and_load_starts_it_again() {
    let app = spawn_app(&demo_model("chat", &[], &["weights_mib:8"])).await;
    let running = app.wait_for_lifecycle("chat", "running", START).await;
    let pid = running["pid"].as_u64().unwrap() as u32;
    assert!(process_exists(pid));

    let monitored: Value = app.monitor("chat").await.json().await.unwrap();
    assert_eq!(monitored["state"], 2);
    assert!(
        monitored["memory"]["breakdown"]["weights"]
            .as_u64()
            .unwrap()
            >= 8 * 1024 * 1024
    );

    let response = app.shutdown(json!({"model": "chat"})).await;
    assert_eq!(response.status(), 200);
    let body = response.json::<Value>().await.unwrap();
    assert_eq!(
        body["message"], "model stopped",
        "LocalAI's answer, plus what was freed"
    );
    assert!(
        body["freed"]["rss_before"].as_u64() >= Some(8 * 1024 * 1024),
        "{body}"
    );
    assert!(
        !process_exists(pid),
        "process is gone and reaped (no zombie) when shutdown returns"
    );

    let after = app.monitor("chat").await;
    expect_error(after, 500).await;
    let entry = app.backend("chat").await;
    assert_eq!(entry["lifecycle"], "stopped");
    assert!(entry["pid"].is_null());

    let again = app.shutdown(json!({"model": "chat"})).await;
    expect_error(again, 500).await;

    let response = app.load("chat").await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let entry = app.backend("chat").await;
    assert_eq!(entry["lifecycle"], "running");
    assert_ne!(entry["pid"].as_u64().unwrap() as u32, pid);
    assert_eq!(app.monitor("chat").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn shutdown_accepts_a_form_body_and_the_v1_alias() {
    let app = spawn_app(&format!(
        "{}{}",
        demo_model("a", &["--status-unimplemented"], &["weights_mib:1"]),
        demo_model("b", &[], &["weights_mib:1"])
    ))
    .await;
    app.wait_for_lifecycle("a", "running", START).await;
    app.wait_for_lifecycle("b", "running", START).await;

    // Free answers UNIMPLEMENTED here; that is fine.
    let response = app
        .http
        .post(app.url("/backend/shutdown"))
        .form(&[("model", "a")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = app
        .http
        .post(app.url("/v1/backend/shutdown"))
        .json(&json!({"model": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.backend("a").await["lifecycle"], "stopped");
    assert_eq!(app.backend("b").await["lifecycle"], "stopped");
    app.stop().await;
}

#[tokio::test]
async fn a_form_post_with_return_to_redirects_back_to_the_panel() {
    let app = spawn_app(&demo_model("chat", &[], &["weights_mib:1"])).await;
    app.wait_for_lifecycle("chat", "running", START).await;
    let no_redirects = client_without_redirects();
    // A form post of the panel, for "chat", that asks to return to `return_to`.
    let post = |path: &str, return_to: &'static str| {
        no_redirects
            .post(app.url(path))
            .form(&[("model", "chat"), ("return_to", return_to)])
            .send()
    };
    let location =
        |response: &reqwest::Response| response.headers()["location"].to_str().unwrap().to_string();
    let response = post("/backend/shutdown", "/").await.unwrap();
    assert_eq!(response.status(), 303);
    let location_after_stop = location(&response);
    assert!(
        location_after_stop.starts_with("/?notice="),
        "{location_after_stop}"
    );
    assert_eq!(app.backend("chat").await["lifecycle"], "stopped");

    // From a later page of the table, back to that page.
    let response = post("/backend/load", "/?page=2").await.unwrap();
    assert_eq!(response.status(), 303);
    let location_after_start = location(&response);
    assert!(
        location_after_start.starts_with("/?page=2&notice="),
        "{location_after_start}"
    );
    app.wait_for_lifecycle("chat", "running", START).await;

    let response = post("/backend/shutdown", "https://evil.example/")
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "only local paths are followed");
    app.stop().await;
}

#[tokio::test]
async fn shutdown_of_a_busy_backend_fails_after_the_wait_unless_forced() {
    let backend = spawn_backend(Behaviour {
        state: State::Busy,
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&external_model("busy", &backend.address)).await;
    app.wait_for_lifecycle("busy", "running", START).await;

    let calls_before = backend.status_calls.load(Ordering::SeqCst);
    let started = Instant::now();
    let response = app.shutdown(json!({"model": "busy"})).await;
    let waited = started.elapsed();
    let body = expect_error(response, 500).await;
    assert_eq!(body["error"]["type"], "backend_busy");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "waited the configured busy_wait of 1 s: {waited:?}"
    );
    // Polled every 250 ms during the wait (the observer adds about one call in 200 ms more).
    let calls = backend.status_calls.load(Ordering::SeqCst) - calls_before;
    assert!(
        calls >= 4,
        "Status asked again and again while waiting: {calls}"
    );
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 0);
    let entry = app.backend("busy").await;
    assert_eq!(entry["lifecycle"], "running", "state is unchanged");
    assert!(
        entry["shutdown_refused"].as_str().unwrap().contains("busy"),
        "{entry}"
    );

    let response = app.shutdown(json!({"model": "busy", "force": true})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 1);
    let entry = app.backend("busy").await;
    assert_eq!(entry["lifecycle"], "stopped");
    assert!(entry["shutdown_refused"].is_null(), "{entry}");
    app.stop().await;
}

#[tokio::test]
async fn a_backend_too_busy_to_answer_status_counts_as_busy() {
    let backend = spawn_backend(Behaviour {
        status_latency: Duration::from_secs(30),
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nstatus_timeout = \"300ms\"\nbusy_wait = \"1s\"\n{}",
        external_model("swamped", &backend.address)
    ))
    .await;
    app.wait_for_lifecycle("swamped", "running", START).await;
    let started = Instant::now();
    let body = expect_error(app.shutdown(json!({"model": "swamped"})).await, 500).await;
    assert_eq!(body["error"]["type"], "backend_busy");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 0);
    assert_eq!(app.backend("swamped").await["lifecycle"], "running");
    app.stop().await;
}

#[tokio::test]
async fn a_forced_shutdown_cuts_short_a_waiting_one_and_both_succeed() {
    let backend = spawn_backend(Behaviour {
        state: State::Busy,
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nbusy_wait = \"30s\"\n{}",
        external_model("busy", &backend.address)
    ))
    .await;
    app.wait_for_lifecycle("busy", "running", START).await;
    let started = Instant::now();
    let patient = app.shutdown(json!({"model": "busy"}));
    let forced = async {
        app.wait_for_lifecycle("busy", "stopping", START).await;
        // While it waits, the backend is still monitored: it reports BUSY.
        let monitored: Value = app.monitor("busy").await.json().await.unwrap();
        assert_eq!(monitored["state"], 1);
        app.shutdown(json!({"model": "busy", "force": true})).await
    };
    let (patient, forced) = tokio::join!(patient, forced);
    assert_eq!(patient.status(), 200);
    assert_eq!(forced.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_failing_free_still_stops_the_backend() {
    let backend = spawn_backend(Behaviour {
        free_fails: true,
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&external_model("ext", &backend.address)).await;
    app.wait_for_lifecycle("ext", "running", START).await;
    assert_eq!(app.shutdown(json!({"model": "ext"})).await.status(), 200);
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 1);
    assert_eq!(app.backend("ext").await["lifecycle"], "stopped");
    app.stop().await;
}

#[tokio::test]
async fn a_hanging_free_is_bounded_by_free_timeout() {
    let backend = spawn_backend(Behaviour {
        free_latency: Duration::from_secs(30),
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nfree_timeout = \"500ms\"\n{}",
        external_model("ext", &backend.address)
    ))
    .await;
    app.wait_for_lifecycle("ext", "running", START).await;
    let started = Instant::now();
    assert_eq!(app.shutdown(json!({"model": "ext"})).await.status(), 200);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(app.backend("ext").await["lifecycle"], "stopped");
    app.stop().await;
}

#[tokio::test]
async fn a_load_slower_than_load_timeout_fails_the_start_and_stops_the_process() {
    let app = spawn_app(&format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nhealth_interval = \"100ms\"\nload_timeout = \"500ms\"\nstop_grace = \"3s\"\n{}",
        demo_model("slow", &["--load-delay", "30s"], &["weights_mib:1"])
    ))
    .await;
    let starting = app.wait_for_lifecycle("slow", "starting", START).await;
    let pid = starting["pid"].as_u64().unwrap() as u32;
    let entry = app.wait_for_lifecycle("slow", "failed", START).await;
    let error = entry["last_error"].as_str().unwrap();
    assert!(
        error.contains("LoadModel") && error.contains("no answer within 500ms"),
        "{error}"
    );
    assert!(error.contains("stopped by backend-monitor"), "{error}");
    assert!(!process_exists(pid));
    app.stop().await;
}

#[tokio::test]
async fn load_re_attaches_an_external_backend_and_fails_clearly_when_it_is_gone() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external_model("ext", &backend.address)).await;
    app.wait_for_lifecycle("ext", "running", START).await;
    assert_eq!(app.shutdown(json!({"model": "ext"})).await.status(), 200);
    let entry = app.backend("ext").await;
    assert_eq!(entry["lifecycle"], "stopped");
    assert_eq!(entry["address"], backend.address.as_str());
    expect_error(app.monitor("ext").await, 500).await;

    let response = app.load("ext").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["message"],
        "model started"
    );
    assert_eq!(app.monitor("ext").await.status(), 200);

    assert_eq!(app.shutdown(json!({"model": "ext"})).await.status(), 200);
    backend.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = expect_error(app.load("ext").await, 500).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Health"),
        "{body}"
    );
    assert_eq!(app.backend("ext").await["lifecycle"], "failed");
    app.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_a_busy_backend_that_becomes_ready() {
    let backend = spawn_backend(Behaviour {
        state: State::Busy,
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nbusy_wait = \"10s\"\n[[models]]\nname = \"busy\"\naddress = {:?}\n",
        backend.address
    ))
    .await;
    app.wait_for_lifecycle("busy", "running", START).await;
    let state = backend.state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        *state.lock().unwrap() = State::Ready;
    });
    let response = app.shutdown(json!({"model": "busy"})).await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_shutdowns_of_one_model_do_the_work_once() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external_model("llm", &backend.address)).await;
    app.wait_for_lifecycle("llm", "running", START).await;
    let (a, b, c) = tokio::join!(
        app.shutdown(json!({"model": "llm"})),
        app.shutdown(json!({"model": "llm"})),
        app.shutdown(json!({"model": "llm"})),
    );
    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 200);
    assert_eq!(c.status(), 200);
    assert_eq!(backend.free_calls.load(Ordering::SeqCst), 1);
    expect_error(app.monitor("llm").await, 500).await;
    app.stop().await;
}

#[tokio::test]
async fn a_backend_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let app = spawn_app(&format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nhealth_interval = \"100ms\"\nstop_grace = \"500ms\"\n{}",
        demo_model("stubborn", &["--ignore-sigterm"], &["weights_mib:1"])
    ))
    .await;
    let running = app.wait_for_lifecycle("stubborn", "running", START).await;
    let pid = running["pid"].as_u64().unwrap() as u32;
    let started = Instant::now();
    let response = app.shutdown(json!({"model": "stubborn"})).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited the grace period"
    );
    assert!(!process_exists(pid), "killed and reaped");
    let logs: Value = app
        .get("/api/backends/stubborn")
        .await
        .json()
        .await
        .unwrap();
    let text = logs["logs"].to_string();
    assert!(text.contains("ignoring termination signal"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn a_backend_that_exits_at_start_up_fails_with_its_exit_code_and_stderr() {
    let app = spawn_app(
        "[[models]]\nname = \"broken\"\ncommand = [\"sh\", \"-c\", \"echo 'cannot open model file' >&2; exit 3\"]\n",
    )
    .await;
    let entry = app.wait_for_lifecycle("broken", "failed", START).await;
    let error = entry["last_error"].as_str().unwrap();
    assert!(error.contains("exit code 3"), "{error}");
    assert!(error.contains("cannot open model file"), "{error}");
    assert_eq!(entry["stderr_tail"], json!(["cannot open model file"]));
    assert!(
        entry["pid"].is_null() && entry["address"].is_null(),
        "{entry}"
    );

    let response = app.monitor("broken").await;
    expect_error(response, 500).await;
    let response = app.load("broken").await;
    let body = expect_error(response, 500).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit code 3")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_backend_that_never_becomes_healthy_is_stopped_and_marked_failed() {
    let app = spawn_app(
        "[settings]\nlisten = \"127.0.0.1:0\"\nhealth_attempts = 3\nhealth_interval = \"100ms\"\nstop_grace = \"1s\"\n[[models]]\nname = \"silent\"\ncommand = [\"sh\", \"-c\", \"exec sleep 30\"]\n",
    )
    .await;
    let entry = app.wait_for_lifecycle("silent", "failed", START).await;
    let error = entry["last_error"].as_str().unwrap();
    assert!(
        error.contains("Health") && error.contains("3 attempts"),
        "{error}"
    );
    assert!(entry["pid"].is_null());
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_load_model_fails_the_start_with_the_backends_message() {
    let app = spawn_app(&demo_model("bad", &[], &["weights_mib:lots"])).await;
    let entry = app.wait_for_lifecycle("bad", "failed", START).await;
    let error = entry["last_error"].as_str().unwrap();
    assert!(
        error.contains("LoadModel") && error.contains("weights_mib"),
        "{error}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_missing_program_fails_without_taking_the_server_down() {
    let app =
        spawn_app("[[models]]\nname = \"typo\"\ncommand = [\"/nonexistent/backend\"]\n").await;
    let entry = app.wait_for_lifecycle("typo", "failed", START).await;
    assert!(
        entry["last_error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/backend")
    );
    assert_eq!(app.get("/version").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_backend_that_crashes_while_running_is_marked_failed() {
    let app = spawn_app(&demo_model("chat", &[], &["weights_mib:1"])).await;
    let running = app.wait_for_lifecycle("chat", "running", START).await;
    let pid = running["pid"].as_u64().unwrap() as u32;
    send_signal(pid, nix::sys::signal::Signal::SIGKILL);
    let entry = app
        .wait_for_lifecycle("chat", "failed", Duration::from_secs(5))
        .await;
    assert!(
        entry["last_error"].as_str().unwrap().contains("signal 9"),
        "{entry}"
    );
    assert!(!process_exists(pid), "reaped");
    app.stop().await;
}

#[tokio::test]
async fn stopping_the_server_stops_every_managed_backend() {
    let app = spawn_app(&format!(
        "{}{}",
        demo_model("a", &[], &["weights_mib:1"]),
        demo_model("b", &["--status-unimplemented"], &["weights_mib:1"])
    ))
    .await;
    let a = app.wait_for_lifecycle("a", "running", START).await["pid"]
        .as_u64()
        .unwrap() as u32;
    let b = app.wait_for_lifecycle("b", "running", START).await["pid"]
        .as_u64()
        .unwrap() as u32;
    app.stop().await;
    assert!(!process_exists(a) && !process_exists(b));
}

#[tokio::test]
async fn a_shutdown_during_start_up_stops_the_backend_at_once() {
    let app = spawn_app(
        "[settings]\nlisten = \"127.0.0.1:0\"\nhealth_attempts = 100\nhealth_interval = \"200ms\"\nstop_grace = \"1s\"\n[[models]]\nname = \"slow\"\ncommand = [\"sh\", \"-c\", \"exec sleep 60\"]\n",
    )
    .await;
    let starting = app.wait_for_lifecycle("slow", "starting", START).await;
    let pid = starting["pid"].as_u64().unwrap() as u32;
    // Its progress counts the health checks (200 ms apart; `sleep` never answers).
    let waiting = Instant::now();
    let progress = loop {
        let entry = app.backend("slow").await;
        let step = &entry["start_progress"]["step"];
        if step["attempt"].as_u64().is_some_and(|a| a >= 2) {
            break step.clone();
        }
        assert!(waiting.elapsed() < START, "no progress: {entry}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(progress["phase"], "health_check");
    assert_eq!(progress["of"], 100);
    let started = Instant::now();
    let response = app.shutdown(json!({"model": "slow"})).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait for the start"
    );
    assert!(!process_exists(pid));
    let entry = app.backend("slow").await;
    assert_eq!(entry["lifecycle"], "stopped");
    assert!(entry["last_error"].is_null(), "{entry}");
    app.stop().await;
}

#[tokio::test]
async fn endless_output_lines_are_kept_bounded() {
    let app = spawn_app(
        "[[models]]\nname = \"noisy\"\ncommand = [\"sh\", \"-c\", \"head -c 300000 /dev/zero | tr '\\\\0' x >&2; exit 1\"]\n",
    )
    .await;
    let entry = app.wait_for_lifecycle("noisy", "failed", START).await;
    let tail = entry["stderr_tail"].as_array().unwrap();
    assert!(!tail.is_empty(), "{entry}");
    assert!(
        tail.iter().all(|l| l.as_str().unwrap().len() < 5000),
        "lines are cut"
    );
    assert!(entry["last_error"].as_str().unwrap().len() < 6000);
    app.stop().await;
}
