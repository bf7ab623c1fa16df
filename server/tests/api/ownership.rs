//! Each model's lifecycle has one owner: work that survives dropped requests, at most one
//! process per model, and no process left behind.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(20);

/// A managed demo backend whose processes carry `BM_TEST_MARK=<mark>` in their environment.
fn marked_demo(name: &str, mark: &str, args: &[&str]) -> String {
    let command: Vec<String> = std::iter::once(DEMO_BACKEND)
        .chain(args.iter().copied())
        .map(|s| format!("{s:?}"))
        .collect();
    format!(
        "[[models]]\nname = {name:?}\ncommand = [{}]\nenv = {{ BM_TEST_MARK = {mark:?} }}\nmodel = \"demo.gguf\"\noptions = [\"weights_mib:1\"]\n",
        command.join(", ")
    )
}

/// Backend processes (not their shims) whose environment carries the mark.
fn marked_backends(mark: &str) -> Vec<u32> {
    let needle = format!("BM_TEST_MARK={mark}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            environ
                .split(|b| *b == 0)
                .any(|var| var == needle.as_bytes())
                && !String::from_utf8_lossy(&cmdline).contains("__shim")
        })
        .collect()
}

/// A server with one managed backend, `slow`, whose `LoadModel` takes `load_delay`; its
/// processes carry `mark`.
async fn slow_app(mark: &str, load_delay: &str) -> TestApp {
    spawn_app(&format!(
        "{}{}",
        settings(""),
        marked_demo("slow", mark, &["--load-delay", load_delay])
    ))
    .await
}

fn unique_mark(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

fn settings(extra: &str) -> String {
    format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nhealth_interval = \"100ms\"\nhealth_attempts = 100\nstop_grace = \"3s\"\nbusy_wait = \"1s\"\npoll_interval = \"200ms\"\n{extra}"
    )
}

/// A client that gives up after `limit`, as `curl --max-time` does.
fn impatient(limit: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(limit)
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_client_that_gives_up_during_a_load_leaves_exactly_one_running_backend() {
    let mark = unique_mark("load-disconnect");
    let app = slow_app(&mark, "1500ms").await;
    app.wait_for_lifecycle("slow", "running", START).await;
    assert_eq!(app.shutdown(json!({"model": "slow"})).await.status(), 200);
    assert!(marked_backends(&mark).is_empty());

    let gave_up = impatient(Duration::from_millis(300))
        .post(app.url("/backend/load"))
        .json(&json!({"model": "slow"}))
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the client timed out before the start ended"
    );
    let running = app.wait_for_lifecycle("slow", "running", START).await;
    let pid = running["pid"].as_u64().unwrap() as u32;
    assert_eq!(marked_backends(&mark), vec![pid]);

    let again = app.load("slow").await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<Value>().await.unwrap()["message"],
        "model already running"
    );
    assert_eq!(marked_backends(&mark), vec![pid], "no second process");
    app.stop().await;
    assert!(marked_backends(&mark).is_empty());
}

#[tokio::test]
async fn a_client_that_gives_up_during_a_shutdown_still_stops_the_backend() {
    let app = spawn_app(&format!(
        "{}{}",
        settings(""),
        demo_model("stubborn", &["--ignore-sigterm"], &["weights_mib:1"])
    ))
    .await;
    let pid = app.wait_for_lifecycle("stubborn", "running", START).await["pid"]
        .as_u64()
        .unwrap() as u32;
    let gave_up = impatient(Duration::from_millis(300))
        .post(app.url("/backend/shutdown"))
        .json(&json!({"model": "stubborn"}))
        .send()
        .await;
    assert!(
        gave_up.is_err(),
        "the client timed out during the grace period"
    );
    assert_eq!(app.backend("stubborn").await["lifecycle"], "stopping");
    app.wait_for_lifecycle("stubborn", "stopped", Duration::from_secs(10))
        .await;
    assert!(
        !process_exists(pid),
        "killed after the grace period and reaped"
    );
    app.stop().await;
}

#[tokio::test]
async fn loads_during_a_start_join_it_and_start_one_process() {
    let mark = unique_mark("join");
    let app = slow_app(&mark, "1s").await;
    app.wait_for_lifecycle("slow", "starting", START).await;
    let (a, b, c) = tokio::join!(app.load("slow"), app.load("slow"), app.load("slow"));
    for response in [a, b, c] {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap()["message"],
            "model started"
        );
    }
    let pid = app.backend("slow").await["pid"].as_u64().unwrap() as u32;
    assert_eq!(marked_backends(&mark), vec![pid]);
    app.stop().await;
}

#[tokio::test]
async fn a_shutdown_during_a_start_cancels_it_and_the_start_answers_409() {
    let mark = unique_mark("cancel");
    let app = slow_app(&mark, "30s").await;
    app.wait_for_lifecycle("slow", "starting", START).await;
    assert_eq!(app.shutdown(json!({"model": "slow"})).await.status(), 200);
    assert_eq!(app.backend("slow").await["lifecycle"], "stopped");

    let load = app.load("slow");
    let cancel = async {
        app.wait_for_lifecycle("slow", "starting", START).await;
        let started = Instant::now();
        let response = app.shutdown(json!({"model": "slow"})).await;
        (response.status(), started.elapsed())
    };
    let (load, (shutdown, took)) = tokio::join!(load, cancel);
    assert_eq!(shutdown, 200);
    assert!(
        took < Duration::from_secs(3),
        "did not wait for the start: {took:?}"
    );
    let body = expect_error(load, 409).await;
    assert_eq!(body["error"]["type"], "start_cancelled");
    let entry = app.backend("slow").await;
    assert_eq!(entry["lifecycle"], "stopped");
    assert!(
        entry["pid"].is_null() && entry["last_error"].is_null(),
        "{entry}"
    );
    assert!(marked_backends(&mark).is_empty(), "no process survives");
    app.stop().await;
}

#[tokio::test]
async fn exit_during_a_start_leaves_no_process() {
    let mark = unique_mark("exit-start");
    let app = slow_app(&mark, "30s").await;
    app.wait_for_lifecycle("slow", "starting", START).await;
    assert_eq!(marked_backends(&mark).len(), 1);
    // The start shows its step: the model is loading (LoadModel takes 30 s here).
    let start = Instant::now();
    let entry = loop {
        let entry = app.backend("slow").await;
        if entry["start_progress"]["step"]["phase"] == "loading" {
            break entry;
        }
        assert!(start.elapsed() < START, "never loading: {entry}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["start_progress"]["step"]["model"], "demo.gguf");
    let page = app.get("/").await.text().await.unwrap();
    assert!(
        page.contains("loading demo.gguf…"),
        "the panel shows the step"
    );
    let started = Instant::now();
    app.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(marked_backends(&mark).is_empty());
}

#[tokio::test]
async fn a_setsid_grandchild_of_a_wrapper_script_does_not_survive_a_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    let app = spawn_app(&format!(
        "{}{}",
        settings(""),
        escaping_demo_model("wrapped", &pid_file)
    ))
    .await;
    let running = app.wait_for_lifecycle("wrapped", "running", START).await;
    let pid = running["pid"].as_u64().unwrap() as u32;
    let grandchild = read_pid_file(&pid_file).await;
    assert!(process_exists(grandchild));
    // The pid shown is the process running `command` (the wrapper), leading its own group.
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with("sh\0-c\0"), "{cmdline:?}");
    let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap();
    assert_eq!(group.as_raw() as u32, pid);
    let session = |p: u32| nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(p as i32)));
    assert_ne!(
        session(grandchild),
        session(pid),
        "the grandchild left the session"
    );

    assert_eq!(
        app.shutdown(json!({"model": "wrapped"})).await.status(),
        200
    );
    assert!(
        !process_exists(pid),
        "the wrapper is gone when shutdown returns"
    );
    assert!(
        !process_exists(grandchild),
        "the setsid grandchild is gone when shutdown returns"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_hung_status_never_delays_a_command_or_a_page() {
    let backend = spawn_backend(Behaviour {
        status_latency: Duration::from_secs(30),
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&format!(
        "{}{}",
        settings("status_timeout = \"5s\"\n"),
        external_model("hung", &backend.address)
    ))
    .await;
    app.wait_for_lifecycle("hung", "running", START).await;
    // Let the observer get stuck in a Status call.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        backend
            .status_calls
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(app.get("/api/backends").await.status(), 200);
        assert_eq!(app.get("/").await.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    let started = Instant::now();
    let response = app.shutdown(json!({"model": "hung", "force": true})).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the forced stop did not wait for Status: {:?}",
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_external_pid_that_is_not_running_is_reported_as_such() {
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let pid = gone.id();
    let backend = spawn_backend(Behaviour {
        status_unimplemented: true,
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&format!(
        "{}[[models]]\nname = \"ext\"\naddress = {:?}\npid = {pid}\n",
        settings(""),
        backend.address
    ))
    .await;
    app.wait_for_lifecycle("ext", "running", START).await;
    let body = expect_error(app.monitor("ext").await, 500).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("pid {pid} is not running")),
        "{message}"
    );
    let observation = app.wait_for_observation("ext").await;
    assert!(observation["process"].is_null(), "{observation}");
    assert_eq!(
        observation["process_error"],
        format!("pid {pid} is not running")
    );
    app.stop().await;
}

/// Reads a `grpc-timeout` value (e.g. `1500m`) as a duration.
fn grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().expect("digits");
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        other => panic!("unit {other}"),
    }
}

#[tokio::test]
async fn every_call_sends_its_deadline_as_grpc_timeout() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&format!(
        "{}{}",
        settings("status_timeout = \"1500ms\"\nfree_timeout = \"4s\"\n"),
        external_model("ext", &backend.address)
    ))
    .await;
    app.wait_for_lifecycle("ext", "running", START).await;
    assert_eq!(app.monitor("ext").await.status(), 200);
    assert_eq!(app.shutdown(json!({"model": "ext"})).await.status(), 200);
    let deadlines = backend.deadlines.lock().unwrap().clone();
    assert!(deadlines.len() >= 3, "{deadlines:?}");
    assert!(deadlines.iter().all(|d| d != "none"), "{deadlines:?}");
    let longest = deadlines.iter().map(|d| grpc_timeout(d)).max().unwrap();
    assert!(
        longest > Duration::from_millis(3500) && longest <= Duration::from_secs(4),
        "Free's deadline travels: {deadlines:?}"
    );
    let status = grpc_timeout(&deadlines[1]);
    assert!(
        status > Duration::from_millis(1000) && status <= Duration::from_millis(1500),
        "{deadlines:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_status_error_is_shown_with_its_kind_and_message() {
    let backend = spawn_backend(Behaviour {
        status_error: Some(tonic::Code::Internal),
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&format!(
        "{}[[models]]\nname = \"ext\"\naddress = {:?}\npid = {}\n",
        settings(""),
        backend.address,
        std::process::id()
    ))
    .await;
    app.wait_for_lifecycle("ext", "running", START).await;
    let observation = app.wait_for_observation("ext").await;
    assert_eq!(
        observation["status_error"]["kind"], "error",
        "{observation}"
    );
    let message = observation["status_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Internal") && message.contains("model state is corrupt"),
        "{message}"
    );
    assert!(
        observation["process"]["memory_info"]["rss"]
            .as_u64()
            .unwrap()
            > 0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_log_keeps_its_last_500_lines() {
    let app = spawn_app(&format!(
        "{}[[models]]\nname = \"chatty\"\ncommand = [\"sh\", \"-c\", \"for i in $(seq 1 700); do echo line $i >&2; done; exit 1\"]\n",
        settings("")
    ))
    .await;
    app.wait_for_lifecycle("chatty", "failed", START).await;
    let detail: Value = app.get("/api/backends/chatty").await.json().await.unwrap();
    let logs = detail["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 500);
    assert_eq!(logs[0]["text"], "line 201");
    assert_eq!(logs[499]["text"], "line 700");

    // Pollers ask only for what is new.
    let page: Value = app
        .get("/api/backends/chatty/logs")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["lines"].as_array().unwrap().len(), 500);
    assert_eq!(
        (page["first"].as_u64(), page["next"].as_u64()),
        (Some(201), Some(700))
    );
    let page: Value = app
        .get("/api/backends/chatty/logs?since=690")
        .await
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 10);
    assert_eq!((texts[0], texts[9]), ("line 691", "line 700"));
    let page: Value = app
        .get("/api/backends/chatty/logs?since=700")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["lines"], json!([]));
    assert_eq!(page["next"], 700);
    expect_error(app.get("/api/backends/chatty/logs?since=soon").await, 400).await;
    expect_error(app.get("/api/backends/nobody/logs").await, 404).await;
    app.stop().await;
}
