//! The command-line client (`ps`, `stop`, `start`): the real binary, run as a subprocess against
//! a real server, with its exit codes and messages.

use crate::helpers::*;
use app::snapshot::PanelSnapshot;
use proto::State;
use serde_json::Value;
use std::time::Duration;

const START: Duration = Duration::from_secs(20);
/// No client run may take longer than this.
const CLI_LIMIT: Duration = Duration::from_secs(60);

/// What a client run printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `backend-monitor <args>` against `url`, with `key` in `BACKEND_MONITOR_API_KEY`; killed
/// if it outlives [`CLI_LIMIT`].
async fn cli(url: &str, key: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(SERVER_BINARY);
    command
        .args(args)
        .env("BACKEND_MONITOR_URL", url)
        .env_remove("BACKEND_MONITOR_API_KEY")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(key) = key {
        command.env("BACKEND_MONITOR_API_KEY", key);
    }
    let output = tokio::time::timeout(CLI_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`backend-monitor {args:?}` did not finish in {CLI_LIMIT:?}"))
        .expect("the binary runs");
    Run {
        code: output
            .status
            .code()
            .expect("exited, not killed by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The table line of `model` in `ps` output, split into words.
fn table_row(stdout: &str, model: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|words| words.first().is_some_and(|w| w == model))
        .unwrap_or_else(|| panic!("no row for {model} in:\n{stdout}"))
}

/// The model's `/api/backends` entry once it has been observed.
async fn observed(app: &TestApp, model: &str) -> Value {
    app.wait_for_observation(model).await;
    app.backend(model).await
}

#[tokio::test]
async fn ps_lists_each_model_with_its_lifecycle_state_and_pid() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&format!(
        "{}{}",
        demo_model("chat", &[], &["weights_mib:4"]),
        external_model("remote", &backend.address)
    ))
    .await;
    app.wait_for_lifecycle("chat", "running", START).await;
    app.wait_for_lifecycle("remote", "running", START).await;
    let chat = observed(&app, "chat").await;
    observed(&app, "remote").await;

    let run = cli(&app.base, None, &["ps"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let header: Vec<&str> = run
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "LIFECYCLE",
            "STATE",
            "MEMORY",
            "VRAM",
            "CPU",
            "PID",
            "UPTIME",
            "IDLE-LEFT"
        ]
    );
    assert!(!run.stdout.contains('\x1b'), "no colour into a pipe");
    let row = table_row(&run.stdout, "chat");
    assert_eq!(row[1], "running", "{row:?}");
    let pid = chat["pid"]
        .as_u64()
        .expect("managed backend has a pid")
        .to_string();
    assert!(row.contains(&pid), "{row:?} lacks pid {pid}");
    assert!(row.iter().any(|w| w == "MiB"), "memory in MiB: {row:?}");
    let row = table_row(&run.stdout, "remote");
    // The scripted backend reports 3000 bytes; no pid is known, so no VRAM or CPU either.
    assert_eq!(
        row[1..8],
        ["running", "Ready", "2.9", "KiB", "-", "-", "-"],
        "{row:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn ps_json_is_the_api_backends_snapshot() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external_model("remote", &backend.address)).await;
    app.wait_for_lifecycle("remote", "running", START).await;

    let run = cli(&app.base, None, &["ps", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let printed: PanelSnapshot =
        serde_json::from_str(&run.stdout).expect("ps --json is a snapshot");
    let api: PanelSnapshot = app
        .get("/api/backends")
        .await
        .json()
        .await
        .expect("snapshot");
    let names = |s: &PanelSnapshot| {
        s.backends
            .iter()
            .map(|b| (b.name.clone(), b.lifecycle, b.pid, b.address.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&printed), names(&api));
    app.stop().await;
}

#[tokio::test]
async fn stop_stops_a_model_and_start_brings_it_back() {
    let app = spawn_app(&demo_model("chat", &[], &["weights_mib:4"])).await;
    let before = app.wait_for_lifecycle("chat", "running", START).await;

    let run = cli(&app.base, None, &["stop", "chat"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("chat") && run.stdout.contains("stopped"),
        "{}",
        run.stdout
    );
    assert_eq!(app.backend("chat").await["lifecycle"], "stopped");

    let again = cli(&app.base, None, &["stop", "chat"]).await;
    assert_eq!(again.code, 8, "stopping a stopped model: {}", again.stderr);

    let run = cli(&app.base, None, &["start", "chat", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let answer: Value = serde_json::from_str(&run.stdout).expect("start --json prints JSON");
    assert_eq!(answer["message"], "model started");
    let after = app.backend("chat").await;
    assert_eq!(after["lifecycle"], "running");
    assert_ne!(after["pid"], before["pid"]);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_model_exits_with_code_6_and_names_it() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app(&external_model("remote", &backend.address)).await;
    for command in ["stop", "start"] {
        let run = cli(&app.base, None, &[command, "no-such-model"]).await;
        assert_eq!(run.code, 6, "{command}: {}", run.stderr);
        assert!(run.stderr.contains("no-such-model"), "{}", run.stderr);
    }
    let run = cli(&app.base, None, &["stop", "no-such-model", "--json"]).await;
    let envelope: Value = serde_json::from_str(&run.stdout).expect("the server's JSON answer");
    assert_eq!(envelope["error"]["type"], "model_not_found");
    assert_eq!(run.code, 6);
    app.stop().await;
}

#[tokio::test]
async fn a_server_that_is_down_exits_with_code_3_naming_the_url() {
    // A port that was free a moment ago: nothing listens there.
    let port = server::supervisor::free_port().expect("free port");
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        &["ps"][..],
        &["stop", "chat"],
        &["start", "chat"],
        &["stop", "--all"],
    ] {
        let run = cli(&url, None, args).await;
        assert_eq!(run.code, 3, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(&url), "{args:?}: {}", run.stderr);
    }
}

#[tokio::test]
async fn keys_are_sent_and_missing_wrong_or_read_only_keys_get_their_own_codes() {
    let backend = spawn_backend(Behaviour::default()).await;
    let app = spawn_app_with_keys(
        &external_model("remote", &backend.address),
        &["admin-key-1"],
        &["read-key-1"],
    )
    .await;
    app.wait_for_lifecycle_with_key("remote", "running", "admin-key-1")
        .await;

    let run = cli(&app.base, None, &["ps"]).await;
    assert_eq!(run.code, 4, "no key: {}", run.stderr);
    assert!(
        run.stderr.contains("BACKEND_MONITOR_API_KEY"),
        "{}",
        run.stderr
    );
    let run = cli(&app.base, Some("wrong-key"), &["ps"]).await;
    assert_eq!(run.code, 4, "wrong key: {}", run.stderr);

    let run = cli(&app.base, Some("read-key-1"), &["ps"]).await;
    assert_eq!(run.code, 0, "a read key may list: {}", run.stderr);
    let run = cli(&app.base, Some("read-key-1"), &["stop", "remote"]).await;
    assert_eq!(run.code, 5, "a read key may not stop: {}", run.stderr);
    app.wait_for_lifecycle_with_key("remote", "running", "admin-key-1")
        .await;

    let run = cli(&app.base, Some("admin-key-1"), &["stop", "remote"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    app.wait_for_lifecycle_with_key("remote", "stopped", "admin-key-1")
        .await;
    app.stop().await;
}

#[tokio::test]
async fn stop_all_stops_every_running_backend_and_fails_for_a_busy_one_unless_forced() {
    let idle = spawn_backend(Behaviour::default()).await;
    let busy = spawn_backend(Behaviour {
        state: State::Busy,
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&format!(
        "{}{}{}",
        demo_model("chat", &[], &["weights_mib:4"]),
        external_model("idle", &idle.address),
        external_model("busy", &busy.address)
    ))
    .await;
    for model in ["chat", "idle", "busy"] {
        app.wait_for_lifecycle(model, "running", START).await;
    }

    // busy_wait is 1 s in the test settings: the busy backend is refused, the others stop.
    let run = cli(&app.base, None, &["stop", "--all"]).await;
    assert_eq!(run.code, 7, "{}\n{}", run.stdout, run.stderr);
    for model in ["chat", "idle"] {
        assert!(
            run.stdout.contains(&format!("{model}: model stopped")),
            "{}",
            run.stdout
        );
        assert_eq!(app.backend(model).await["lifecycle"], "stopped");
    }
    assert!(
        run.stderr.contains("busy") && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    assert_eq!(app.backend("busy").await["lifecycle"], "running");

    let run = cli(&app.base, None, &["stop", "--all", "--force", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("a JSON report");
    assert_eq!(report[0]["model"], "busy");
    assert_eq!(report[0]["ok"], true);
    assert_eq!(report[0]["response"]["message"], "model stopped");
    assert_eq!(app.backend("busy").await["lifecycle"], "stopped");

    let run = cli(&app.base, None, &["stop", "--all"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("no backend is running"),
        "{}",
        run.stdout
    );
    app.stop().await;
}

#[tokio::test]
async fn the_subcommands_are_listed_in_help_and_the_shim_is_not() {
    let run = cli("http://127.0.0.1:1", None, &["--help"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for command in ["ps", "stop", "start"] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(command)),
            "{command} missing from:\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("__shim"), "{}", run.stdout);
    let run = cli("http://127.0.0.1:1", None, &["stop"]).await;
    assert_eq!(run.code, 2, "stop needs a model or --all: {}", run.stderr);
}

#[tokio::test]
async fn a_busy_backend_exits_with_code_7_suggesting_force_and_stop_force_stops_it() {
    let busy = spawn_backend(Behaviour {
        state: State::Busy,
        ..Behaviour::default()
    })
    .await;
    let app = spawn_app(&external_model("busy", &busy.address)).await;
    app.wait_for_lifecycle("busy", "running", START).await;

    let run = cli(&app.base, None, &["stop", "busy"]).await;
    assert_eq!(run.code, 7, "{}", run.stderr);
    assert!(run.stderr.contains("stop --force busy"), "{}", run.stderr);
    assert_eq!(app.backend("busy").await["lifecycle"], "running");

    let run = cli(&app.base, None, &["stop", "--force", "busy"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(app.backend("busy").await["lifecycle"], "stopped");
    app.stop().await;
}
