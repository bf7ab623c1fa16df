//! The real `backend-monitor` binary: configuration errors, and no backend outliving it.

use crate::helpers::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Three demo models; the third is a wrapper script with a `setsid` grandchild, whose pid it
/// writes to `pid_file`.
fn three_demo_models(pid_file: &std::path::Path) -> tempfile::NamedTempFile {
    config_file(&format!(
        "[settings]\nhealth_interval = \"100ms\"\n{}{}{}",
        demo_model("a", &[], &["weights_mib:1"]),
        demo_model("b", &["--status-unimplemented"], &["weights_mib:1"]),
        escaping_demo_model("c", pid_file)
    ))
}

fn signal(child: &Child, signal: Signal) {
    send_signal(child.id(), signal);
}

async fn wait_not_running(pids: &[u32], limit: Duration) -> bool {
    let start = Instant::now();
    while pids.iter().any(|p| running(*p)) {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[tokio::test]
async fn sigterm_stops_the_server_and_every_backend_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    let config = three_demo_models(&pid_file);
    let mut server = start_server(&config).await;
    let mut pids = running_pids(&server).await;
    pids.push(read_pid_file(&pid_file).await);
    signal(&server.child, Signal::SIGTERM);
    let status = server.child.wait().expect("server exits");
    assert!(status.success(), "{status}");
    assert!(
        pids.iter().all(|p| !running(*p)),
        "backends left running: {pids:?}"
    );
}

#[tokio::test]
async fn backends_and_their_escaped_grandchildren_die_with_a_killed_server() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild.pid");
    let config = three_demo_models(&pid_file);
    let mut server = start_server(&config).await;
    let mut pids = running_pids(&server).await;
    pids.push(read_pid_file(&pid_file).await);
    signal(&server.child, Signal::SIGKILL);
    let _ = server.child.wait();
    assert!(
        wait_not_running(&pids, Duration::from_secs(5)).await,
        "backends outlived a SIGKILLed server: {pids:?}"
    );
}

#[test]
fn an_invalid_config_fails_at_start_up_naming_the_file_and_entry() {
    let config = config_file(
        "[[models]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[models]]\nname = \"a\"\ncommand = [\"x\"]\n",
    );
    let output = Command::new(SERVER_BINARY)
        .arg("--config")
        .arg(config.path())
        .arg("--addr")
        .arg("127.0.0.1:0")
        .output()
        .expect("server runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&config.path().display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("models[1] (a)") && stderr.contains("duplicate"),
        "{stderr}"
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let config = config_file("");
    let mut server = Command::new(SERVER_BINARY)
        .arg("--config")
        .arg(config.path())
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--log-format")
        .arg("json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let stdout = server.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a log line within 10 s");
    let _ = server.kill();
    let _ = server.wait();
    let entry: Value = serde_json::from_str(&line).expect("the line is JSON");
    assert_eq!(entry["level"], "INFO", "{entry}");
    assert!(
        entry["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("watching 0 model(s)")),
        "{entry}"
    );
}
