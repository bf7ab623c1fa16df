//! Child processes of managed backends: starting them the way LocalAI does (under the shim of
//! `shim.rs`), capturing their output, and stopping them (SIGTERM to the process tree, then
//! SIGKILL) with nothing left behind.

use crate::config::ManagedSpec;
use crate::logs::LogBuffer;
use crate::process::ProcessId;
use crate::shim;
use app::snapshot::LogStream;
use std::fmt;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
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
/// How long the shim may take to report the backend's pid.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Why a managed backend could not be started.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SpawnError {
    /// The supervising shim (backend-monitor itself) could not be run.
    #[error("cannot start the supervising shim {path}: {source}")]
    Shim {
        /// The program run as shim.
        path: String,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// The shim ran but could not start the command.
    #[error("{0}")]
    Command(String),
    /// The shim did not say what happened in time.
    #[error("the supervising shim did not report the backend's pid: {0}")]
    NoReport(String),
}

/// A running (or exited, not yet forgotten) managed backend, started under its shim. Its exit is
/// collected in the background, so it never stays a zombie; when the last handle is dropped
/// while it runs, the whole process tree is killed.
#[derive(Clone, Debug)]
pub struct ManagedProcess {
    id: ProcessId,
    shim_pid: u32,
    shim: Arc<Shim>,
}

/// The shim process: signalled only through its pidfd, which cannot hit a recycled pid.
#[derive(Debug)]
struct Shim {
    pidfd: OwnedFd,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl Shim {
    fn signal(&self, signal: shim::Signal) {
        if self.exit.borrow().is_some() {
            return;
        }
        match rustix::process::pidfd_send_signal(&self.pidfd, to_rustix(signal)) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => tracing::warn!("cannot send {signal} to a backend's shim: {e}"),
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.signal(shim::KILL);
    }
}

fn to_rustix(signal: shim::Signal) -> rustix::process::Signal {
    // Both name the same kernel signal numbers.
    rustix::process::Signal::from_named_raw(signal as i32).unwrap_or(rustix::process::Signal::KILL)
}

impl ManagedProcess {
    /// The backend's process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.id.pid
    }

    /// The backend's identity (pid and start time).
    pub fn id(&self) -> ProcessId {
        self.id
    }

    /// The pid of its shim, whose descendants (the backend, its workers and the orphans the
    /// shim adopted) are the backend's process tree.
    pub fn shim_pid(&self) -> u32 {
        self.shim_pid
    }

    /// How it ended, if it has (and every descendant is gone).
    pub fn exit_info(&self) -> Option<ExitInfo> {
        *self.shim.exit.borrow()
    }

    /// Waits until the backend and every descendant have exited and been reaped.
    pub async fn exited(&self) -> ExitInfo {
        let mut exit = self.shim.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(info) => info.unwrap_or(ExitInfo::Unknown),
            Err(_) => ExitInfo::Unknown,
        }
    }

    /// SIGTERM to the backend's process tree, up to `grace` to exit, then SIGKILL; returns once
    /// everything is reaped.
    pub async fn terminate(&self, grace: Duration) -> ExitInfo {
        self.shim.signal(shim::STOP);
        match tokio::time::timeout(grace, self.exited()).await {
            Ok(info) => info,
            Err(_) => {
                tracing::warn!(
                    pid = self.id.pid,
                    ?grace,
                    "backend ignored SIGTERM; sending SIGKILL"
                );
                self.shim.signal(shim::KILL);
                tokio::time::timeout(KILL_WAIT, self.exited())
                    .await
                    .unwrap_or(ExitInfo::Unknown)
            }
        }
    }
}

/// A free TCP port on 127.0.0.1 (as LocalAI picks one for each backend).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Starts `spec.command --addr <address>` under a shim (`shim_program __shim …`), with stdout
/// and stderr captured into `logs`. The backend leads its own process group; the shim dies with
/// backend-monitor (parent-death signal) and takes every descendant with it.
///
/// Must be called from a thread that lives as long as the server (a runtime worker, not a
/// blocking-pool thread): Linux's parent-death signal follows the spawning thread.
pub async fn spawn(
    shim_program: &Path,
    name: &str,
    spec: &ManagedSpec,
    address: &str,
    logs: Arc<LogBuffer>,
) -> Result<ManagedProcess, SpawnError> {
    let shim_error = |source: std::io::Error| SpawnError::Shim {
        path: shim_program.display().to_string(),
        source: Arc::new(source),
    };
    let (report_read, report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| shim_error(e.into()))?;
    let report_fd = report_write.as_raw_fd();
    let mut command = tokio::process::Command::new(shim_program);
    command
        .arg(shim::SUBCOMMAND)
        .arg("--report-fd")
        .arg(report_fd.to_string())
        .arg("--")
        .args(&spec.command)
        .arg("--addr")
        .arg(address)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a Ctrl-C in backend-monitor's terminal reaches backend-monitor alone,
        // which then stops every backend in order.
        .process_group(0);
    if let Some(dir) = &spec.workdir {
        command.current_dir(dir);
    }
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid, fcntl) run between fork and exec.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(shim::KILL)?;
            if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                return Err(std::io::Error::other("backend-monitor exited during spawn"));
            }
            // The shim alone inherits the report pipe.
            let fd = std::os::fd::BorrowedFd::borrow_raw(report_fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(shim_error)?;
    drop(report_write);
    let shim_pid = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(i32::try_from(pid).ok()?))
        .ok_or_else(|| {
            shim_error(std::io::Error::other(
                "the shim exited before its pid was read",
            ))
        })?;
    // Opened before anything can reap the shim (only the task below waits for it).
    let pidfd = rustix::process::pidfd_open(shim_pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| shim_error(e.into()))?;
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
    let shim = Arc::new(Shim { pidfd, exit: rx });
    match read_report(report_read).await {
        Ok(shim::Report::Started { pid, start_time }) => Ok(ManagedProcess {
            id: ProcessId { pid, start_time },
            shim_pid: shim_pid.as_raw_nonzero().get().unsigned_abs(),
            shim,
        }),
        // Dropping `shim` kills whatever may be left.
        Ok(shim::Report::Failed(message)) => Err(SpawnError::Command(message)),
        Err(message) => Err(SpawnError::NoReport(message)),
    }
}

/// Reads the shim's one-line report (it closes the pipe right after), within [`REPORT_TIMEOUT`].
async fn read_report(pipe: OwnedFd) -> Result<shim::Report, String> {
    let read = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::fs::File::from(pipe)
            .read_to_string(&mut text)
            .map(|_| text)
    });
    let text = match tokio::time::timeout(REPORT_TIMEOUT, read).await {
        Err(_) => return Err(format!("no answer within {REPORT_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(Err(e))) => return Err(e.to_string()),
        Ok(Ok(Ok(text))) => text,
    };
    shim::Report::parse(&text).ok_or_else(|| format!("unexpected report {text:?}"))
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
