//! Memory you can trust: the measured RSS of every backend's process tree whatever `Status`
//! says, a reported total that looks like virtual size flagged, no GPU fields without a driver,
//! and a shutdown that says what it released.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);
const MIB: u64 = 1024 * 1024;

/// Waits until the model's observation has a measurement satisfying `ready`; returns the entry.
async fn measured_until(app: &TestApp, model: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let entry = app.backend(model).await;
        if ready(&entry["observation"]["measured"]) {
            return entry;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{model} never measured so: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/api/backends` once the host view has its first sample (every 2 s).
async fn host_sampled(app: &TestApp) -> Value {
    let start = Instant::now();
    loop {
        let all: Value = app.get("/api/backends").await.json().await.expect("json");
        if all["host"].is_object() {
            return all;
        }
        assert!(start.elapsed() < LIMIT, "the host is never sampled: {all}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_backend_that_reports_no_memory_shows_its_measured_rss() {
    let app = spawn_app(&demo_model(
        "silent",
        &["--report-no-memory"],
        &["weights_mib:64"],
    ))
    .await;
    app.wait_for_lifecycle("silent", "running", LIMIT).await;
    let entry = measured_until(&app, "silent", |m| m["rss"].as_u64() >= Some(64 * MIB)).await;
    let observation = &entry["observation"];
    assert_eq!(observation["status"]["state"], "ready", "{entry}");
    assert!(observation["status"]["memory"].is_null(), "{entry}");
    let processes = observation["measured"]["processes"]
        .as_array()
        .expect("processes");
    assert_eq!(processes.len(), 1, "{entry}");
    assert_eq!(processes[0]["pid"], entry["pid"]);
    assert_eq!(processes[0]["name"], "demo-backend");
    // The host's "backends hold" adds up measured memory.
    let all = host_sampled(&app).await;
    assert!(
        all["host"]["backends_memory"].as_u64() >= Some(64 * MIB),
        "{all}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_backends_workers_count_toward_its_measured_memory() {
    let app = spawn_app(&demo_model(
        "workers",
        &["--worker-mib", "48"],
        &["weights_mib:8"],
    ))
    .await;
    app.wait_for_lifecycle("workers", "running", LIMIT).await;
    let entry = measured_until(&app, "workers", |m| {
        m["processes"].as_array().map(Vec::len) == Some(2)
            && m["processes"][1]["rss"].as_u64() >= Some(48 * MIB)
    })
    .await;
    let measured = &entry["observation"]["measured"];
    let (backend, worker) = (&measured["processes"][0], &measured["processes"][1]);
    assert_eq!(backend["pid"], entry["pid"], "the backend comes first");
    assert_ne!(worker["pid"], entry["pid"]);
    let sum = backend["rss"].as_u64().expect("rss") + worker["rss"].as_u64().expect("rss");
    assert_eq!(measured["rss"].as_u64(), Some(sum));
    // The process fallback of LocalAI's endpoint describes the backend's own process only.
    assert!(
        entry["observation"]["process"]["memory_info"]["rss"].as_u64() < Some(sum),
        "{entry}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_reported_total_that_looks_like_virtual_size_is_flagged() {
    let app = spawn_app(&format!(
        "{}{}",
        demo_model("go-style", &["--report-virtual-total"], &["weights_mib:8"]),
        demo_model("honest", &[], &["weights_mib:8"]),
    ))
    .await;
    for model in ["go-style", "honest"] {
        app.wait_for_lifecycle(model, "running", LIMIT).await;
        measured_until(&app, model, |m| m["rss"].as_u64() > Some(0)).await;
    }
    let start = Instant::now();
    let go = loop {
        let entry = app.backend("go-style").await;
        if entry["observation"]["status"]["memory"].is_object() {
            break entry;
        }
        assert!(start.elapsed() < LIMIT, "no reported memory: {entry}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reported = go["observation"]["status"]["memory"]["total"]
        .as_u64()
        .expect("total");
    let measured = go["observation"]["measured"]["rss"].as_u64().expect("rss");
    assert!(reported > 2 * measured, "{go}");
    assert_eq!(go["reported_looks_virtual"], true, "{go}");
    assert!(
        go["observation"]["status"]["memory"]["breakdown"]["gopsutil-RSS"].is_u64(),
        "{go}"
    );
    let honest = app.backend("honest").await;
    assert!(honest.get("reported_looks_virtual").is_none(), "{honest}");
    app.stop().await;
}

#[tokio::test]
async fn gpu_fields_appear_exactly_when_an_nvidia_driver_answers() {
    let driver = server::gpu::Gpus::probe().present();
    let app = spawn_app(&format!(
        "{}{}",
        demo_model("demo", &[], &["weights_mib:4"]),
        demo_model("legacy", &["--status-unimplemented"], &["weights_mib:4"]),
    ))
    .await;
    for model in ["demo", "legacy"] {
        app.wait_for_lifecycle(model, "running", LIMIT).await;
        measured_until(&app, model, |m| m["rss"].as_u64() > Some(0)).await;
    }
    let all = host_sampled(&app).await;
    let fallback: Value = app.monitor("legacy").await.json().await.expect("json");
    let stopped: Value = app
        .shutdown(json!({ "model": "demo" }))
        .await
        .json()
        .await
        .expect("json");
    if driver {
        assert!(all["host"]["gpus"].is_array(), "{all}");
        assert!(stopped["freed"]["gpus"].is_array(), "{stopped}");
    } else {
        // Never an error and never a null: the fields are simply absent.
        assert!(all["host"].get("gpus").is_none(), "{all}");
        for backend in all["backends"].as_array().expect("backends") {
            assert!(
                backend["observation"]["measured"]
                    .get("gpu_memory")
                    .is_none()
            );
        }
        assert!(fallback.get("gpu_memory").is_none(), "{fallback}");
        assert!(
            stopped["freed"].get("gpu_memory_before").is_none(),
            "{stopped}"
        );
        assert!(stopped["freed"].get("gpus").is_none(), "{stopped}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_shutdown_reports_what_it_freed() {
    let app = spawn_app(&demo_model(
        "big",
        &["--worker-mib", "16"],
        &["weights_mib:64", "kv_cache_mib:16"],
    ))
    .await;
    app.wait_for_lifecycle("big", "running", LIMIT).await;
    let entry = measured_until(&app, "big", |m| {
        m["processes"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let pids: Vec<u64> = entry["observation"]["measured"]["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();

    let response = app.shutdown(json!({ "model": "big" })).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["message"], "model stopped", "LocalAI's field stays");
    let freed = &body["freed"];
    // Both processes, with what they allocated (64 + 16 + 16 MiB) and more.
    assert!(freed["rss_before"].as_u64() >= Some(96 * MIB), "{body}");
    assert_eq!(freed["rss_after"], 0, "{body}");
    assert!(freed.get("still_held").is_none(), "{body}");
    assert!(freed["host_available_before"].as_u64() > Some(0), "{body}");
    assert!(freed["host_available_after"].as_u64() > Some(0), "{body}");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} outlived the stop"
        );
    }
    // The panel's source keeps it while the model is stopped, and forgets it at the next start.
    let stopped = app.backend("big").await;
    assert_eq!(stopped["freed"], *freed);
    assert_eq!(app.load("big").await.status(), 200);
    assert!(app.backend("big").await.get("freed").is_none());
    app.stop().await;
}

#[tokio::test]
async fn a_process_that_outlives_the_stop_is_reported_as_still_holding_memory() {
    // An external backend whose process is not ours to stop: after `Free` it still runs, and
    // the report says what it still holds.
    let backend = spawn_backend(Behaviour::default()).await;
    let mut survivor = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("sleep runs");
    let pid = survivor.id();
    let app = spawn_app(&format!(
        "[[models]]\nname = \"remote\"\naddress = {:?}\npid = {pid}\n",
        backend.address
    ))
    .await;
    app.wait_for_lifecycle("remote", "running", LIMIT).await;
    measured_until(&app, "remote", |m| m["rss"].as_u64() > Some(0)).await;
    let body: Value = app
        .shutdown(json!({ "model": "remote" }))
        .await
        .json()
        .await
        .expect("json");
    let _ = survivor.kill();
    let _ = survivor.wait();
    let freed = &body["freed"];
    assert!(freed["rss_after"].as_u64() > Some(0), "{body}");
    let held = freed["still_held"][0].as_str().unwrap_or_default();
    assert!(
        held.starts_with(&format!("pid {pid} (sleep) still runs and holds ")),
        "{body}"
    );
    app.stop().await;
}
