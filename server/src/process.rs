//! Processes as Linux's `/proc` shows them: identity (pid and start time), descendants, and the
//! metrics used when a backend cannot answer `Status`.
//!
//! Everything comes from `/proc`, so the numbers are exactly what the OS reports. Memory
//! counters are read from `/proc/<pid>/status` at each request. CPU use needs two readings, so a
//! background task reads `/proc/<pid>/stat` (user + system time) of the tracked processes every
//! second and serves the use over the last interval, in percent of one core (not the lifetime
//! average). Linux only: elsewhere no process has metrics.

use app::snapshot::{MemoryInfo, ProcessMetrics};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often CPU use is sampled.
const CPU_SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// A process named by pid **and** start time, so a recycled pid is never mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub start_time: u64,
}

impl ProcessId {
    /// The process running as `pid` now.
    pub fn of(pid: u32) -> Result<Self, ProcessError> {
        let stat = read_stat(pid).ok_or(ProcessError::NotRunning(pid))?;
        Ok(Self {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Fails unless `pid` still belongs to this process.
    pub fn check(&self) -> Result<Stat, ProcessError> {
        let stat = read_stat(self.pid).ok_or(ProcessError::NotRunning(self.pid))?;
        if stat.start_time == self.start_time {
            Ok(stat)
        } else {
            Err(ProcessError::Replaced(self.pid))
        }
    }
}

/// Why a process cannot be observed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// No process has this pid.
    #[error("pid {0} is not running")]
    NotRunning(u32),
    /// The pid was reused by a process started later.
    #[error("pid {0} now belongs to another process")]
    Replaced(u32),
}

/// The fields of `/proc/<pid>/stat` this crate uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id (field 4).
    pub ppid: u32,
    /// User + system CPU time in clock ticks (fields 14 and 15).
    pub cpu_ticks: u64,
    /// Start time in clock ticks after boot (field 22).
    pub start_time: u64,
}

/// Reads `/proc/<pid>/stat`; `None` when the process does not exist.
pub fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `stat` line; the command name may hold spaces and parentheses, so counting starts
/// after its last `)` (field 3 is then the first).
fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
        start_time: field(22)?,
    })
}

/// Every descendant of `root` (children, their children…), from a scan of `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = read_stat(pid) {
            children.entry(stat.ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for &child in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// One reading of a process's CPU time.
#[derive(Clone, Copy)]
struct CpuReading {
    ticks: u64,
    at: Instant,
}

#[derive(Default)]
struct SamplerState {
    /// Tracked processes, with how many owners track each.
    tracked: HashMap<ProcessId, usize>,
    last: HashMap<ProcessId, CpuReading>,
    cpu_percent: HashMap<ProcessId, f64>,
}

/// Samples CPU use of tracked processes and reads their memory on demand.
#[derive(Clone)]
pub struct ProcessSampler {
    state: Arc<Mutex<SamplerState>>,
    total_memory: u64,
    ticks_per_second: f64,
}

impl ProcessSampler {
    /// Creates the sampler and starts its background task on the current tokio runtime.
    pub fn start() -> Self {
        let sampler = Self {
            state: Arc::new(Mutex::new(SamplerState::default())),
            total_memory: read_total_memory().unwrap_or(0),
            ticks_per_second: clock_ticks_per_second(),
        };
        let state = Arc::downgrade(&sampler.state);
        let ticks_per_second = sampler.ticks_per_second;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CPU_SAMPLE_PERIOD);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(state) = state.upgrade() else { break };
                sample_cpu(&state, ticks_per_second);
            }
        });
        sampler
    }

    /// Starts sampling `process` (once per call; [`ProcessSampler::untrack`] undoes one call).
    pub fn track(&self, process: ProcessId) {
        *self.lock().tracked.entry(process).or_default() += 1;
    }

    /// Stops sampling `process` and forgets its numbers once nobody tracks it.
    pub fn untrack(&self, process: ProcessId) {
        let mut state = self.lock();
        if let Some(count) = state.tracked.get_mut(&process) {
            *count -= 1;
            if *count > 0 {
                return;
            }
        }
        state.tracked.remove(&process);
        state.last.remove(&process);
        state.cpu_percent.remove(&process);
    }

    /// Current metrics of `process`; fails when its pid is gone or belongs to another process.
    pub fn metrics(&self, process: ProcessId) -> Result<ProcessMetrics, ProcessError> {
        process.check()?;
        let memory_info =
            read_memory_info(process.pid).ok_or(ProcessError::NotRunning(process.pid))?;
        let cpu_percent = self
            .lock()
            .cpu_percent
            .get(&process)
            .copied()
            .unwrap_or(0.0);
        let memory_percent = if self.total_memory == 0 {
            0.0
        } else {
            (memory_info.rss as f64 * 100.0 / self.total_memory as f64) as f32
        };
        Ok(ProcessMetrics {
            memory_info,
            memory_percent,
            cpu_percent,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SamplerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn sample_cpu(state: &Mutex<SamplerState>, ticks_per_second: f64) {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let processes: Vec<ProcessId> = state.tracked.keys().copied().collect();
    for process in processes {
        let Ok(stat) = process.check() else {
            state.last.remove(&process);
            state.cpu_percent.remove(&process);
            continue;
        };
        let now = CpuReading {
            ticks: stat.cpu_ticks,
            at: Instant::now(),
        };
        if let Some(before) = state.last.insert(process, now) {
            let seconds = now.at.duration_since(before.at).as_secs_f64();
            if seconds > 0.0 {
                let busy = now.ticks.saturating_sub(before.ticks) as f64 / ticks_per_second;
                state.cpu_percent.insert(process, busy / seconds * 100.0);
            }
        }
    }
}

/// Clock ticks per second, the unit of CPU times in `/proc` (100 on almost every system).
fn clock_ticks_per_second() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        ticks => ticks as f64,
    }
}

/// Physical memory in bytes (`MemTotal` of `/proc/meminfo`).
fn read_total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(kib_to_bytes)
}

/// A `/proc` value like `  1234 kB` in bytes.
fn kib_to_bytes(value: &str) -> Option<u64> {
    let kib: u64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Reads the memory counters of `pid` from `/proc/<pid>/status`; `None` when it does not exist
/// or has exited (a zombie).
pub fn read_memory_info(pid: u32) -> Option<MemoryInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // A process that has exited but is not reaped yet (a zombie) keeps its /proc entry but not
    // its memory: its status has no `Vm*` lines. It is not running; all zeros would be a lie.
    if !text.lines().any(|line| line.starts_with("VmRSS:")) {
        return None;
    }
    Some(parse_status(&text))
}

/// Parses the `Vm*` lines of a `/proc/<pid>/status` file (values in kB) into bytes.
pub fn parse_status(text: &str) -> MemoryInfo {
    let mut info = MemoryInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let field = match key {
            "VmRSS" => &mut info.rss,
            "VmSize" => &mut info.vms,
            "VmHWM" => &mut info.hwm,
            "VmData" => &mut info.data,
            "VmStk" => &mut info.stack,
            "VmLck" => &mut info.locked,
            "VmSwap" => &mut info.swap,
            _ => continue,
        };
        *field = kib_to_bytes(value).unwrap_or(0);
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_converted_from_kib_to_bytes() {
        let info = parse_status(
            "Name:\tx\nVmPeak:\t  9 kB\nVmSize:\t  8 kB\nVmLck:\t 0 kB\nVmHWM:\t 5 kB\nVmRSS:\t 4 kB\nVmData:\t 3 kB\nVmStk:\t 2 kB\nVmSwap:\t 1 kB\n",
        );
        assert_eq!(
            info,
            MemoryInfo {
                rss: 4096,
                vms: 8192,
                hwm: 5120,
                data: 3072,
                stack: 2048,
                locked: 0,
                swap: 1024
            }
        );
    }

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "42 (a b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0 5123 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                ppid: 7,
                cpu_ticks: 280,
                start_time: 5123
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_missing_process_has_no_identity_or_metrics() {
        assert_eq!(
            ProcessId::of(u32::MAX),
            Err(ProcessError::NotRunning(u32::MAX))
        );
        assert!(read_memory_info(u32::MAX).is_none());
    }

    #[test]
    fn an_exited_process_not_yet_reaped_has_no_metrics() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let pid = child.id();
        let start = std::time::Instant::now();
        // A zombie until waited for: its /proc entry stays, its memory is gone.
        while !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        }) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "never exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(read_memory_info(pid).is_none());
        child.wait().expect("reaped");
    }

    #[test]
    fn a_process_whose_start_time_differs_is_another_process() {
        let me = ProcessId::of(std::process::id()).expect("this process exists");
        assert!(me.check().is_ok());
        let impostor = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert_eq!(
            impostor.check(),
            Err(ProcessError::Replaced(std::process::id()))
        );
    }

    #[test]
    fn descendants_include_grandchildren() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .expect("sh runs");
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            let found = descendants(std::process::id());
            if found.len() >= 2 || Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
        assert!(
            found.len() >= 2,
            "the sleep under sh is found too: {found:?}"
        );
    }
}
