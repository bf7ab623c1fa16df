//! The registry of configured models: one owner task per model ([`model`]), which alone starts
//! ([`start`]) and stops ([`stop`]) its backend, and observers ([`observe`]) that feed the panel
//! from the side, off the command path.
//!
//! The JSON API, the panel, and the exit path all go through [`Registry`]: they send a model's
//! owner a command and await its reply. The work runs in the owner, not in the request's future,
//! so a client that disconnects changes nothing.

mod json;
mod model;
mod observe;
mod start;
mod stop;

use crate::clock::now_rfc3339;
use crate::config::{BackendSource, ModelSpec, Settings};
use crate::grpc::CallError;
use crate::host::HostMonitor;
use crate::metrics::Metrics;
use crate::process::{ProcessError, ProcessSampler};
use app::directory::BackendDirectory;
use app::snapshot::{
    BackendKind, BackendStatus, BackendSummary, BackendsPage, FreedMemory, HostStats, Lifecycle,
    LogPage, LogStream, ModelDetail, PanelSnapshot, ProcessMetrics, StartProgress,
};
use model::ModelHandle;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use start::{Ended, NotReady, StartFailure};

/// Stderr lines shown with a failed backend.
const STDERR_TAIL: usize = 5;

/// What went wrong with a registry operation; mapped to HTTP in `error.rs`.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RegistryError {
    /// No model has this name.
    #[error("model {0:?} is not configured")]
    UnknownModel(String),
    /// The model exists but is not running.
    #[error("model {model:?} is not loaded (it is {lifecycle})")]
    NotLoaded {
        /// The model.
        model: String,
        /// Where it is instead.
        lifecycle: Lifecycle,
    },
    /// Neither `Status` nor process metrics are available.
    #[error("model {model:?}: backend did not answer Status ({status}) and {}", no_metrics(.process))]
    Unobservable {
        /// The model.
        model: String,
        /// Why `Status` failed.
        status: CallError,
        /// Why its process could not be sampled (`None`: no process is known).
        process: Option<ProcessError>,
    },
    /// The backend stayed BUSY (or too busy to answer `Status`) for the whole wait.
    #[error(
        "model {model:?} is still busy after {:.1} s; retry later or send \"force\": true",
        waited.as_secs_f64()
    )]
    Busy {
        /// The model.
        model: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The backend could not be started.
    #[error("model {model:?} failed to start: {cause}")]
    StartFailed {
        /// The model.
        model: String,
        /// What happened.
        cause: StartFailure,
    },
    /// A shutdown stopped the backend while it was starting.
    #[error("the start of model {0:?} was cancelled by a shutdown")]
    StartCancelled(String),
    /// backend-monitor is shutting down.
    #[error("backend-monitor is shutting down")]
    Closing,
}

fn no_metrics(process: &Option<ProcessError>) -> String {
    match process {
        Some(e) => format!("its process cannot be sampled: {e}"),
        None => "no process is known to sample".to_string(),
    }
}

/// What `/backend/monitor` reports: the backend's own answer, else its process metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// The backend answered `Status`.
    Backend(BackendStatus),
    /// It did not; these are the OS's numbers for its process.
    Process(ProcessMetrics),
}

/// What [`Registry::start`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// The backend was started (or re-attached) and is running.
    Started,
    /// It was already running; nothing was done.
    AlreadyRunning,
}

/// Every configured model's owner; shared by the API, the panel and the exit path.
pub struct Registry {
    models: Vec<ModelHandle>,
    host: HostMonitor,
    settings: Arc<Settings>,
    sampler: ProcessSampler,
    metrics: Arc<Metrics>,
    /// When the observations were last looked at (observation slows down when nobody does).
    watchers: Arc<observe::Watchers>,
    /// Each model's summary as last serialised, in the order of `models`.
    summaries: Vec<json::SummaryCache>,
    /// When the registry started: summaries are kept for the rest of a second counted from it.
    started: Instant,
}

impl Registry {
    /// Starts one owner task per model (all stopped) and its observer. `shim` is the program
    /// run as `shim __shim …` to supervise managed backends (backend-monitor itself). Must run
    /// inside a tokio runtime.
    pub fn new(specs: Vec<ModelSpec>, settings: Settings, shim: PathBuf) -> Arc<Self> {
        let settings = Arc::new(settings);
        let sampler = ProcessSampler::start(crate::gpu::Gpus::probe());
        let shim = Arc::new(shim);
        let metrics = Arc::new(Metrics::new(specs.iter().map(|s| s.name.as_str())));
        let watchers = Arc::new(observe::Watchers::new());
        let pace = observe::observation_pace(settings.poll_interval, specs.len());
        let models = specs
            .into_iter()
            .map(|spec| {
                let handle = model::spawn(model::Context {
                    spec: Arc::new(spec),
                    settings: Arc::clone(&settings),
                    sampler: sampler.clone(),
                    logs: Arc::new(crate::logs::LogBuffer::new(app::snapshot::LOG_LINES_KEPT)),
                    observed: Arc::new(observe::Observed::new(observe::history_points(pace))),
                    shim: Arc::clone(&shim),
                });
                tokio::spawn(observe::observe_forever(
                    handle.clone(),
                    Arc::clone(&settings),
                    pace,
                    sampler.clone(),
                    Arc::clone(&metrics),
                    Arc::clone(&watchers),
                ));
                handle
            })
            .collect::<Vec<_>>();
        Arc::new(Self {
            summaries: models
                .iter()
                .map(|_| json::SummaryCache::default())
                .collect(),
            started: Instant::now(),
            models,
            host: HostMonitor::start(),
            settings,
            sampler,
            metrics,
            watchers,
        })
    }

    /// Starts every managed backend in the background; failures are logged and shown.
    pub fn start_all(&self) {
        let managed = self
            .models
            .iter()
            .filter(|m| matches!(m.spec.source, BackendSource::Managed(_)));
        for model in managed {
            let model = model.clone();
            tokio::spawn(async move {
                // The owner logs and records the outcome; nobody waits for it here.
                let _ = model.start_automatically().await;
            });
        }
    }

    fn find(&self, name: &str) -> Result<&ModelHandle, RegistryError> {
        self.models
            .iter()
            .find(|m| m.spec.name == name)
            .ok_or_else(|| RegistryError::UnknownModel(name.to_string()))
    }

    /// Asks the backend for its status now (with the configured deadline); when it cannot
    /// answer, samples its process instead. Never waits for a start or stop in progress.
    ///
    /// Fails when the model is not running, or when neither source answers.
    pub async fn monitor(&self, name: &str) -> Result<Reading, RegistryError> {
        let model = self.find(name)?;
        let answer = self.read(name, model).await;
        self.metrics.monitored(name, &answer);
        answer
    }

    /// [`Registry::monitor`]'s reading of a configured model.
    async fn read(&self, name: &str, model: &ModelHandle) -> Result<Reading, RegistryError> {
        let view = model.view();
        let Some(client) = view.client else {
            return Err(RegistryError::NotLoaded {
                model: name.to_string(),
                lifecycle: view.lifecycle,
            });
        };
        let status = match client.status(self.settings.status_timeout).await {
            Ok(status) => return Ok(Reading::Backend(status)),
            Err(e) => e,
        };
        let unobservable = |process| RegistryError::Unobservable {
            model: name.to_string(),
            status: status.clone(),
            process,
        };
        match view.watched {
            Some(Ok(process)) => self
                .sampler
                .metrics(process)
                .map(Reading::Process)
                .map_err(|e| unobservable(Some(e))),
            Some(Err(e)) => Err(unobservable(Some(e))),
            None => Err(unobservable(None)),
        }
    }

    /// Starts a stopped or failed model (re-attaches an external one after a health check);
    /// joins a start in progress.
    pub async fn start(&self, name: &str) -> Result<StartOutcome, RegistryError> {
        self.find(name)?.start().await
    }

    /// Stops a running model: waits while it is BUSY (unless `force`), calls `Free`, then ends
    /// a managed backend's process tree (SIGTERM, grace period, SIGKILL) and reaps it.
    ///
    /// Concurrent shutdowns of one model do the work once; every caller gets its outcome. A
    /// backend still starting is stopped at once (its start fails as cancelled).
    pub async fn shutdown(
        &self,
        name: &str,
        force: bool,
    ) -> Result<Option<FreedMemory>, RegistryError> {
        self.find(name)?.shutdown(force).await
    }

    /// Stops every managed backend (in parallel) through its owner, and refuses new starts;
    /// used at exit.
    pub async fn stop_all(&self) {
        let mut stopping = tokio::task::JoinSet::new();
        for model in &self.models {
            let model = model.clone();
            stopping.spawn(async move { model.exit().await });
        }
        while stopping.join_next().await.is_some() {}
    }

    /// The Prometheus exposition of every model, from the cached observations (never waits on
    /// a backend) and the recorded counters.
    pub fn metrics(&self) -> Result<String, std::fmt::Error> {
        let snapshot = self.snapshot();
        self.metrics
            .encode(&snapshot.backends, snapshot.host.as_ref())
    }

    /// Every configured backend at this instant, from the cached observations.
    pub fn snapshot(&self) -> PanelSnapshot {
        self.watchers.looked();
        let backends = self.summaries();
        let host = self.host_stats(backends.iter().filter_map(running_rss).sum());
        PanelSnapshot {
            generated_at: now_rfc3339(),
            generated_at_unix_ms: crate::clock::unix_ms(),
            backends,
            host,
        }
    }

    /// One summary per model, in configuration order.
    pub fn summaries(&self) -> Vec<BackendSummary> {
        self.models.iter().map(summarize).collect()
    }

    /// What [`BackendDirectory::snapshot`] answers, as JSON: each model's summary is serialised
    /// again only when the model changed or a new second began (so countdowns and uptimes are
    /// at most a second old), and copied otherwise.
    pub fn snapshot_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        self.watchers.looked();
        let second = self.started.elapsed().as_secs();
        let backends = self
            .models
            .iter()
            .zip(&self.summaries)
            .map(|(model, cache)| {
                let key = json::SummaryKey {
                    view: model.view_version(),
                    observed: model.observed.generation(),
                    logs: model.logs.last_seq(),
                    second,
                };
                cache.get_or_make(key, || json::SummaryJson::of(&summarize(model)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let host = self.host_stats(backends.iter().filter_map(|b| b.running_rss).sum());
        json::write_snapshot(
            &now_rfc3339(),
            crate::clock::unix_ms(),
            backends.iter().map(|b| &*b.json),
            host.as_ref(),
        )
    }

    /// The host's latest sample, with the memory the running backends hold and each GPU.
    fn host_stats(&self, backends_memory: u64) -> Option<HostStats> {
        self.host.latest().map(|host| HostStats {
            backends_memory,
            gpus: self.sampler.gpus(),
            ..host
        })
    }

    /// Names and backend labels of running models (for LocalAI's `/system`).
    pub fn loaded(&self) -> Vec<(String, String)> {
        self.models
            .iter()
            .filter(|m| m.view().lifecycle == Lifecycle::Running)
            .map(|m| (m.spec.name.clone(), m.spec.backend.clone()))
            .collect()
    }

    /// The log lines of a model after `since` (see [`LogPage`]).
    pub fn logs(&self, name: &str, since: u64) -> Result<LogPage, RegistryError> {
        self.watchers.looked();
        Ok(self.find(name)?.logs.since(since))
    }

    /// Distinct backend labels, in configuration order.
    pub fn backend_labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = Vec::new();
        for model in &self.models {
            if !labels.contains(&model.spec.backend) {
                labels.push(model.spec.backend.clone());
            }
        }
        labels
    }
}

impl BackendDirectory for Registry {
    fn page(&self, page: usize) -> BackendsPage {
        self.watchers.looked();
        // Totals over every model (running ones, their memory in use and measured RSS) from each
        // model's view and latest observation, without summarising the rows of other pages.
        let (mut running, mut memory_in_use, mut measured_rss) = (0, 0, 0);
        for model in &self.models {
            let Some(run) = model.running_run() else {
                continue;
            };
            running += 1;
            model.observed.latest_with(run, |observation| {
                memory_in_use += observation.memory_bytes().unwrap_or(0);
                measured_rss += observation.measured.as_ref().map_or(0, |m| m.rss);
            });
        }
        let total = self.models.len();
        let (page, rows) = BackendsPage::rows(total, page);
        BackendsPage {
            snapshot: PanelSnapshot {
                generated_at: now_rfc3339(),
                generated_at_unix_ms: crate::clock::unix_ms(),
                backends: self.models[rows].iter().map(summarize).collect(),
                host: self.host_stats(measured_rss),
            },
            page,
            per_page: BackendsPage::PER_PAGE,
            total,
            running,
            memory_in_use,
        }
    }

    fn detail(&self, name: &str, logs_since: u64) -> Option<ModelDetail> {
        self.watchers.looked();
        let model = self.find(name).ok()?;
        Some(ModelDetail {
            summary: summarize(model),
            history: model.observed.history(),
            logs: model.logs.since(logs_since).lines,
        })
    }
}

/// Seconds, rounded up, so a countdown shows 0 only when the time is over.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The measured RSS of a running backend's process tree: what it adds to the memory the
/// backends hold, in the host view.
fn running_rss(summary: &BackendSummary) -> Option<u64> {
    if summary.lifecycle != Lifecycle::Running {
        return None;
    }
    Some(summary.observation.as_ref()?.measured.as_ref()?.rss)
}

fn summarize(model: &ModelHandle) -> BackendSummary {
    let view = model.view();
    let running = view.lifecycle == Lifecycle::Running;
    let last_busy = model.observed.last_busy();
    let now = Instant::now();
    let idle_left_secs = view.idle.map(|(timeout, from)| {
        let from = last_busy.map_or(from, |busy| busy.at.max(from));
        whole_seconds((from + timeout).saturating_duration_since(now))
    });
    let (last_exit, previous_run_tail) = match view.last_exit.clone() {
        Some((exit, tail)) => (Some(exit.to_string()), tail),
        None => (None, Vec::new()),
    };
    let observation = model.observed.latest(view.run).filter(|_| running);
    let reported_looks_virtual = observation
        .as_ref()
        .is_some_and(app::snapshot::Observation::reported_looks_virtual);
    BackendSummary {
        reported_looks_virtual,
        name: model.spec.name.clone(),
        kind: match model.spec.source {
            BackendSource::Managed(_) => BackendKind::Managed,
            BackendSource::External { .. } => BackendKind::External,
        },
        backend: model.spec.backend.clone(),
        lifecycle: view.lifecycle,
        pid: view.pid,
        address: view.address.clone(),
        uptime_secs: view.since.map(|s| s.elapsed().as_secs()),
        last_error: view.last_error.clone(),
        shutdown_refused: view.shutdown_refused.clone(),
        observation,
        freed: view.freed.clone(),
        stderr_tail: model.logs.tail(LogStream::Stderr, STDERR_TAIL),
        restarts: view.restarts,
        last_exit,
        previous_run_tail,
        restart_in_secs: view
            .restart_at
            .map(|at| whole_seconds(at.saturating_duration_since(now))),
        idle_left_secs,
        last_busy_unix_ms: last_busy.map(|busy| busy.at_unix_ms),
        activity: model
            .observed
            .activity(crate::clock::unix_ms())
            .filter(|_| running),
        start_progress: view.starting.and_then(|(since, step)| {
            Some(StartProgress {
                elapsed_secs: since.elapsed().as_secs(),
                step: step?,
            })
        }),
    }
}
