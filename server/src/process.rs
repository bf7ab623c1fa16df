//! Processes as Linux's `/proc` shows them: identity (pid and start time), descendants, and the
//! metrics used when a backend cannot answer `Status`.
//!
//! Everything comes from `/proc`, so the numbers are exactly what the OS reports. Memory
//! counters are read from `/proc/<pid>/status` at each request. CPU use needs two readings, so a
//! background task scans `/proc/*/stat` once a second while anything is tracked and serves each
//! tracked process's use over the last interval, in percent of one core (not the lifetime
//! average), and the resident memory of its whole tree (with GPU memory from NVML when a driver
//! is present). Linux only: elsewhere no process has metrics.

use crate::gpu::{GpuSample, Gpus};
use app::snapshot::{
    FreedMemory, GpuChange, GpuMemory, GpuStats, MeasuredMemory, MemoryInfo, ProcessMemory,
    ProcessMetrics,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the kernel may take to show freed memory in `MemAvailable` (its counters are folded
/// every `vm.stat_interval`, 1 s by default).
const MEMINFO_FOLD: Duration = Duration::from_millis(1200);

/// How often tracked processes (CPU use, tree memory) and GPUs are sampled.
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

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
    /// Resident set size in pages (field 24).
    pub rss_pages: u64,
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
        rss_pages: field(24)?,
    })
}

/// Every process's `stat`, from one scan of `/proc`.
#[derive(Default)]
struct ProcessTable {
    stats: HashMap<u32, Stat>,
    /// Each pid's children, built once per scan for every tree asked of it.
    children: HashMap<u32, Vec<u32>>,
}

impl ProcessTable {
    fn scan() -> Self {
        let mut stats = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if let Some(stat) = read_stat(pid) {
                    stats.insert(pid, stat);
                }
            }
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&pid, stat) in &stats {
            children.entry(stat.ppid).or_default().push(pid);
        }
        Self { stats, children }
    }

    /// Every descendant of `root` (children, their children…).
    fn descendants(&self, root: u32) -> Vec<u32> {
        let mut found = Vec::new();
        let mut queue = vec![root];
        while let Some(parent) = queue.pop() {
            for &child in self
                .children
                .get(&parent)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                found.push(child);
                queue.push(child);
            }
        }
        found
    }

    /// The memory of `process` and of every descendant of `root` (but `root` itself, unless
    /// it is `process`), with the GPU memory each holds.
    fn tree(
        &self,
        process: ProcessId,
        root: u32,
        page_size: u64,
        gpus: Option<&GpuSample>,
    ) -> Option<MeasuredMemory> {
        let stat = self.stats.get(&process.pid)?;
        if stat.start_time != process.start_time {
            return None;
        }
        let mut members: Vec<u32> = self
            .descendants(root)
            .into_iter()
            .filter(|&pid| pid != process.pid)
            .collect();
        members.sort_unstable();
        members.insert(0, process.pid);
        let mut measured = MeasuredMemory::default();
        let mut gpu_use: Vec<GpuMemory> = Vec::new();
        for pid in members {
            let Some(stat) = self.stats.get(&pid) else {
                continue;
            };
            let rss = stat.rss_pages * page_size;
            let held = gpus.and_then(|g| g.by_pid.get(&pid));
            for &(index, used) in held.into_iter().flatten() {
                match gpu_use.iter_mut().find(|g| g.index == index) {
                    Some(gpu) => gpu.used += used,
                    None => gpu_use.push(GpuMemory {
                        index,
                        name: gpus
                            .and_then(|g| g.devices.iter().find(|d| d.index == index))
                            .map(|d| d.name.clone())
                            .unwrap_or_default(),
                        used,
                    }),
                }
            }
            measured.rss += rss;
            measured.processes.push(ProcessMemory {
                pid,
                name: read_name(pid),
                rss,
                gpu_memory: held.map(|h| h.iter().map(|&(_, used)| used).sum()),
            });
        }
        gpu_use.sort_by_key(|g| g.index);
        measured.gpu_memory = gpu_use;
        Some(measured)
    }
}

/// Every descendant of `root` (children, their children…), from a scan of `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    ProcessTable::scan().descendants(root)
}

/// A process's command name (`/proc/<pid>/comm`), empty when it is gone.
fn read_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim_end().to_string())
        .unwrap_or_default()
}

/// One reading of a process's CPU time.
#[derive(Clone, Copy)]
struct CpuReading {
    ticks: u64,
    at: Instant,
}

/// A tracked backend process.
struct Tracked {
    /// How many owners track it.
    owners: usize,
    /// Whose descendants belong to its tree (see [`ProcessSampler::track`]).
    root: u32,
}

#[derive(Default)]
struct SamplerState {
    tracked: HashMap<ProcessId, Tracked>,
    last: HashMap<ProcessId, CpuReading>,
    cpu_percent: HashMap<ProcessId, f64>,
    trees: HashMap<ProcessId, MeasuredMemory>,
    gpus: Option<GpuSample>,
}

/// Samples the tracked backends every second, with one scan of `/proc` for all of them: CPU
/// use, and the memory (and GPU memory) of each one's process tree. Reads a process's memory
/// counters on demand.
#[derive(Clone)]
pub struct ProcessSampler {
    state: Arc<Mutex<SamplerState>>,
    total_memory: u64,
    gpus: Arc<Gpus>,
    clock: Clock,
}

impl ProcessSampler {
    /// Creates the sampler and starts its background task on the current tokio runtime;
    /// `gpus` is probed once by the caller (NVML, when a driver is present).
    pub fn start(gpus: Gpus) -> Self {
        let clock = Clock {
            ticks_per_second: clock_ticks_per_second(),
            page_size: u64::try_from(rustix::param::page_size()).unwrap_or(4096),
        };
        let sampler = Self {
            state: Arc::new(Mutex::new(SamplerState::default())),
            total_memory: read_total_memory().unwrap_or(0),
            gpus: Arc::new(gpus),
            clock,
        };
        let state = Arc::downgrade(&sampler.state);
        let gpus = Arc::clone(&sampler.gpus);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SAMPLE_PERIOD);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(state) = state.upgrade() else { break };
                let gpus = Arc::clone(&gpus);
                // /proc and NVML are read on a blocking thread, off the request path.
                let sampled = tokio::task::spawn_blocking(move || sample(&state, &gpus, clock));
                if sampled.await.is_err() {
                    tracing::warn!("process sampling failed");
                }
            }
        });
        sampler
    }

    /// Starts sampling `process` (once per call; [`ProcessSampler::untrack`] undoes one call).
    /// Its tree is `process` and every descendant of `root`, except `root` itself when it is
    /// another process: a managed backend's shim, which adopts the backend's orphans.
    pub fn track(&self, process: ProcessId, root: u32) {
        self.lock()
            .tracked
            .entry(process)
            .or_insert(Tracked { owners: 0, root })
            .owners += 1;
    }

    /// Stops sampling `process` and forgets its numbers once nobody tracks it.
    pub fn untrack(&self, process: ProcessId) {
        let mut state = self.lock();
        if let Some(tracked) = state.tracked.get_mut(&process) {
            tracked.owners -= 1;
            if tracked.owners > 0 {
                return;
            }
        }
        state.tracked.remove(&process);
        state.last.remove(&process);
        state.cpu_percent.remove(&process);
        state.trees.remove(&process);
    }

    /// The latest measurement of `process`'s tree (sampled every second while it is tracked).
    pub fn tree(&self, process: ProcessId) -> Option<MeasuredMemory> {
        self.lock().trees.get(&process).cloned()
    }

    /// What `process`'s tree (see [`ProcessSampler::track`]) holds now, and the host's and
    /// GPUs' memory: the "before" of a freed-memory report. `None` when the process is gone.
    pub async fn holding(&self, process: ProcessId, root: u32) -> Option<Holding> {
        let (gpus, clock) = (Arc::clone(&self.gpus), self.clock);
        tokio::task::spawn_blocking(move || {
            let gpu_sample = gpus.sample();
            let table = ProcessTable::scan();
            let tree = table.tree(process, root, clock.page_size, gpu_sample.as_ref())?;
            let members = tree
                .processes
                .iter()
                .filter_map(|p| {
                    let stat = table.stats.get(&p.pid)?;
                    Some(ProcessId {
                        pid: p.pid,
                        start_time: stat.start_time,
                    })
                })
                .collect();
            Some(Holding {
                tree,
                members,
                host_available: read_available_memory().unwrap_or(0),
                gpus: gpu_sample.map(|g| g.devices),
            })
        })
        .await
        .ok()
        .flatten()
    }

    /// What was released since `before`: the members still alive and what they hold, the
    /// host's and GPUs' memory now, and what is still held, in words.
    pub async fn released(&self, before: Holding) -> FreedMemory {
        let (gpus, clock) = (Arc::clone(&self.gpus), self.clock);
        let measured = tokio::task::spawn_blocking(move || {
            // The kernel folds its per-CPU counters into MemAvailable once a second
            // (`vm.stat_interval`): wait for the next fold, so what the exit freed shows.
            let settled = Instant::now() + MEMINFO_FOLD;
            let mut host_available_after = read_available_memory().unwrap_or(0);
            while host_available_after == before.host_available && Instant::now() < settled {
                std::thread::sleep(Duration::from_millis(50));
                host_available_after = read_available_memory().unwrap_or(0);
            }
            let gpu_sample = gpus.sample();
            let table = ProcessTable::scan();
            let survivors: Vec<ProcessMemory> = before
                .members
                .iter()
                .filter(|id| {
                    table
                        .stats
                        .get(&id.pid)
                        .is_some_and(|s| s.start_time == id.start_time)
                })
                .filter_map(|id| table.tree(*id, id.pid, clock.page_size, gpu_sample.as_ref()))
                .filter_map(|tree| tree.processes.into_iter().next())
                .collect();
            (
                before,
                survivors,
                gpu_sample,
                read_available_memory().unwrap_or(0),
            )
        })
        .await;
        let Ok((before, survivors, gpu_sample, host_available_after)) = measured else {
            return FreedMemory::default();
        };
        freed_report(
            before,
            &survivors,
            gpu_sample.as_ref(),
            host_available_after,
        )
    }

    /// The GPUs as last sampled; empty without a driver.
    pub fn gpus(&self) -> Vec<GpuStats> {
        self.lock()
            .gpus
            .as_ref()
            .map(|g| g.devices.clone())
            .unwrap_or_default()
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
        let gpu_memory = self
            .lock()
            .trees
            .get(&process)
            .map(|tree| tree.gpu_memory.clone())
            .unwrap_or_default();
        Ok(ProcessMetrics {
            memory_info,
            memory_percent,
            cpu_percent,
            gpu_memory,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SamplerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a backend's processes held just before a stop (see [`ProcessSampler::holding`]).
#[derive(Debug)]
pub struct Holding {
    tree: MeasuredMemory,
    members: Vec<ProcessId>,
    host_available: u64,
    gpus: Option<Vec<GpuStats>>,
}

/// The freed-memory report from `before`, the members that survived the stop (with what they
/// hold now), the GPUs now and the host's available memory now.
fn freed_report(
    before: Holding,
    survivors: &[ProcessMemory],
    gpus_after: Option<&GpuSample>,
    host_available_after: u64,
) -> FreedMemory {
    let with_gpus = before.gpus.is_some();
    let gpu_after: u64 = survivors.iter().filter_map(|p| p.gpu_memory).sum();
    let mut still_held: Vec<String> = survivors
        .iter()
        .map(|p| {
            let gpu = p
                .gpu_memory
                .map(|g| format!(" and {} of GPU memory", app::format::bytes(g)))
                .unwrap_or_default();
            format!(
                "pid {} ({}) still runs and holds {}{gpu}",
                p.pid,
                p.name,
                app::format::bytes(p.rss)
            )
        })
        .collect();
    let gpus: Vec<GpuChange> = before
        .gpus
        .iter()
        .flatten()
        .map(|device| GpuChange {
            index: device.index,
            name: device.name.clone(),
            used_before: device.memory_used,
            used_after: gpus_after
                .and_then(|g| g.devices.iter().find(|d| d.index == device.index))
                .map_or(device.memory_used, |d| d.memory_used),
        })
        .collect();
    // A GPU context can outlive its processes (a surviving child, a driver that is slow to
    // clean up): the GPU's own figure must drop by at least half of what the tree held on it.
    for held in &before.tree.gpu_memory {
        let Some(change) = gpus.iter().find(|g| g.index == held.index) else {
            continue;
        };
        let dropped = change.used_before.saturating_sub(change.used_after);
        if dropped < held.used / 2 {
            still_held.push(format!(
                "GPU {} ({}): its processes held {} but GPU memory in use dropped by only {}",
                held.index,
                held.name,
                app::format::bytes(held.used),
                app::format::bytes(dropped)
            ));
        }
    }
    FreedMemory {
        rss_before: before.tree.rss,
        rss_after: survivors.iter().map(|p| p.rss).sum(),
        gpu_memory_before: with_gpus.then(|| before.tree.gpu_total()),
        gpu_memory_after: with_gpus.then_some(gpu_after),
        host_available_before: before.host_available,
        host_available_after,
        gpus,
        still_held,
    }
}

/// The units of `/proc`'s numbers.
#[derive(Clone, Copy)]
struct Clock {
    ticks_per_second: f64,
    page_size: u64,
}

/// One sampling round: the GPUs always (for the host view), and with anything tracked, one
/// scan of `/proc` for every tracked process's CPU use and tree.
fn sample(state: &Mutex<SamplerState>, gpus: &Gpus, clock: Clock) {
    let gpu_sample = gpus.sample();
    let tracked: Vec<(ProcessId, u32)> = {
        let state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.tracked.iter().map(|(p, t)| (*p, t.root)).collect()
    };
    let table = if tracked.is_empty() {
        ProcessTable::default()
    } else {
        ProcessTable::scan()
    };
    let trees: Vec<(ProcessId, Option<MeasuredMemory>)> = tracked
        .iter()
        .map(|&(process, root)| {
            let tree = table.tree(process, root, clock.page_size, gpu_sample.as_ref());
            (process, tree)
        })
        .collect();
    let now = Instant::now();
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    state.gpus = gpu_sample;
    for (process, tree) in trees {
        // Untracked while this round ran: keep nothing of it.
        if !state.tracked.contains_key(&process) {
            continue;
        }
        let stat = table
            .stats
            .get(&process.pid)
            .filter(|s| s.start_time == process.start_time);
        match (stat, tree) {
            (Some(stat), Some(tree)) => {
                let reading = CpuReading {
                    ticks: stat.cpu_ticks,
                    at: now,
                };
                if let Some(before) = state.last.insert(process, reading) {
                    let seconds = now.duration_since(before.at).as_secs_f64();
                    if seconds > 0.0 {
                        let busy = reading.ticks.saturating_sub(before.ticks) as f64
                            / clock.ticks_per_second;
                        state.cpu_percent.insert(process, busy / seconds * 100.0);
                    }
                }
                state.trees.insert(process, tree);
            }
            _ => {
                state.last.remove(&process);
                state.cpu_percent.remove(&process);
                state.trees.remove(&process);
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
    read_meminfo("MemTotal:")
}

/// Memory available to programs without swapping, in bytes (`MemAvailable`).
fn read_available_memory() -> Option<u64> {
    read_meminfo("MemAvailable:")
}

/// One line of `/proc/meminfo` (its key with the colon), in bytes.
pub fn read_meminfo(key: &str) -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix(key))
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
        let stat =
            "42 (a b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0 5123 9999 77 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                ppid: 7,
                cpu_ticks: 280,
                start_time: 5123,
                rss_pages: 77,
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
