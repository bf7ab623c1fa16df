//! Process metrics from the OS, used when a backend cannot answer `Status`.
//!
//! Memory counters are read fresh from `/proc/<pid>/status` at each request, so they match what the
//! OS reports at that moment. CPU use needs two samples, so one long-lived `sysinfo::System`
//! samples the tracked processes in the background and the latest value is served. Linux only:
//! elsewhere every field reads 0.

use app::snapshot::{MemoryInfo, ProcessMetrics};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// How often CPU use is sampled (sysinfo needs at least 200 ms between samples).
const CPU_SAMPLE_PERIOD: Duration = Duration::from_secs(1);

#[derive(Default)]
struct SamplerState {
    tracked: HashSet<u32>,
    cpu_percent: HashMap<u32, f64>,
}

/// Samples CPU use of tracked processes and reads their memory on demand.
#[derive(Clone)]
pub struct ProcessSampler {
    state: Arc<Mutex<SamplerState>>,
    total_memory: u64,
}

impl ProcessSampler {
    /// Creates the sampler and starts its background task on the current tokio runtime.
    pub fn start() -> Self {
        let mut system = System::new();
        system.refresh_memory();
        let sampler = Self {
            state: Arc::new(Mutex::new(SamplerState::default())),
            total_memory: system.total_memory(),
        };
        let state = Arc::downgrade(&sampler.state);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(CPU_SAMPLE_PERIOD);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(state) = state.upgrade() else { break };
                sample_cpu(&mut system, &state);
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

fn sample_cpu(system: &mut System, state: &Mutex<SamplerState>) {
    let pids: Vec<Pid> = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .tracked
        .iter()
        .map(|p| Pid::from_u32(*p))
        .collect();
    if pids.is_empty() {
        return;
    }
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&pids),
        true,
        ProcessRefreshKind::nothing().with_cpu(),
    );
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    for pid in pids {
        if let Some(process) = system.process(pid) {
            state
                .cpu_percent
                .insert(pid.as_u32(), f64::from(process.cpu_usage()));
        }
    }
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
        let kib = value
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        *field = kib * 1024;
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
    fn a_missing_process_has_no_metrics() {
        assert!(read_memory_info(u32::MAX).is_none());
    }
}
