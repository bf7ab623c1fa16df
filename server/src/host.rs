//! The host view: memory, swap, CPU use and load of the machine, from one long-lived `sysinfo`
//! `System` refreshed in the background (only the figures shown), so a page never waits for it.

use app::snapshot::HostStats;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// How often the host is sampled (CPU use is the average since the previous sample).
const SAMPLE_PERIOD: Duration = Duration::from_secs(2);

/// The latest sample of the host; cheap to clone and read.
#[derive(Clone, Default)]
pub struct HostMonitor {
    latest: Arc<Mutex<Option<HostStats>>>,
}

impl HostMonitor {
    /// Starts sampling on the current tokio runtime; stops when the last clone is dropped.
    pub fn start() -> Self {
        let monitor = Self::default();
        let latest = Arc::downgrade(&monitor.latest);
        tokio::spawn(async move {
            // Reading /proc/meminfo and /proc/stat takes microseconds: no blocking thread needed.
            let what = RefreshKind::nothing()
                .with_memory(MemoryRefreshKind::everything())
                .with_cpu(CpuRefreshKind::nothing().with_usage());
            let mut system = match System::new_with_specifics(what) {
                Ok(system) => system,
                Err(e) => {
                    tracing::warn!("no host view: {e}");
                    return;
                }
            };
            let mut ticker = tokio::time::interval(SAMPLE_PERIOD);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; CPU use needs a second sample.
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(latest) = latest.upgrade() else {
                    return;
                };
                system.refresh_specifics(what);
                *latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(sample(&system));
            }
        });
        monitor
    }

    /// The latest sample, with the backends' measured memory filled in by the caller.
    pub fn latest(&self) -> Option<HostStats> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn sample(system: &System) -> HostStats {
    // Unknown load (some containers hide it) reads as zeros rather than hiding the rest.
    let load = System::load_average().map_or([0.0; 3], |l| [l.one, l.five, l.fifteen]);
    HostStats {
        memory_total: system.total_memory(),
        memory_used: system
            .total_memory()
            .saturating_sub(system.available_memory()),
        memory_available: system.available_memory(),
        swap_total: system.total_swap(),
        swap_used: system.used_swap(),
        cpu_percent: system.global_cpu_usage(),
        cpus: system.cpus().len(),
        load,
        backends_memory: 0,
        gpus: Vec::new(),
    }
}
