//! Supervision over time: restarts after crashes (`restart = "on-failure"`) and idle auto-stop.

use crate::helpers::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(20);

fn settings(extra: &str) -> String {
    format!(
        "[settings]\nlisten = \"127.0.0.1:0\"\nhealth_interval = \"100ms\"\nstop_grace = \"3s\"\nbusy_wait = \"1s\"\npoll_interval = \"100ms\"\n{extra}"
    )
}

/// The demo model with `restart = "on-failure"` (and any further keys).
fn restarting_demo(name: &str, args: &[&str], extra: &str) -> String {
    format!(
        "{}restart = \"on-failure\"\n{extra}",
        demo_model(name, args, &["weights_mib:1"])
    )
}

/// Waits until `check` holds for the model's `/api/backends` entry.
async fn wait_until(
    app: &TestApp,
    model: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let entry = app.backend(model).await;
        if check(&entry) {
            return entry;
        }
        assert!(start.elapsed() < limit, "{model} never got there: {entry}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_crashed_backend_is_restarted_once_its_tree_is_gone() {
    let app = spawn_app(&format!(
        "{}{}",
        settings("restart_backoff = \"300ms\"\n"),
        restarting_demo("chat", &[], "")
    ))
    .await;
    let first = app.wait_for_lifecycle("chat", "running", START).await;
    let pid = first["pid"].as_u64().unwrap() as u32;
    assert_eq!(first["restarts"], 0);
    let killed = Instant::now();
    send_signal(pid, Signal::SIGKILL);

    let waiting = wait_until(&app, "chat", START, |e| e["lifecycle"] == "failed").await;
    assert!(
        !process_exists(pid),
        "the old process is gone before any restart"
    );
    assert_eq!(waiting["restart_in_secs"], 1, "{waiting}");
    assert_eq!(waiting["last_exit"], "killed by signal 9");
    let page = app.get("/").await.text().await.unwrap();
    assert!(
        page.contains("Restarting in 1s"),
        "the panel shows the countdown"
    );

    let second = wait_until(&app, "chat", START, |e| {
        e["lifecycle"] == "running" && e["pid"].as_u64() != Some(u64::from(pid))
    })
    .await;
    assert!(
        killed.elapsed() >= Duration::from_millis(300),
        "waited the backoff"
    );
    assert_eq!(second["restarts"], 1);
    assert_eq!(second["last_exit"], "killed by signal 9");
    assert!(
        second["previous_run_tail"]
            .to_string()
            .contains("demo-backend listening"),
        "{second}"
    );
    assert_eq!(app.monitor("chat").await.status(), 200);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("backend_monitor_restarts_total{model=\"chat\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_backend_that_keeps_crashing_ends_failed_after_the_limit_with_growing_pauses() {
    let app = spawn_app(&format!(
        "{}[[models]]\nname = \"doomed\"\ncommand = [\"sh\", \"-c\", \"echo 'cannot map model' >&2; exit 3\"]\nrestart = \"on-failure\"\n",
        settings("restart_backoff = \"100ms\"\nrestart_limit = 3\n")
    ))
    .await;
    let started = Instant::now();
    let entry = wait_until(&app, "doomed", START, |e| {
        e["lifecycle"] == "failed" && e["restart_in_secs"].is_null() && e["restarts"] == 3
    })
    .await;
    // Pauses of 100, 200 and 400 ms before the three restarts.
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let error = entry["last_error"].as_str().unwrap();
    assert!(
        error.contains("gave up after 3 restarts") && error.contains("exit code 3"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        app.backend("doomed").await["restarts"],
        3,
        "no fourth restart"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_backend_stopped_on_purpose_is_never_restarted() {
    let app = spawn_app(&format!(
        "{}{}",
        settings("restart_backoff = \"100ms\"\n"),
        restarting_demo("chat", &[], "")
    ))
    .await;
    app.wait_for_lifecycle("chat", "running", START).await;
    assert_eq!(app.shutdown(json!({"model": "chat"})).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entry = app.backend("chat").await;
    assert_eq!(entry["lifecycle"], "stopped");
    assert_eq!(entry["restarts"], 0);
    app.stop().await;
}

#[tokio::test]
async fn a_shutdown_cancels_a_pending_restart() {
    let app = spawn_app(&format!(
        "{}{}",
        settings("restart_backoff = \"1s\"\n"),
        restarting_demo("chat", &[], "")
    ))
    .await;
    let pid = app.wait_for_lifecycle("chat", "running", START).await["pid"]
        .as_u64()
        .unwrap() as u32;
    send_signal(pid, Signal::SIGKILL);
    wait_until(&app, "chat", START, |e| !e["restart_in_secs"].is_null()).await;
    assert_eq!(app.shutdown(json!({"model": "chat"})).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let entry = app.backend("chat").await;
    assert_eq!(entry["lifecycle"], "stopped", "{entry}");
    assert_eq!(entry["restarts"], 0);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_backend_is_stopped_after_its_idle_timeout_and_a_busy_one_is_not() {
    let app = spawn_app(&format!(
        "{}{}{}",
        settings(""),
        restarting_demo("idle", &[], "idle_timeout = \"1s\"\n"),
        restarting_demo("busy", &["--report-busy"], "idle_timeout = \"1s\"\n")
    ))
    .await;
    let running = app.wait_for_lifecycle("idle", "running", START).await;
    let pid = running["pid"].as_u64().unwrap() as u32;
    let left = running["idle_left_secs"].as_u64().unwrap();
    assert!(left <= 1, "{running}");
    let page = app.get("/").await.text().await.unwrap();
    assert!(
        page.contains("idle stop in"),
        "the panel shows the countdown"
    );
    let started = Instant::now();
    app.wait_for_lifecycle("idle", "stopped", Duration::from_secs(10))
        .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!process_exists(pid));

    // The busy one has been running as long, and reports BUSY on every observation.
    let busy = app.wait_for_lifecycle("busy", "running", START).await;
    assert!(busy["last_busy_unix_ms"].as_u64().is_some(), "{busy}");
    let activity = &busy["activity"];
    assert_eq!(activity["busy_now"], true, "{busy}");
    assert_eq!(activity["busy_ratio"], 1.0, "{busy}");
    let buckets = activity["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 30);
    assert_eq!(buckets[29], 100, "the newest slice is all BUSY: {busy}");
    assert!(buckets[0].is_null(), "nothing was observed 5 minutes ago");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let busy = app.backend("busy").await;
    assert_eq!(busy["lifecycle"], "running", "{busy}");
    assert_eq!(busy["idle_left_secs"], 1, "{busy}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("backend_monitor_idle_stop_seconds{model=\"busy\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}
