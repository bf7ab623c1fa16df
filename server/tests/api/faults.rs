//! Faults: backends that die in the middle of a call, never answer, exit at once or lose their
//! port, and a server that cannot listen or read its configuration. Each time the API keeps
//! answering and says what happened.
//!
//! Covered elsewhere and not repeated here: a backend that never listens at all
//! (`lifecycle::a_backend_that_never_becomes_healthy_is_stopped_and_marked_failed`), one that
//! exits at start-up with an error message (`lifecycle::a_backend_that_exits_at_start_up_…`),
//! one that crashes while idle (`lifecycle::a_backend_that_crashes_while_running_…`), and a
//! duplicate entry in the config (`binary::an_invalid_config_fails_at_start_up_…`).
//!
//! An external backend that is killed and comes back on its port is observed again over a new
//! connection.

use crate::helpers::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a backend to come up (or fail to).
const START: Duration = Duration::from_secs(20);

fn settings(extra: &str) -> String {
    format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nhealth_interval = \"100ms\"\npoll_interval = \"200ms\"\nstop_grace = \"2s\"\n{extra}"
    )
}

/// The API still answers: the liveness route and the model list.
async fn assert_responsive(app: &TestApp) {
    let started = Instant::now();
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/api/backends").await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "slow: {:?}",
        started.elapsed()
    );
}

/// The parent of `pid` (for a managed backend: its shim).
fn parent_of(pid: u32) -> u32 {
    server::process::read_stat(pid)
        .expect("process exists")
        .ppid
}

/// Waits (up to `limit`) until the model's latest observation satisfies `done`.
async fn wait_for_observation_where(
    app: &TestApp,
    model: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let entry = app.backend(model).await;
        if done(&entry["observation"]) {
            return entry;
        }
        assert!(
            start.elapsed() < limit,
            "{model}: no such observation within {limit:?}: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_backend_killed_during_a_status_call_gets_a_500_at_once_and_is_marked_failed() {
    let app = spawn_app(&format!(
        "{}{}",
        settings("status_timeout = \"10s\"\n"),
        demo_model("slow", &["--status-delay", "5s"], &["weights_mib:1"])
    ))
    .await;
    let entry = app.wait_for_lifecycle("slow", "running", START).await;
    let pid = entry["pid"].as_u64().expect("a pid") as u32;

    let request = app.http.get(app.url("/backend/monitor?model=slow")).send();
    let call = tokio::spawn(request);
    // Let the call reach the backend, which then sits on it for 5 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    send_signal(pid, Signal::SIGKILL);
    let response = tokio::time::timeout(Duration::from_secs(4), call)
        .await
        .expect("the monitor call ends well before the backend's delay")
        .expect("task")
        .expect("response");
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "answered {:?} after the kill",
        killed.elapsed()
    );
    let body = expect_error(response, 500).await;
    assert_eq!(body["error"]["type"], "backend_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("did not answer Status")
            && message.contains(&format!("pid {pid} is not running")),
        "{message}"
    );

    let entry = app
        .wait_for_lifecycle("slow", "failed", Duration::from_secs(5))
        .await;
    let error = entry["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("signal 9"), "{entry}");
    assert!(entry["pid"].is_null(), "{entry}");
    let body = expect_error(app.monitor("slow").await, 500).await;
    assert_eq!(body["error"]["type"], "model_not_loaded", "{body}");
    assert_responsive(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_dead_backend_its_shim_has_not_reaped_yet_is_not_reported_with_zero_memory() {
    // Without Status, so /backend/monitor answers from the process metrics.
    let app = spawn_app(&format!(
        "{}{}",
        settings(""),
        demo_model("legacy", &["--status-unimplemented"], &["weights_mib:1"])
    ))
    .await;
    let entry = app.wait_for_lifecycle("legacy", "running", START).await;
    let pid = entry["pid"].as_u64().expect("a pid") as u32;
    assert_eq!(app.monitor("legacy").await.status(), 200);

    // A stopped shim cannot reap: the backend stays a zombie for as long as we like.
    let shim = parent_of(pid);
    send_signal(shim, Signal::SIGSTOP);
    send_signal(pid, Signal::SIGKILL);
    let start = Instant::now();
    while running(pid) {
        assert!(start.elapsed() < Duration::from_secs(5), "never died");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(process_exists(pid), "a zombie until its shim reaps it");

    let response = app.monitor("legacy").await;
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    send_signal(shim, Signal::SIGCONT);
    assert_eq!(
        status, 500,
        "a dead process has no memory to report: {body}"
    );
    assert_eq!(body["error"]["type"], "backend_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("pid {pid} is not running")),
        "{message}"
    );

    let entry = app
        .wait_for_lifecycle("legacy", "failed", Duration::from_secs(5))
        .await;
    assert!(
        entry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("signal 9")),
        "{entry}"
    );
    assert!(!process_exists(pid), "reaped once the shim runs again");
    app.stop().await;
}

#[tokio::test]
async fn a_backend_that_exits_right_after_start_without_a_word_is_failed_with_its_exit_code() {
    let app = spawn_app(&format!(
        "{}[[models]]\nname = \"quitter\"\ncommand = [\"/bin/false\"]\n",
        settings("")
    ))
    .await;
    let entry = app.wait_for_lifecycle("quitter", "failed", START).await;
    let error = entry["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("exit code 1"), "{entry}");
    assert_eq!(entry["stderr_tail"], json!([]), "{entry}");
    assert!(
        entry["pid"].is_null() && entry["address"].is_null(),
        "{entry}"
    );
    let body = expect_error(app.monitor("quitter").await, 500).await;
    assert_eq!(body["error"]["type"], "model_not_loaded", "{body}");
    assert_responsive(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_backend_that_takes_connections_but_never_answers_health_is_stopped_and_failed() {
    // Listens on the address it is given and accepts, but never speaks gRPC: a backend stuck
    // before it serves, with its port already open.
    let script = "use IO::Socket::INET; \
        my $s = IO::Socket::INET->new(LocalAddr => $ARGV[-1], Listen => 16, ReuseAddr => 1) \
        or die \"cannot listen: $!\"; my @held; $| = 1; while (my $c = $s->accept) { print STDERR \"accepted\\n\"; push @held, $c }";
    let app = spawn_app(&format!(
        "{}[[models]]\nname = \"mute\"\ncommand = [\"perl\", \"-e\", {script:?}, \"--\"]\n",
        settings("health_attempts = 3\n")
    ))
    .await;
    // While it is being checked, the API answers and shows the progress.
    let start = Instant::now();
    let pid = loop {
        let entry = app.backend("mute").await;
        if entry["lifecycle"] == "starting" && entry["pid"].is_u64() {
            break entry["pid"].as_u64().expect("a pid") as u32;
        }
        assert!(start.elapsed() < START, "never seen starting: {entry}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_responsive(&app).await;
    let entry = app.wait_for_lifecycle("mute", "failed", START).await;
    let error = entry["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Health") && error.contains("3 attempts"),
        "{entry}"
    );
    assert!(entry["pid"].is_null(), "{entry}");
    // Health did reach it: it took the connection and said nothing.
    assert!(
        entry["stderr_tail"]
            .as_array()
            .is_some_and(|lines| lines.contains(&json!("accepted"))),
        "{entry}"
    );
    assert!(!process_exists(pid), "the process was stopped and reaped");
    assert_responsive(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_backend_that_closes_its_port_but_keeps_running_is_watched_through_its_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flag = dir.path().join("close-port");
    // The backend's process runs the demo backend as a child; once `flag` exists it kills it
    // (the gRPC port closes) and goes on running as `sleep`, under the same pid.
    let script = "\"$@\" & child=$!; while [ ! -e \"$0\" ]; do sleep 0.05; done; \
        kill -9 $child; wait $child; exec sleep 300";
    let app = spawn_app(&format!(
        "{}[[models]]\nname = \"deaf\"\ncommand = [\"sh\", \"-c\", {script:?}, {:?}, {DEMO_BACKEND:?}]\nmodel = \"demo.gguf\"\noptions = [\"weights_mib:1\"]\n",
        settings("status_timeout = \"1s\"\n"),
        flag.display().to_string()
    ))
    .await;
    let entry = app.wait_for_lifecycle("deaf", "running", START).await;
    let pid = entry["pid"].as_u64().expect("a pid") as u32;
    wait_for_observation_where(&app, "deaf", Duration::from_secs(5), |o| {
        o["status"]["state"] == "ready"
    })
    .await;

    std::fs::write(&flag, b"").expect("flag written");
    let entry = wait_for_observation_where(&app, "deaf", Duration::from_secs(5), |o| {
        o["status_error"]["kind"] == "unreachable"
    })
    .await;
    assert_eq!(entry["lifecycle"], "running", "{entry}");
    assert_eq!(entry["pid"], pid, "{entry}");
    assert!(running(pid));
    let observation = &entry["observation"];
    assert!(observation["status"].is_null(), "{observation}");
    assert!(
        observation["process"]["memory_info"]["rss"]
            .as_u64()
            .is_some_and(|rss| rss > 0),
        "{observation}"
    );

    // /backend/monitor falls back to the OS's numbers for the live process.
    let response = app.monitor("deaf").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert!(body.get("state").is_none(), "{body}");
    assert!(
        body["memory_info"]["rss"].as_u64().is_some_and(|r| r > 0),
        "{body}"
    );
    assert_responsive(&app).await;

    // And it can still be stopped (Free cannot be delivered; the process is ended anyway).
    let response = app.shutdown(json!({"model": "deaf"})).await;
    assert_eq!(response.status(), 200);
    assert!(!process_exists(pid), "stopped and reaped");
    app.stop().await;
}

/// Starts the demo backend serving on `address`.
fn demo_backend_on(address: &str) -> std::process::Child {
    Command::new(DEMO_BACKEND)
        .args(["--addr", address])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo backend starts")
}

#[tokio::test]
async fn an_external_backend_that_restarts_on_its_port_is_observed_again() {
    let port = server::supervisor::free_port().expect("a free port");
    let address = format!("127.0.0.1:{port}");
    let mut backend = demo_backend_on(&address);
    let app = spawn_app(&format!(
        "{}{}",
        settings("status_timeout = \"1s\"\n"),
        external_model("ext", &address)
    ))
    .await;
    let answered = |o: &Value| o["status"]["state"].is_string();
    wait_for_observation_where(&app, "ext", START, answered).await;

    // Killed: the connection breaks, and calls find nobody listening.
    backend.kill().expect("backend killed");
    backend.wait().expect("backend reaped");
    let entry = wait_for_observation_where(&app, "ext", Duration::from_secs(5), |o| {
        o["status_error"]["kind"] == "unreachable"
    })
    .await;
    let down_at = entry["observation"]["at_unix_ms"].as_u64().expect("a time");

    // Back on the same port: a new connection is made and Status answers again.
    let mut backend = demo_backend_on(&address);
    let entry = wait_for_observation_where(&app, "ext", Duration::from_secs(10), |o| {
        answered(o) && o["at_unix_ms"].as_u64().is_some_and(|at| at > down_at)
    })
    .await;
    assert_eq!(entry["lifecycle"], "running", "{entry}");
    assert_eq!(app.monitor("ext").await.status(), 200);
    backend.kill().expect("backend killed");
    backend.wait().expect("backend reaped");
    app.stop().await;
}

/// Runs the real binary until it exits (killed after 10 s); returns its exit code and stderr.
fn run_server_until_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(SERVER_BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server runs");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr read");
    let status = status.unwrap_or_else(|| panic!("still running after 10 s: {stderr}"));
    (status.code(), stderr)
}

#[test]
fn a_listen_port_already_in_use_stops_the_start_with_the_address_and_a_nonzero_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let config = config_file("");
    let path = config.path().display().to_string();
    let (code, stderr) = run_server_until_exit(&["--config", &path, "--addr", &addr]);
    assert!(code.is_some_and(|c| c != 0), "exit code {code:?}: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn a_bad_key_in_a_model_entry_names_the_file_the_entry_and_the_key() {
    for (key, problem) in [
        ("colour = \"red\"", "colour"),
        ("context_size = \"big\"", "context_size"),
    ] {
        let config = config_file(&format!(
            "[[models]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\n[[models]]\nname = \"b\"\ncommand = [\"x\"]\n{key}\n"
        ));
        let path = config.path().display().to_string();
        let (code, stderr) = run_server_until_exit(&["--config", &path, "--addr", "127.0.0.1:0"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(&path), "the file: {stderr}");
        assert!(stderr.contains("models[1] (b)"), "the entry: {stderr}");
        assert!(stderr.contains(problem), "the key: {stderr}");
    }
}

#[test]
fn a_bad_setting_names_the_file_and_the_key() {
    let config = config_file("[settings]\nstatus_timeout = \"soon\"\n");
    let path = config.path().display().to_string();
    let (code, stderr) = run_server_until_exit(&["--config", &path, "--addr", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&path) && stderr.contains("status_timeout"),
        "{stderr}"
    );
}
