//! The registry of configured models and their lifecycle: starting managed backends, observing
//! every running backend (gRPC `Status`, else process metrics), and stopping them.
//!
//! It is the one source of truth that the JSON API and the panel observe. Each model has a
//! per-model operation lock, so starts and shutdowns of one model never interleave, while
//! observations never wait on that lock.

use crate::clock::{now_rfc3339, unix_ms};
use crate::config::{BackendSource, ManagedSpec, ModelSpec, Settings};
use crate::grpc::{BackendClient, CallError};
use crate::logs::LogBuffer;
use crate::process::ProcessSampler;
use crate::supervisor::{self, ManagedProcess};
use app::directory::BackendDirectory;
use app::snapshot::{
    BackendKind, BackendState, BackendStatus, BackendSummary, HistoryPoint, Lifecycle, LogStream,
    ModelDetail, Observation, PanelSnapshot, ProcessMetrics, StatusFailure, StatusFailureKind,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

/// Log lines kept per backend.
const LOG_LINES: usize = 500;
/// History points kept per backend (10 minutes at the default 1 s poll interval).
const HISTORY_POINTS: usize = 600;
/// Stderr lines shown with a failed backend.
const STDERR_TAIL: usize = 5;
/// Pause between `Status` calls while waiting for a busy backend.
const BUSY_POLL: Duration = Duration::from_millis(250);

/// What went wrong with a registry operation; mapped to HTTP in `error.rs`.
#[derive(Debug, thiserror::Error)]
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
    #[error(
        "model {model:?}: backend did not answer Status ({reason}) and no process metrics are available"
    )]
    Unobservable {
        /// The model.
        model: String,
        /// Why `Status` failed.
        reason: String,
    },
    /// The backend stayed BUSY for the whole wait.
    #[error("model {model:?} is still busy after {waited:?}; retry later or send \"force\": true")]
    Busy {
        /// The model.
        model: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A managed backend could not be started.
    #[error("model {model:?} failed to start: {message}")]
    StartFailed {
        /// The model.
        model: String,
        /// What happened, with the exit status and last stderr line.
        message: String,
    },
    /// A shutdown stopped the backend while it was starting.
    #[error("the start of model {0:?} was cancelled by a shutdown")]
    StartCancelled(String),
    /// backend-monitor is shutting down.
    #[error("backend-monitor is shutting down")]
    Closing,
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

/// Mutable state of one model, behind a short-lived lock.
#[derive(Debug)]
struct Runtime {
    lifecycle: Lifecycle,
    address: Option<String>,
    pid: Option<u32>,
    started: Option<Instant>,
    last_error: Option<String>,
    observation: Option<Observation>,
    client: Option<BackendClient>,
    process: Option<ManagedProcess>,
    /// Completed shutdowns, so a request that queued behind another one can tell it was done.
    stops: u64,
    /// Set by a shutdown that arrives while the backend is starting.
    start_cancelled: bool,
}

impl Runtime {
    /// Enters `lifecycle` (stopped or failed) and forgets the observation and uptime; a managed
    /// backend's process, pid, address and client go with it, an external one keeps its address.
    fn release(&mut self, lifecycle: Lifecycle, sampler: &ProcessSampler) {
        self.lifecycle = lifecycle;
        self.observation = None;
        self.started = None;
        if let Some(pid) = self.pid {
            sampler.untrack(pid);
        }
        if self.process.take().is_some() {
            self.pid = None;
            self.address = None;
            self.client = None;
        }
    }
}

/// One configured model and what is known about it.
#[derive(Debug)]
struct Model {
    spec: ModelSpec,
    runtime: Mutex<Runtime>,
    operation: tokio::sync::Mutex<()>,
    logs: Arc<LogBuffer>,
    history: Mutex<VecDeque<HistoryPoint>>,
}

impl Model {
    fn runtime(&self) -> MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lifecycle(&self) -> Lifecycle {
        self.runtime().lifecycle
    }

    fn record(&self, observation: Observation) {
        let point = HistoryPoint {
            at_unix_ms: observation.at_unix_ms,
            memory_bytes: observation.memory_bytes(),
            cpu_percent: observation.process.as_ref().map(|p| p.cpu_percent),
        };
        {
            let mut runtime = self.runtime();
            if runtime.lifecycle != Lifecycle::Running {
                return;
            }
            runtime.observation = Some(observation);
        }
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if history.len() == HISTORY_POINTS {
            history.pop_front();
        }
        history.push_back(point);
    }

    fn last_stderr_line(&self) -> String {
        self.logs
            .tail(LogStream::Stderr, 1)
            .pop()
            .unwrap_or_else(|| "(none)".to_string())
    }
}

/// Every configured model; shared by the API, the panel and the background observers.
pub struct Registry {
    models: Vec<Arc<Model>>,
    settings: Settings,
    sampler: ProcessSampler,
    closing: AtomicBool,
}

impl Registry {
    /// Builds the registry; external backends are attached at once, managed ones wait for
    /// [`Registry::start_all`]. Must run inside a tokio runtime.
    pub fn new(specs: Vec<ModelSpec>, settings: Settings) -> Arc<Self> {
        let sampler = ProcessSampler::start();
        let models = specs
            .into_iter()
            .map(|spec| {
                let mut runtime = Runtime {
                    lifecycle: Lifecycle::Stopped,
                    address: None,
                    pid: None,
                    started: None,
                    last_error: None,
                    observation: None,
                    client: None,
                    process: None,
                    stops: 0,
                    start_cancelled: false,
                };
                if let BackendSource::External { address, pid } = &spec.source {
                    runtime.address = Some(address.clone());
                    match BackendClient::new(address) {
                        Ok(client) => {
                            runtime.client = Some(client);
                            runtime.lifecycle = Lifecycle::Running;
                            runtime.started = Some(Instant::now());
                            runtime.pid = *pid;
                            if let Some(pid) = pid {
                                sampler.track(*pid);
                            }
                        }
                        Err(e) => {
                            runtime.lifecycle = Lifecycle::Failed;
                            runtime.last_error = Some(e.to_string());
                        }
                    }
                }
                Arc::new(Model {
                    spec,
                    runtime: Mutex::new(runtime),
                    operation: tokio::sync::Mutex::new(()),
                    logs: Arc::new(LogBuffer::new(LOG_LINES)),
                    history: Mutex::new(VecDeque::with_capacity(HISTORY_POINTS)),
                })
            })
            .collect();
        Arc::new(Self {
            models,
            settings,
            sampler,
            closing: AtomicBool::new(false),
        })
    }

    /// Starts every managed backend in the background and the observers of every model.
    pub fn start_all(self: &Arc<Self>) {
        for model in &self.models {
            if matches!(model.spec.source, BackendSource::Managed(_)) {
                let registry = Arc::clone(self);
                let name = model.spec.name.clone();
                tokio::spawn(async move {
                    if let Err(e) = registry.start(&name).await {
                        tracing::error!("{e}");
                    }
                });
            }
            tokio::spawn(observe_forever(Arc::downgrade(self), Arc::clone(model)));
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn find(&self, name: &str) -> Result<&Arc<Model>, RegistryError> {
        self.models
            .iter()
            .find(|m| m.spec.name == name)
            .ok_or_else(|| RegistryError::UnknownModel(name.to_string()))
    }

    /// Asks the backend for its status now (with the configured deadline); when it cannot
    /// answer, samples its process instead.
    ///
    /// Fails when the model is not running, or when neither source answers.
    pub async fn monitor(&self, name: &str) -> Result<Reading, RegistryError> {
        let model = self.find(name)?;
        let lifecycle = model.lifecycle();
        if lifecycle != Lifecycle::Running {
            return Err(RegistryError::NotLoaded {
                model: name.to_string(),
                lifecycle,
            });
        }
        let observation = self.observe(model).await;
        match (observation.status, observation.process) {
            (Some(status), _) => Ok(Reading::Backend(status)),
            (None, Some(process)) => Ok(Reading::Process(process)),
            (None, None) => Err(RegistryError::Unobservable {
                model: name.to_string(),
                reason: observation
                    .status_error
                    .map(|e| e.message)
                    .unwrap_or_default(),
            }),
        }
    }

    async fn observe(&self, model: &Model) -> Observation {
        let (client, pid) = {
            let runtime = model.runtime();
            (runtime.client.clone(), runtime.pid)
        };
        let status = match client {
            Some(client) => client
                .status(self.settings.status_timeout)
                .await
                .map_err(|e| e.to_status_failure()),
            None => Err(StatusFailure {
                kind: StatusFailureKind::Unreachable,
                message: "no gRPC address".to_string(),
            }),
        };
        let process = pid.and_then(|pid| self.sampler.metrics(pid));
        let (status, status_error) = match status {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        Observation {
            at_unix_ms: unix_ms(),
            status,
            status_error,
            process,
        }
    }

    /// Starts a stopped or failed model (re-attaches an external one after a health check).
    pub async fn start(&self, name: &str) -> Result<StartOutcome, RegistryError> {
        let model = self.find(name)?;
        let _operation = model.operation.lock().await;
        if model.lifecycle() == Lifecycle::Running {
            return Ok(StartOutcome::AlreadyRunning);
        }
        match &model.spec.source {
            BackendSource::Managed(spec) => self.start_managed(model, spec).await,
            BackendSource::External { address, pid } => {
                self.attach_external(model, address, *pid).await
            }
        }
        .map(|()| StartOutcome::Started)
    }

    async fn attach_external(
        &self,
        model: &Model,
        address: &str,
        pid: Option<u32>,
    ) -> Result<(), RegistryError> {
        let failed = |message: String| RegistryError::StartFailed {
            model: model.spec.name.clone(),
            message,
        };
        let client = BackendClient::new(address).map_err(|e| failed(e.to_string()))?;
        match client.health(self.settings.status_timeout).await {
            Ok(true) => {}
            Ok(false) => return Err(failed("Health did not answer OK".to_string())),
            Err(e) => return Err(failed(format!("Health: {e}"))),
        }
        let mut runtime = model.runtime();
        runtime.lifecycle = Lifecycle::Running;
        runtime.client = Some(client);
        runtime.pid = pid;
        runtime.started = Some(Instant::now());
        runtime.last_error = None;
        if let Some(pid) = pid {
            self.sampler.track(pid);
        }
        Ok(())
    }

    async fn start_managed(
        &self,
        model: &Arc<Model>,
        spec: &ManagedSpec,
    ) -> Result<(), RegistryError> {
        let name = &model.spec.name;
        let fail = |message: String| {
            let mut runtime = model.runtime();
            runtime.release(Lifecycle::Failed, &self.sampler);
            runtime.last_error = Some(message.clone());
            tracing::error!(model = %name, "start failed: {message}");
            RegistryError::StartFailed {
                model: name.clone(),
                message,
            }
        };
        let port = supervisor::free_port().map_err(|e| fail(format!("no free port: {e}")))?;
        let address = format!("127.0.0.1:{port}");
        let client = BackendClient::new(&address).map_err(|e| fail(e.to_string()))?;
        let process = {
            let mut runtime = model.runtime();
            if self.closing.load(Ordering::SeqCst) {
                return Err(RegistryError::Closing);
            }
            runtime.lifecycle = Lifecycle::Starting;
            runtime.start_cancelled = false;
            runtime.last_error = None;
            runtime.observation = None;
            match supervisor::spawn(name, spec, &address, model.logs.clone()) {
                Ok(process) => {
                    runtime.pid = Some(process.pid());
                    runtime.address = Some(address.clone());
                    runtime.started = Some(Instant::now());
                    runtime.process = Some(process.clone());
                    process
                }
                Err(e) => {
                    drop(runtime);
                    let program = spec.command.first().map(String::as_str).unwrap_or("");
                    return Err(fail(format!("cannot run {program:?}: {e}")));
                }
            }
        };
        self.sampler.track(process.pid());
        tracing::info!(model = %name, pid = process.pid(), %address, "backend started");
        let ready = self.await_ready(&process, &client, spec).await;
        {
            // Checked under the same lock that makes it Running: a shutdown that saw it
            // starting has cancelled it.
            let mut runtime = model.runtime();
            if ready.is_ok() && !runtime.start_cancelled {
                runtime.lifecycle = Lifecycle::Running;
                runtime.client = Some(client);
            }
        }
        if let Some(cancelled) = self.finish_cancelled_start(model) {
            return Err(cancelled);
        }
        if let Err(reason) = ready {
            let exit = match process.exit_info() {
                Some(exit) => exit.to_string(),
                None => format!(
                    "stopped by backend-monitor: {}",
                    process.terminate(self.settings.stop_grace).await
                ),
            };
            let last = model.last_stderr_line();
            return Err(fail(format!("{reason} ({exit}); last stderr line: {last}")));
        }
        tracing::info!(model = %name, "backend ready");
        tokio::spawn(watch_exit(Arc::clone(model), process, self.sampler.clone()));
        Ok(())
    }

    /// When a shutdown cancelled this start, records the model as stopped and says so.
    fn finish_cancelled_start(&self, model: &Model) -> Option<RegistryError> {
        let mut runtime = model.runtime();
        if !runtime.start_cancelled {
            return None;
        }
        runtime.release(Lifecycle::Stopped, &self.sampler);
        runtime.stops += 1;
        tracing::info!(model = %model.spec.name, "start cancelled by a shutdown");
        Some(RegistryError::StartCancelled(model.spec.name.clone()))
    }

    /// Waits for `Health` = OK, then loads the model if one is configured.
    async fn await_ready(
        &self,
        process: &ManagedProcess,
        client: &BackendClient,
        spec: &ManagedSpec,
    ) -> Result<(), String> {
        let attempts = self.settings.health_attempts.max(1);
        let interval = self.settings.health_interval;
        let deadline = interval.max(Duration::from_secs(1));
        let mut healthy = false;
        for attempt in 1..=attempts {
            tokio::select! {
                _ = process.exited() => return Err("backend exited during start-up".to_string()),
                health = client.health(deadline) => if health == Ok(true) {
                    healthy = true;
                    break;
                },
            }
            if attempt < attempts {
                tokio::select! {
                    _ = process.exited() => return Err("backend exited during start-up".to_string()),
                    () = tokio::time::sleep(interval) => {}
                }
            }
        }
        if !healthy {
            return Err(format!(
                "backend did not answer Health OK after {attempts} attempts {interval:?} apart"
            ));
        }
        if let Some(load) = &spec.load {
            tokio::select! {
                _ = process.exited() => return Err(format!("backend exited while loading {:?}", load.model)),
                loaded = client.load_model(load, self.settings.load_timeout) => {
                    loaded.map_err(|e| format!("LoadModel({:?}) failed: {e}", load.model))?;
                }
            }
        }
        Ok(())
    }

    /// Stops a running model: waits while it is BUSY (unless `force`), calls `Free`, then ends a
    /// managed backend's process group (SIGTERM, grace period, SIGKILL) and reaps it.
    ///
    /// Concurrent shutdowns of one model do the work once; every caller gets its outcome. A
    /// backend still starting is stopped at once (its start fails as cancelled).
    pub async fn shutdown(&self, name: &str, force: bool) -> Result<(), RegistryError> {
        let model = self.find(name)?;
        let (stops_before, starting) = {
            let mut runtime = model.runtime();
            let starting = runtime.lifecycle == Lifecycle::Starting;
            runtime.start_cancelled |= starting;
            (runtime.stops, runtime.process.clone().filter(|_| starting))
        };
        if let Some(process) = starting {
            process.terminate(self.settings.stop_grace).await;
        }
        let _operation = model.operation.lock().await;
        let client = {
            let runtime = model.runtime();
            if runtime.stops != stops_before && runtime.lifecycle == Lifecycle::Stopped {
                return Ok(());
            }
            if runtime.lifecycle != Lifecycle::Running {
                return Err(RegistryError::NotLoaded {
                    model: name.to_string(),
                    lifecycle: runtime.lifecycle,
                });
            }
            runtime.client.clone()
        };
        if let Some(client) = &client
            && !force
        {
            self.wait_while_busy(name, client).await?;
        }
        model.runtime().lifecycle = Lifecycle::Stopping;
        if let Some(client) = &client {
            match client.free(self.settings.free_timeout).await {
                Ok(()) | Err(CallError::Unimplemented) => {}
                Err(e) => tracing::warn!(model = %name, "Free failed: {e}"),
            }
        }
        let process = model.runtime().process.clone();
        if let Some(process) = process {
            let exit = process.terminate(self.settings.stop_grace).await;
            tracing::info!(model = %name, pid = process.pid(), "backend stopped ({exit})");
        }
        let mut runtime = model.runtime();
        runtime.release(Lifecycle::Stopped, &self.sampler);
        runtime.last_error = None;
        runtime.stops += 1;
        Ok(())
    }

    async fn wait_while_busy(
        &self,
        name: &str,
        client: &BackendClient,
    ) -> Result<(), RegistryError> {
        let started = Instant::now();
        loop {
            match client.status(self.settings.status_timeout).await {
                Ok(status) if status.state == BackendState::Busy => {}
                _ => return Ok(()),
            }
            let waited = started.elapsed();
            if waited >= self.settings.busy_wait {
                return Err(RegistryError::Busy {
                    model: name.to_string(),
                    waited,
                });
            }
            tokio::time::sleep(BUSY_POLL.min(self.settings.busy_wait - waited)).await;
        }
    }

    /// Stops every managed backend (in parallel) and refuses new starts; used at exit.
    pub async fn stop_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let mut stopping = tokio::task::JoinSet::new();
        for model in &self.models {
            let process = {
                let mut runtime = model.runtime();
                if runtime.process.is_some() {
                    runtime.lifecycle = Lifecycle::Stopping;
                }
                runtime.process.clone()
            };
            if let Some(process) = process {
                let grace = self.settings.stop_grace;
                let model = Arc::clone(model);
                stopping.spawn(async move {
                    let exit = process.terminate(grace).await;
                    tracing::info!(model = %model.spec.name, "backend stopped ({exit})");
                    model.runtime().lifecycle = Lifecycle::Stopped;
                });
            }
        }
        while stopping.join_next().await.is_some() {}
    }

    /// One summary per model, in configuration order.
    pub fn summaries(&self) -> Vec<BackendSummary> {
        self.models.iter().map(|m| summarize(m)).collect()
    }

    /// Names and backend labels of running models (for LocalAI's `/system`).
    pub fn loaded(&self) -> Vec<(String, String)> {
        self.models
            .iter()
            .filter(|m| m.lifecycle() == Lifecycle::Running)
            .map(|m| (m.spec.name.clone(), m.spec.backend.clone()))
            .collect()
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
    fn snapshot(&self) -> PanelSnapshot {
        PanelSnapshot {
            generated_at: now_rfc3339(),
            backends: self.summaries(),
        }
    }

    fn detail(&self, name: &str) -> Option<ModelDetail> {
        let model = self.find(name).ok()?;
        let history = model
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        Some(ModelDetail {
            summary: summarize(model),
            history,
            logs: model.logs.all(),
        })
    }
}

fn summarize(model: &Model) -> BackendSummary {
    let runtime = model.runtime();
    let running = runtime.lifecycle == Lifecycle::Running;
    BackendSummary {
        name: model.spec.name.clone(),
        kind: match model.spec.source {
            BackendSource::Managed(_) => BackendKind::Managed,
            BackendSource::External { .. } => BackendKind::External,
        },
        backend: model.spec.backend.clone(),
        lifecycle: runtime.lifecycle,
        pid: runtime.pid,
        address: runtime.address.clone(),
        uptime_secs: runtime
            .started
            .filter(|_| running)
            .map(|s| s.elapsed().as_secs()),
        last_error: runtime.last_error.clone(),
        observation: runtime.observation.clone().filter(|_| running),
        stderr_tail: model.logs.tail(LogStream::Stderr, STDERR_TAIL),
    }
}

/// Observes one model every poll interval while it runs, for the panel and its history.
async fn observe_forever(registry: Weak<Registry>, model: Arc<Model>) {
    let interval = match registry.upgrade() {
        Some(r) => r.settings.poll_interval,
        None => return,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        if registry.closing.load(Ordering::SeqCst) {
            return;
        }
        if model.lifecycle() == Lifecycle::Running {
            let observation = registry.observe(&model).await;
            model.record(observation);
        }
    }
}

/// Marks a running managed backend as failed when its process exits without being asked to.
async fn watch_exit(model: Arc<Model>, process: ManagedProcess, sampler: ProcessSampler) {
    let exit = process.exited().await;
    let last = model.last_stderr_line();
    let mut runtime = model.runtime();
    let ours = runtime.process.as_ref().map(ManagedProcess::pid) == Some(process.pid());
    if ours && runtime.lifecycle == Lifecycle::Running {
        let message = format!("backend exited unexpectedly ({exit}); last stderr line: {last}");
        tracing::error!(model = %model.spec.name, "{message}");
        runtime.release(Lifecycle::Failed, &sampler);
        runtime.last_error = Some(message);
    }
}
