//! Child processes of managed backends: starting them the way LocalAI does, capturing their
//! output, and stopping them (SIGTERM to the process group, then SIGKILL) with nothing left behind.

use crate::config::ManagedSpec;
use crate::logs::LogBuffer;
use app::snapshot::LogStream;
use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::watch;

/// How long to wait for the output readers after the process exits (grandchildren may keep the
/// pipes open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Most bytes read for one output line.
const MAX_LINE_READ: u64 = 64 * 1024;
/// How long to wait for the kernel to deliver SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitInfo {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// Its status could not be collected.
    Unknown,
}

impl From<std::io::Result<ExitStatus>> for ExitInfo {
    fn from(status: std::io::Result<ExitStatus>) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match status {
            Ok(s) => s
                .code()
                .map(ExitInfo::Code)
                .or_else(|| s.signal().map(ExitInfo::Signal))
                .unwrap_or(ExitInfo::Unknown),
            Err(_) => ExitInfo::Unknown,
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Code(code) => write!(f, "exit code {code}"),
            ExitInfo::Signal(signal) => write!(f, "killed by signal {signal}"),
            ExitInfo::Unknown => f.write_str("unknown exit status"),
        }
    }
}

/// A running (or exited, not yet forgotten) child process; its exit is collected in the
/// background, so it never stays a zombie.
#[derive(Clone, Debug)]
pub struct ManagedProcess {
    pid: u32,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl ManagedProcess {
    /// Process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How it ended, if it has.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// Waits until the process has exited and been reaped.
    pub async fn exited(&self) -> ExitInfo {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(info) => info.unwrap_or(ExitInfo::Unknown),
            Err(_) => ExitInfo::Unknown,
        }
    }

    /// SIGTERM to the process group, up to `grace` to exit, then SIGKILL; waits until reaped.
    pub async fn terminate(&self, grace: Duration) -> ExitInfo {
        signal_group(self.pid, libc::SIGTERM);
        let info = match tokio::time::timeout(grace, self.exited()).await {
            Ok(info) => info,
            Err(_) => {
                tracing::warn!(
                    pid = self.pid,
                    ?grace,
                    "backend ignored SIGTERM; sending SIGKILL"
                );
                signal_group(self.pid, libc::SIGKILL);
                tokio::time::timeout(KILL_WAIT, self.exited())
                    .await
                    .unwrap_or(ExitInfo::Unknown)
            }
        };
        // Workers the backend forked into its group must not outlive it.
        signal_group(self.pid, libc::SIGKILL);
        info
    }
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: killpg only sends a signal; an absent group yields ESRCH, which is fine here.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// A free TCP port on 127.0.0.1 (as LocalAI picks one for each backend).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Starts `spec.command --addr <address>` in its own process group, with stdout and stderr
/// captured into `logs`. The child gets SIGKILL if backend-monitor dies.
///
/// Must be called from a thread that lives as long as the server (a runtime worker, not a
/// blocking-pool thread): Linux's parent-death signal follows the spawning thread.
pub fn spawn(
    name: &str,
    spec: &ManagedSpec,
    address: &str,
    logs: Arc<LogBuffer>,
) -> std::io::Result<ManagedProcess> {
    let Some((program, args)) = spec.command.split_first() else {
        return Err(std::io::Error::other("empty command"));
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .arg("--addr")
        .arg(address)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &spec.workdir {
        command.current_dir(dir);
    }
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("backend-monitor exited during spawn"));
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("child exited before its pid was read"))?;
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(capture(
            name.to_string(),
            out,
            LogStream::Stdout,
            logs.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(capture(
            name.to_string(),
            err,
            LogStream::Stderr,
            logs,
        )));
    }
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let status = ExitInfo::from(child.wait().await);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            for reader in readers {
                let _ = reader.await;
            }
        })
        .await;
        let _ = tx.send(Some(status));
    });
    Ok(ManagedProcess { pid, exit: rx })
}

async fn capture(
    name: String,
    stream: impl AsyncRead + Unpin,
    kind: LogStream,
    logs: Arc<LogBuffer>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Bounded, so a backend writing without newlines cannot make one huge allocation;
        // a longer line arrives in pieces.
        let mut limited = (&mut reader).take(MAX_LINE_READ);
        match limited.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                tracing::debug!(model = %name, stream = ?kind, "{line}");
                logs.push(kind, line);
            }
        }
    }
}
