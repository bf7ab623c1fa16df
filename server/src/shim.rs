//! The supervising shim between backend-monitor and each managed backend, so that no process a
//! backend starts outlives it.
//!
//! backend-monitor runs `backend-monitor __shim --report-fd N -- <command>` for each managed
//! backend. The shim becomes a child subreaper (orphaned descendants, also ones that called
//! `setsid` or whose wrapper script exited, are re-parented to it), starts `<command>` as the
//! leader of its own process group, reports its pid and start time on fd `N`, then waits:
//!
//! - [`STOP`] (SIGTERM, also SIGINT/SIGHUP): forwarded to the backend's process group and every
//!   other descendant, so the backend can shut down gracefully;
//! - [`KILL`] (SIGUSR1), which is also the shim's parent-death signal: SIGKILL to all of them;
//! - the backend's exit: every remaining descendant gets SIGKILL, all are reaped, and the shim
//!   exits the way the backend did (same code, or the same signal), so backend-monitor sees the
//!   backend's own exit status.
//!
//! The process group is signalled only while its leader is unreaped (the shim reaps it last), so
//! a recycled group id is never hit. The shim is an implementation detail: the pid reported
//! everywhere is the backend's own.

use nix::errno::Errno;
pub use nix::sys::signal::Signal;
use nix::sys::signal::{self, SigHandler, SigSet, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{Pid, getpid, getppid};
use rustix::io::FdFlags;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// The hidden subcommand that runs the shim.
pub const SUBCOMMAND: &str = "__shim";
/// Asks the shim to stop the backend gracefully.
pub const STOP: Signal = Signal::SIGTERM;
/// Asks the shim to kill the backend and its descendants at once; also its parent-death signal.
pub const KILL: Signal = Signal::SIGUSR1;

/// What the shim reports on its report fd once the backend runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The backend runs as `pid`, started at `start_time` (clock ticks after boot).
    Started {
        /// The backend's pid.
        pid: u32,
        /// Field 22 of its `/proc/<pid>/stat`.
        start_time: u64,
    },
    /// The command could not be started.
    Failed(String),
}

impl Report {
    /// The line written on the report fd.
    fn to_line(&self) -> String {
        match self {
            Report::Started { pid, start_time } => format!("started {pid} {start_time}\n"),
            Report::Failed(message) => format!("failed {message}\n"),
        }
    }

    /// Reads what the shim wrote; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.lines().next()?;
        if let Some(message) = line.strip_prefix("failed ") {
            return Some(Report::Failed(message.to_string()));
        }
        let mut words = line.strip_prefix("started ")?.split(' ');
        let pid = words.next()?.parse().ok()?;
        let start_time = words.next()?.parse().ok()?;
        Some(Report::Started { pid, start_time })
    }
}

/// Signals the shim acts on; blocked and taken with `sigwait`, never delivered to handlers.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        KILL,
        Signal::SIGCHLD,
    ] {
        set.add(signal);
    }
    set
}

/// Runs the shim: starts `command` (program and arguments) and supervises it; never returns.
pub fn run(report_fd: RawFd, command: &[OsString]) -> ! {
    // SAFETY: only flags are changed; the fd stays open. The backend must not inherit it.
    let keep_private = rustix::io::fcntl_setfd(
        unsafe { BorrowedFd::borrow_raw(report_fd) },
        FdFlags::CLOEXEC,
    );
    if let Err(e) = keep_private {
        eprintln!("backend-monitor shim: report fd {report_fd}: {e}");
    }
    let signals = handled_signals();
    if let Err(e) = signals.thread_block() {
        fail(report_fd, &format!("cannot block signals: {e}"));
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        fail(report_fd, &format!("cannot become a child subreaper: {e}"));
    }
    let Some((program, args)) = command.split_first() else {
        fail(report_fd, "no command given");
    };
    let shim = getpid();
    let mut backend = std::process::Command::new(program);
    backend.args(args).process_group(0);
    // SAFETY: only async-signal-safe calls (sigprocmask, prctl, getppid) run between fork and exec.
    unsafe {
        backend.pre_exec(move || {
            handled_signals().thread_unblock()?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if getppid() != shim {
                return Err(std::io::Error::other("the shim exited during spawn"));
            }
            Ok(())
        });
    }
    let child = match backend.spawn() {
        Ok(child) => child,
        Err(e) => fail(
            report_fd,
            &format!("cannot run {:?}: {e}", program.to_string_lossy()),
        ),
    };
    let leader = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    // Readable until the shim reaps it, which happens only below.
    let start_time = crate::process::read_stat(child.id()).map_or(0, |s| s.start_time);
    write_report(
        report_fd,
        &Report::Started {
            pid: child.id(),
            start_time,
        },
    );
    loop {
        match signals.wait() {
            Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP) => {
                signal_group(leader, Signal::SIGTERM);
                signal_descendants(Signal::SIGTERM);
            }
            Ok(KILL) => {
                signal_group(leader, Signal::SIGKILL);
                signal_descendants(Signal::SIGKILL);
            }
            Ok(_) => {}
            Err(e) => eprintln!("backend-monitor shim: sigwait: {e}"),
        }
        if let Some(status) = reap_until(leader) {
            finish(leader, status);
        }
    }
}

/// Reaps exited descendants other than the leader; returns the leader's status once it has
/// exited, leaving it unreaped (so its process group id stays reserved).
fn reap_until(leader: Pid) -> Option<WaitStatus> {
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::All, flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
            Ok(status) if status.pid() == Some(leader) => return Some(status),
            Ok(status) => {
                if let Some(pid) = status.pid()
                    && let Err(e) = waitpid(pid, None)
                {
                    eprintln!("backend-monitor shim: reaping {pid}: {e}");
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("backend-monitor shim: waitid: {e}");
                return None;
            }
        }
    }
}

/// The backend has exited: kills every remaining descendant, reaps them all, and exits the way
/// the backend did.
fn finish(leader: Pid, status: WaitStatus) -> ! {
    signal_group(leader, Signal::SIGKILL);
    signal_descendants(Signal::SIGKILL);
    if let Err(e) = waitpid(leader, None) {
        eprintln!("backend-monitor shim: reaping the backend: {e}");
    }
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => break,
            Ok(WaitStatus::StillAlive) => {
                // Descendants still running (or forked since the last look): again, until none.
                signal_descendants(Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("backend-monitor shim: waitpid: {e}");
                break;
            }
        }
    }
    match status {
        WaitStatus::Exited(_, code) => std::process::exit(code),
        WaitStatus::Signaled(_, signal, _) => exit_by_signal(signal),
        _ => std::process::exit(1),
    }
}

/// Ends the shim by `signal`, as the backend ended, so its parent reads the same status.
fn exit_by_signal(signal: Signal) -> ! {
    // SAFETY: restoring the default action; no handler runs. (SIGKILL and SIGSTOP refuse it
    // and need it not.)
    let _ = unsafe { signal::signal(signal, SigHandler::SigDfl) };
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = only.thread_unblock();
    let _ = signal::raise(signal);
    std::process::exit(128 + signal as i32);
}

/// Signals the backend's process group; an absent group is fine.
fn signal_group(leader: Pid, signal: Signal) {
    match killpg(leader, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => eprintln!("backend-monitor shim: {signal} to group {leader}: {e}"),
    }
}

/// Signals every descendant of the shim (children, and orphans it adopted as subreaper).
fn signal_descendants(signal: Signal) {
    for pid in crate::process::descendants(std::process::id()) {
        let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        match signal::kill(pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => eprintln!("backend-monitor shim: {signal} to {pid}: {e}"),
        }
    }
}

/// Writes the report and closes the fd, so backend-monitor's read ends.
fn write_report(report_fd: RawFd, report: &Report) {
    // SAFETY: backend-monitor passes this fd for the shim alone; it is closed here, once.
    let fd = unsafe { OwnedFd::from_raw_fd(report_fd) };
    let mut file = std::fs::File::from(fd);
    if let Err(e) = file.write_all(report.to_line().as_bytes()) {
        eprintln!("backend-monitor shim: cannot report: {e}");
    }
}

fn fail(report_fd: RawFd, message: &str) -> ! {
    eprintln!("backend-monitor shim: {message}");
    write_report(report_fd, &Report::Failed(message.to_string()));
    std::process::exit(127);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for report in [
            Report::Started {
                pid: 42,
                start_time: 9001,
            },
            Report::Failed("cannot run \"x\": No such file or directory".into()),
        ] {
            assert_eq!(Report::parse(&report.to_line()), Some(report));
        }
        assert_eq!(Report::parse("garbage"), None);
        assert_eq!(Report::parse(""), None);
    }
}
