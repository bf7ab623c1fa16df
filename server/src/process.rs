//! Process metrics from the OS, used when a backend cannot answer `Status`.
//!
//! Everything comes from Linux's `/proc`, so the numbers are exactly what the OS reports. Memory
//! counters are read from `/proc/<pid>/status` at each request. CPU use needs two readings, so a
//! background task reads `/proc/<pid>/stat` (user + system time) of the tracked processes every
//! second and serves the use over the last interval, in percent of one core (not the lifetime
//! average). Linux only: elsewhere no process has metrics.

use app::snapshot::{MemoryInfo, ProcessMetrics};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often CPU use is sampled.
const CPU_SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// One reading of a process's CPU time.
#[derive(Clone, Copy)]
struct CpuReading {
    ticks: u64,
    at: Instant,
}

#[derive(Default)]
struct SamplerState {
    tracked: HashSet<u32>,
    last: HashMap<u32, CpuReading>,
    cpu_percent: HashMap<u32, f64>,
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

    /// Starts sampling `pid`.
    pub fn track(&self, pid: u32) {
        self.lock().tracked.insert(pid);
    }

    /// Stops sampling `pid` and forgets its numbers.
    pub fn untrack(&self, pid: u32) {
        let mut state = self.lock();
        state.tracked.remove(&pid);
        state.last.remove(&pid);
        state.cpu_percent.remove(&pid);
    }

    /// Current metrics of `pid`, or `None` when the process does not exist.
    pub fn metrics(&self, pid: u32) -> Option<ProcessMetrics> {
        let memory_info = read_memory_info(pid)?;
        let cpu_percent = self.lock().cpu_percent.get(&pid).copied().unwrap_or(0.0);
        let memory_percent = if self.total_memory == 0 {
            0.0
        } else {
            (memory_info.rss as f64 * 100.0 / self.total_memory as f64) as f32
        };
        Some(ProcessMetrics {
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
    let pids: Vec<u32> = state.tracked.iter().copied().collect();
    for pid in pids {
        let Some(ticks) = read_cpu_ticks(pid) else {
            state.last.remove(&pid);
            state.cpu_percent.remove(&pid);
            continue;
        };
        let now = CpuReading {
            ticks,
            at: Instant::now(),
        };
        if let Some(before) = state.last.insert(pid, now) {
            let seconds = now.at.duration_since(before.at).as_secs_f64();
            if seconds > 0.0 {
                let busy = now.ticks.saturating_sub(before.ticks) as f64 / ticks_per_second;
                state.cpu_percent.insert(pid, busy / seconds * 100.0);
            }
        }
    }
}

/// Clock ticks per second, the unit of CPU times in `/proc` (100 on almost every system).
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User + system CPU time of `pid` in clock ticks, from `/proc/<pid>/stat`.
fn read_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// Fields 14 and 15 (utime, stime) of a `stat` line; the command name may hold spaces and
/// parentheses, so counting starts after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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

/// Reads the memory counters of `pid` from `/proc/<pid>/status`.
pub fn read_memory_info(pid: u32) -> Option<MemoryInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
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
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(280));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn a_missing_process_has_no_metrics() {
        assert!(read_memory_info(u32::MAX).is_none());
    }
}
