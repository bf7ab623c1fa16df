//! What backend-monitor knows about each backend, as sent to the browser and by `GET /api/backends`.
//!
//! These types are the vocabulary shared by the server (which fills them) and the panel (which draws
//! them), so they compile for both the server and WebAssembly.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Where a configured backend is in its life, as managed by backend-monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Process started (managed) and not yet healthy / model not yet loaded.
    Starting,
    /// Healthy and serving; for external backends, attached.
    Running,
    /// A shutdown is in progress.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Could not start, or exited on its own.
    Failed,
}

impl Lifecycle {
    /// The lower-case word used in JSON and in the panel.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Starting => "starting",
            Lifecycle::Running => "running",
            Lifecycle::Stopping => "stopping",
            Lifecycle::Stopped => "stopped",
            Lifecycle::Failed => "failed",
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state a backend reports through gRPC `Status` (LocalAI's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// 0: no model loaded yet.
    Uninitialized,
    /// 1: working on a request.
    Busy,
    /// 2: model loaded and idle.
    Ready,
    /// -1: the backend says it is broken.
    Error,
}

impl BackendState {
    /// LocalAI's integer code: 0 uninitialized, 1 busy, 2 ready, -1 error.
    pub fn code(self) -> i32 {
        match self {
            BackendState::Uninitialized => 0,
            BackendState::Busy => 1,
            BackendState::Ready => 2,
            BackendState::Error => -1,
        }
    }

    /// Maps LocalAI's integer code back; unknown codes read as `Error`.
    pub fn from_code(code: i32) -> Self {
        match code {
            0 => BackendState::Uninitialized,
            1 => BackendState::Busy,
            2 => BackendState::Ready,
            _ => BackendState::Error,
        }
    }

    /// The badge's CSS class: the label in lower case (spelled out, so the browser bundle
    /// carries no Unicode case tables).
    pub fn class(self) -> &'static str {
        match self {
            BackendState::Uninitialized => "uninitialized",
            BackendState::Busy => "busy",
            BackendState::Ready => "ready",
            BackendState::Error => "error",
        }
    }

    /// The word shown on the panel's badge.
    pub fn label(self) -> &'static str {
        match self {
            BackendState::Uninitialized => "Uninitialized",
            BackendState::Busy => "Busy",
            BackendState::Ready => "Ready",
            BackendState::Error => "Error",
        }
    }
}

/// Memory reported by the backend itself, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct MemoryUsage {
    /// Total bytes in use.
    pub total: u64,
    /// Bytes per component (`weights`, `kv_cache`, ...).
    pub breakdown: BTreeMap<String, u64>,
}

/// A successful answer to gRPC `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BackendStatus {
    /// The reported state.
    pub state: BackendState,
    /// The reported memory, when the backend gave any.
    pub memory: Option<MemoryUsage>,
}

/// What the backend reports through `GetMetrics` about its current (or last) request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Generation {
    /// Generation speed, in tokens per second.
    pub tokens_per_second: f32,
    /// Tokens generated so far.
    pub tokens_generated: u32,
    /// Prompt tokens processed.
    pub prompt_tokens_processed: u32,
}

/// Why the backend could not answer `Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StatusFailureKind {
    /// The backend does not implement `Status` (answered UNIMPLEMENTED).
    Unimplemented,
    /// No answer within the deadline.
    TimedOut,
    /// No connection could be made.
    Unreachable,
    /// Any other gRPC error.
    Error,
}

impl StatusFailureKind {
    /// A short phrase for the panel ("timed out").
    pub fn phrase(self) -> &'static str {
        match self {
            StatusFailureKind::Unimplemented => "Status unimplemented",
            StatusFailureKind::TimedOut => "Status timed out",
            StatusFailureKind::Unreachable => "unreachable",
            StatusFailureKind::Error => "Status failed",
        }
    }
}

/// A failed `Status` call: its kind and the error text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StatusFailure {
    /// The kind of failure.
    pub kind: StatusFailureKind,
    /// What the gRPC layer said.
    pub message: String,
}

/// Memory of a process as the OS reports it (Linux `/proc/<pid>/status`), in bytes.
///
/// Field names follow LocalAI's fallback (gopsutil's `MemoryInfoStat`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct MemoryInfo {
    /// Resident set size (VmRSS).
    pub rss: u64,
    /// Virtual memory size (VmSize).
    pub vms: u64,
    /// Peak resident set size (VmHWM).
    pub hwm: u64,
    /// Data segment size (VmData).
    pub data: u64,
    /// Stack size (VmStk).
    pub stack: u64,
    /// Locked memory (VmLck).
    pub locked: u64,
    /// Swapped-out memory (VmSwap).
    pub swap: u64,
}

/// Process metrics used when the backend cannot answer `Status` (LocalAI's fallback shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ProcessMetrics {
    /// Memory counters.
    pub memory_info: MemoryInfo,
    /// RSS as a percentage of the machine's physical memory.
    pub memory_percent: f32,
    /// CPU use over the last sampling window, in percent of one core.
    pub cpu_percent: f64,
    /// GPU memory held by the backend's processes, per GPU (only with an NVIDIA driver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_memory: Vec<GpuMemory>,
}

/// GPU memory held on one GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct GpuMemory {
    /// The GPU's index (as `nvidia-smi` numbers them).
    pub index: u32,
    /// The GPU's name.
    pub name: String,
    /// Bytes held.
    pub used: u64,
}

/// One process of a backend's tree, as the OS measures it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ProcessMemory {
    /// Process id.
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`).
    pub name: String,
    /// Resident memory, in bytes.
    pub rss: u64,
    /// GPU memory it holds on every GPU together, in bytes (only with an NVIDIA driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<u64>,
}

/// Memory measured by the OS (and NVML) for a backend's whole process tree: the backend and
/// its workers, including ones its supervisor adopted. Measured whatever `Status` says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct MeasuredMemory {
    /// Resident memory of all the processes, in bytes.
    pub rss: u64,
    /// The processes: the backend first, then its workers by pid.
    pub processes: Vec<ProcessMemory>,
    /// GPU memory the processes hold, per GPU (only with an NVIDIA driver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_memory: Vec<GpuMemory>,
}

impl MeasuredMemory {
    /// GPU memory on every GPU together, in bytes.
    pub fn gpu_total(&self) -> u64 {
        self.gpu_memory.iter().map(|g| g.used).sum()
    }
}

/// What a shutdown released: the backend's processes just before and after, and the host's
/// memory (and each GPU's) before and after.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct FreedMemory {
    /// Resident memory of the backend's processes just before the stop, in bytes.
    pub rss_before: u64,
    /// Resident memory its processes still hold after it (an external backend keeps running;
    /// a managed one should hold nothing), in bytes.
    pub rss_after: u64,
    /// GPU memory of its processes just before the stop, in bytes (only with an NVIDIA driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_before: Option<u64>,
    /// GPU memory its processes still hold after it, in bytes (only with an NVIDIA driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_after: Option<u64>,
    /// The host's available memory (`MemAvailable`) just before, in bytes.
    pub host_available_before: u64,
    /// The host's available memory just after, in bytes.
    pub host_available_after: u64,
    /// Each GPU's used memory before and after (only with an NVIDIA driver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuChange>,
    /// Memory still held after the stop, in words (a process that outlived the stop, GPU
    /// memory not given back); empty when everything was released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub still_held: Vec<String>,
}

impl FreedMemory {
    /// Resident memory released by the backend's processes, in bytes.
    pub fn rss_released(&self) -> u64 {
        self.rss_before.saturating_sub(self.rss_after)
    }

    /// GPU memory released by the backend's processes, in bytes.
    pub fn gpu_released(&self) -> Option<u64> {
        Some(
            self.gpu_memory_before?
                .saturating_sub(self.gpu_memory_after.unwrap_or(0)),
        )
    }
}

/// One GPU's used memory before and after a stop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct GpuChange {
    /// The GPU's index.
    pub index: u32,
    /// The GPU's name.
    pub name: String,
    /// Memory used by every process before, in bytes.
    pub used_before: u64,
    /// Memory used by every process after, in bytes.
    pub used_after: u64,
}

/// One GPU of the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct GpuStats {
    /// The GPU's index (as `nvidia-smi` numbers them).
    pub index: u32,
    /// The GPU's name.
    pub name: String,
    /// Memory in use by every process, in bytes.
    pub memory_used: u64,
    /// Memory installed, in bytes.
    pub memory_total: u64,
}

/// One look at a backend: what `Status` said (or why it failed) and the OS's view of its process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Observation {
    /// When it was taken, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The answer to `Status`, when there was one.
    pub status: Option<BackendStatus>,
    /// Why `Status` gave no answer, when it did not.
    pub status_error: Option<StatusFailure>,
    /// Process metrics, when a process id is known.
    pub process: Option<ProcessMetrics>,
    /// Why the known process could not be sampled ("pid 4242 is not running").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_error: Option<String>,
    /// Generation metrics from `GetMetrics`, when the backend implements it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<Generation>,
    /// Memory of the backend's whole process tree, measured, whenever its pid is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<MeasuredMemory>,
}

impl Observation {
    /// Memory in use: measured for the process tree when a pid is known, else what the backend
    /// reported, else the RSS of its process.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.measured
            .as_ref()
            .map(|m| m.rss)
            .or_else(|| self.reported().map(|m| m.total))
            .or_else(|| self.process.as_ref().map(|p| p.memory_info.rss))
    }

    /// The memory the backend reported through `Status`.
    pub fn reported(&self) -> Option<&MemoryUsage> {
        self.status.as_ref()?.memory.as_ref()
    }

    /// Whether the reported total is more than twice the measured RSS: then it is most likely
    /// the virtual size (as LocalAI's Go backends report), not memory the model holds.
    pub fn reported_looks_virtual(&self) -> bool {
        match (self.reported(), &self.measured) {
            (Some(reported), Some(measured)) => reported.total > measured.rss.saturating_mul(2),
            _ => false,
        }
    }
}

/// Where a start is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(
    rename_all = "snake_case",
    tag = "phase",
    try_from = "StartPhaseFields"
)]
pub enum StartPhase {
    /// Waiting for `Health` to answer OK: check `attempt` of `of`.
    HealthCheck {
        /// The check under way, from 1.
        attempt: u32,
        /// Checks before the start is declared failed.
        of: u32,
    },
    /// `LoadModel` is loading this model.
    Loading {
        /// The model file.
        model: String,
    },
}

/// [`StartPhase`]'s JSON object read as plain fields. serde reads an internally tagged enum
/// through a buffered copy of the whole value (its `Content` tree), which cost the browser
/// bundle several KB for these two variants.
#[derive(Deserialize)]
struct StartPhaseFields {
    phase: StartPhaseName,
    attempt: Option<u32>,
    of: Option<u32>,
    model: Option<String>,
}

/// The `phase` tag of a [`StartPhase`].
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum StartPhaseName {
    HealthCheck,
    Loading,
}

impl TryFrom<StartPhaseFields> for StartPhase {
    type Error = &'static str;

    fn try_from(fields: StartPhaseFields) -> Result<Self, Self::Error> {
        match fields.phase {
            StartPhaseName::HealthCheck => match (fields.attempt, fields.of) {
                (Some(attempt), Some(of)) => Ok(StartPhase::HealthCheck { attempt, of }),
                _ => Err("a health_check phase needs `attempt` and `of`"),
            },
            StartPhaseName::Loading => fields
                .model
                .map(|model| StartPhase::Loading { model })
                .ok_or("a loading phase needs `model`"),
        }
    }
}

/// The progress of a start in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StartProgress {
    /// Seconds since the start began.
    pub elapsed_secs: u64,
    /// What it is doing now.
    pub step: StartPhase,
}

/// How backend-monitor reaches a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Started and supervised by backend-monitor.
    Managed,
    /// Running elsewhere, reached by address.
    External,
}

/// Everything the panel shows about one configured model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BackendSummary {
    /// The model name (unique).
    pub name: String,
    /// Managed or external.
    pub kind: BackendKind,
    /// The backend's label (e.g. `llama-cpp`, `demo-backend`).
    pub backend: String,
    /// Where it is in its life.
    pub lifecycle: Lifecycle,
    /// Process id, when known.
    pub pid: Option<u32>,
    /// gRPC address (`host:port`), when known.
    pub address: Option<String>,
    /// Seconds since it started (or was attached), while it runs.
    pub uptime_secs: Option<u64>,
    /// The last error (failed start, unexpected exit).
    pub last_error: Option<String>,
    /// Why the last shutdown was refused (the backend stayed busy) while it still runs; the
    /// panel then offers a forced stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_refused: Option<String>,
    /// The latest observation while it runs.
    pub observation: Option<Observation>,
    /// The last lines the backend wrote to stderr.
    pub stderr_tail: Vec<String>,
    /// Automatic restarts after crashes (`restart = "on-failure"`) since backend-monitor started.
    #[serde(default)]
    pub restarts: u32,
    /// How the last crashed run ended ("killed by signal 9").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// The last stderr lines of the last crashed run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_run_tail: Vec<String>,
    /// Seconds until the next automatic restart, while one is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_in_secs: Option<u64>,
    /// Seconds until an idle backend is stopped (`idle_timeout`), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_left_secs: Option<u64>,
    /// When the backend last reported BUSY, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_busy_unix_ms: Option<u64>,
    /// While it starts: for how long, and the step it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_progress: Option<StartProgress>,
    /// What its last shutdown released, until it starts again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freed: Option<FreedMemory>,
    /// Whether the reported total is more than twice the measured RSS (most likely the virtual
    /// size, as LocalAI's Go backends report), so it is not the model's memory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reported_looks_virtual: bool,
    /// How busy it has been in the last minutes, while it runs and answers `Status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
}

impl BackendSummary {
    /// A model in `lifecycle` about which nothing else is known yet.
    pub fn new(name: &str, kind: BackendKind, backend: &str, lifecycle: Lifecycle) -> Self {
        Self {
            name: name.to_string(),
            kind,
            backend: backend.to_string(),
            lifecycle,
            pid: None,
            address: None,
            uptime_secs: None,
            last_error: None,
            shutdown_refused: None,
            observation: None,
            stderr_tail: Vec::new(),
            restarts: 0,
            last_exit: None,
            previous_run_tail: Vec::new(),
            restart_in_secs: None,
            idle_left_secs: None,
            last_busy_unix_ms: None,
            start_progress: None,
            activity: None,
            freed: None,
            reported_looks_virtual: false,
        }
    }

    /// Memory in use according to the latest observation.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.observation
            .as_ref()
            .and_then(Observation::memory_bytes)
    }
}

/// The machine backend-monitor runs on: is there room to load another model?
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct HostStats {
    /// Physical memory, in bytes.
    pub memory_total: u64,
    /// Memory in use (total less available), in bytes.
    pub memory_used: u64,
    /// Memory that can still be given to programs without swapping, in bytes.
    pub memory_available: u64,
    /// Swap space, in bytes.
    pub swap_total: u64,
    /// Swap in use, in bytes.
    pub swap_used: u64,
    /// CPU use of the whole machine, percent of all its logical CPUs.
    pub cpu_percent: f32,
    /// Logical CPUs.
    pub cpus: usize,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// Resident memory of the running backends' processes (measured), in bytes.
    pub backends_memory: u64,
    /// The NVIDIA GPUs (only with a driver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuStats>,
}

/// The whole panel at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct PanelSnapshot {
    /// When the snapshot was taken (RFC 3339, UTC).
    pub generated_at: String,
    /// The same instant in milliseconds since the Unix epoch.
    #[serde(default)]
    pub generated_at_unix_ms: u64,
    /// One entry per configured model, in configuration order.
    pub backends: Vec<BackendSummary>,
    /// The host, once it has been sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostStats>,
}

/// One page of the panel's table: the snapshot with this page's backends only, and totals over
/// every backend (see [`crate::directory::BackendDirectory::page`]). A thousand rows refreshed
/// every second would weigh megabytes a second on the browser and the server alike; nobody reads
/// that many at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendsPage {
    /// The instant, the host, and the backends of this page, in configuration order.
    pub snapshot: PanelSnapshot,
    /// The page shown, counting from 1 (the last one when more were asked for).
    pub page: usize,
    /// Rows per page.
    pub per_page: usize,
    /// Backends configured, on every page.
    pub total: usize,
    /// Backends running, on every page.
    pub running: usize,
    /// Memory in use by the running backends, on every page, in bytes.
    pub memory_in_use: u64,
}

impl BackendsPage {
    /// Rows per page of the panel.
    pub const PER_PAGE: usize = 100;

    /// The page shown when page `page` of `total` backends is asked for (from 1; 0 and pages
    /// past the end give the first and the last), and the positions of its rows.
    pub fn rows(total: usize, page: usize) -> (usize, std::ops::Range<usize>) {
        let pages = total.div_ceil(Self::PER_PAGE).max(1);
        let page = page.clamp(1, pages);
        let first = (page - 1) * Self::PER_PAGE;
        (page, first..total.min(first + Self::PER_PAGE))
    }

    /// How many pages there are (at least 1).
    pub fn pages(&self) -> usize {
        self.total.div_ceil(self.per_page).max(1)
    }

    /// Where this page's rows start in the whole list, counting from 0.
    pub fn first_index(&self) -> usize {
        (self.page - 1) * self.per_page
    }
}

/// One point of a backend's recent history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct HistoryPoint {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Memory in use (measured RSS of the process tree, else the backend-reported total).
    pub memory_bytes: Option<u64>,
    /// CPU use of the process, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Whether the backend reported BUSY (`None` when `Status` gave no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<bool>,
}

/// How busy a backend has been lately, from its `Status` answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Activity {
    /// Whether the latest answer was BUSY.
    pub busy_now: bool,
    /// Share of the answers of the last [`Activity::WINDOW_SECS`] that were BUSY, 0 to 1.
    pub busy_ratio: f32,
    /// The same window in [`Activity::BUCKETS`] equal slices, oldest first: percent BUSY in
    /// each, `None` where no answer came.
    pub buckets: Vec<Option<u8>>,
}

impl Activity {
    /// The window described, in seconds.
    pub const WINDOW_SECS: u64 = 300;
    /// Slices of the window.
    pub const BUCKETS: usize = 30;
}

/// Which stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Log lines kept per backend.
pub const LOG_LINES_KEPT: usize = 500;

/// One line a managed backend wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// Its position in the backend's output, counting from 1: the cursor for fetching only
    /// newer lines (`since`).
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Stdout or stderr.
    pub stream: LogStream,
    /// The line, without its newline.
    pub text: String,
}

/// The per-model page: the summary, its recent history and log lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ModelDetail {
    /// Same as in the list.
    pub summary: BackendSummary,
    /// Oldest first.
    pub history: Vec<HistoryPoint>,
    /// Oldest first: every kept line, or those after the cursor asked for.
    pub logs: Vec<LogLine>,
}

/// Log lines after a cursor (`GET /api/backends/<name>/logs?since=<cursor>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct LogPage {
    /// Lines after the cursor, oldest first.
    pub lines: Vec<LogLine>,
    /// The cursor for the next call: the last line's `seq` (or the cursor given, when none is new).
    pub next: u64,
    /// The oldest line still kept (0 when none); lines between the cursor and it were dropped.
    pub first: u64,
}

/// What the request's key or session may do, so the panel can disable what it would refuse.
/// Without API keys configured, everything is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Permissions {
    /// May shut down and start models (an admin key).
    pub can_control: bool,
}

#[cfg(test)]
mod tests {
    use super::{BackendsPage, StartPhase};

    #[test]
    fn start_phases_read_back_what_is_written_and_name_what_is_missing() {
        for phase in [
            StartPhase::HealthCheck { attempt: 2, of: 30 },
            StartPhase::Loading {
                model: "m.gguf".into(),
            },
        ] {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(
                serde_json::from_str::<StartPhase>(&json).unwrap(),
                phase,
                "{json}"
            );
        }
        assert_eq!(
            serde_json::to_string(&StartPhase::HealthCheck { attempt: 2, of: 30 }).unwrap(),
            r#"{"phase":"health_check","attempt":2,"of":30}"#
        );
        let missing = serde_json::from_str::<StartPhase>(r#"{"phase":"loading"}"#).unwrap_err();
        assert!(missing.to_string().contains("needs `model`"), "{missing}");
        assert!(serde_json::from_str::<StartPhase>(r#"{"phase":"sleeping"}"#).is_err());
    }

    #[test]
    fn pages_hold_a_hundred_rows_and_out_of_range_pages_are_clamped() {
        assert_eq!(BackendsPage::rows(0, 1), (1, 0..0));
        assert_eq!(BackendsPage::rows(130, 1), (1, 0..100));
        assert_eq!(BackendsPage::rows(130, 2), (2, 100..130));
        assert_eq!(BackendsPage::rows(130, 0), (1, 0..100));
        assert_eq!(BackendsPage::rows(130, 99), (2, 100..130));
        assert_eq!(BackendsPage::rows(200, 2), (2, 100..200));
    }
}
