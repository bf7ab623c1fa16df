//! The owner of one model's lifecycle: a task holding the model's [`State`], driven by commands
//! from [`ModelHandle`]s and by reports from the start and stop tasks it spawns. It alone starts,
//! stops and forgets the backend's process, so at most one process per model can exist, and a
//! caller that goes away never leaves work half done.
//!
//! What readers need (lifecycle, pid, the gRPC client…) is published as a [`ModelView`] through
//! a `watch` channel, so the panel and `/backend/monitor` never queue behind a command.

use super::observe::Observed;
use super::start::{self, StartFailure};
use super::stop::{self, StopPlan};
use super::{RegistryError, StartOutcome};
use crate::config::{BackendSource, ManagedSpec, ModelSpec, RestartPolicy, Settings};
use crate::grpc::BackendClient;
use crate::logs::LogBuffer;
use crate::process::{ProcessError, ProcessId, ProcessSampler};
use crate::supervisor::{ExitInfo, ManagedProcess};
use app::snapshot::{FreedMemory, Lifecycle, LogStream, StartPhase};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

/// Commands queued per model before senders wait.
const COMMAND_QUEUE: usize = 64;
/// A run that lasts this long before crashing resets the count of restarts in a row.
const STEADY_RUN: Duration = Duration::from_secs(60);
/// Stderr lines kept from a crashed run.
const CRASH_TAIL: usize = 5;

/// Where a caller's answer goes; a caller that has gone away is simply not answered.
pub(super) type Reply<T> = oneshot::Sender<Result<T, RegistryError>>;

/// What the handles ask of the owner.
pub(super) enum Command {
    /// Start (or attach) the backend, or join a start in progress. `automatic`: asked by
    /// backend-monitor itself (at start-up), so a failure follows the restart policy.
    Start {
        automatic: bool,
        reply: Reply<StartOutcome>,
    },
    /// Stop the backend, or join a stop in progress.
    Shutdown {
        force: bool,
        reply: Reply<Option<FreedMemory>>,
    },
    /// backend-monitor is exiting: stop a managed backend at once and refuse further starts.
    Exit(oneshot::Sender<()>),
}

/// What the start and stop tasks report back.
pub(super) enum Event {
    /// A start moved on to another step.
    Progress(StartPhase),
    /// The backend is ready (healthy and loaded), or could not be started.
    StartFinished(Result<(), StartFailure>),
    /// A shutdown's busy wait is over; `Free` and the process's end follow.
    BusyWaitOver,
    /// The backend stayed busy; the shutdown is refused and the backend keeps running.
    StopRefused(RegistryError),
    /// The backend is stopped (with its process's exit, for a managed one).
    Stopped(Option<ExitInfo>, Option<FreedMemory>),
}

/// An event and the id of the task that sent it. Boxed: the channel allocates room for 32 at
/// once, and 1,000 models keep one channel each for events that are rare.
type Tagged = (u64, Box<Event>);

/// Sends one task's events, tagged so that events of a task that was replaced are ignored.
#[derive(Clone)]
pub(super) struct Reporter {
    task: u64,
    events: mpsc::UnboundedSender<Tagged>,
}

impl Reporter {
    /// Reports to the owner; an owner that has gone away no longer cares.
    pub(super) fn send(&self, event: Event) {
        let _ = self.events.send((self.task, Box::new(event)));
    }
}

/// What every model's owner works with.
pub(super) struct Context {
    pub(super) spec: Arc<ModelSpec>,
    pub(super) settings: Arc<Settings>,
    pub(super) sampler: ProcessSampler,
    pub(super) logs: Arc<LogBuffer>,
    pub(super) observed: Arc<Observed>,
    pub(super) shim: Arc<PathBuf>,
}

/// What the readers of a model see: published by its owner after every change.
#[derive(Clone, Debug)]
pub(crate) struct ModelView {
    /// Counts the views published: it changes with every one.
    pub(crate) version: u64,
    pub(crate) lifecycle: Lifecycle,
    /// Counts the starts, so observations of an earlier run are never shown for this one.
    pub(crate) run: u64,
    pub(crate) pid: Option<u32>,
    pub(crate) address: Option<String>,
    /// Since when it runs.
    pub(crate) since: Option<Instant>,
    pub(crate) last_error: Option<String>,
    /// Why the last shutdown was refused while the backend still runs.
    pub(crate) shutdown_refused: Option<String>,
    /// Present while `Status` may be asked: running, or waiting for a busy backend to stop.
    pub(crate) client: Option<BackendClient>,
    /// The process whose metrics stand in when `Status` fails, or why it cannot be sampled.
    pub(crate) watched: Option<Result<ProcessId, ProcessError>>,
    /// Automatic restarts so far.
    pub(crate) restarts: u32,
    /// How the last crashed run ended, and its last stderr lines.
    pub(crate) last_exit: Option<(ExitInfo, Vec<String>)>,
    /// What the last shutdown released, until the next start.
    pub(crate) freed: Option<FreedMemory>,
    /// When the next automatic restart is due.
    pub(crate) restart_at: Option<Instant>,
    /// While it runs with an idle timeout: the timeout, and since when it counts (unless the
    /// backend was busy later).
    pub(crate) idle: Option<(Duration, Instant)>,
    /// While it starts: since when, and the step it is on.
    pub(crate) starting: Option<(Instant, Option<StartPhase>)>,
}

/// A cheap, cloneable way to talk to one model's owner and read what it publishes.
#[derive(Clone)]
pub(crate) struct ModelHandle {
    pub(crate) spec: Arc<ModelSpec>,
    pub(crate) observed: Arc<Observed>,
    pub(crate) logs: Arc<LogBuffer>,
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<ModelView>,
}

impl ModelHandle {
    /// What the owner published last.
    pub(crate) fn view(&self) -> ModelView {
        self.view.borrow().clone()
    }

    /// The run the backend is in while it is running (without copying the view).
    pub(crate) fn running_run(&self) -> Option<u64> {
        let view = self.view.borrow();
        (view.lifecycle == Lifecycle::Running).then_some(view.run)
    }

    /// The version of the view published last (see [`ModelView::version`]).
    pub(crate) fn view_version(&self) -> u64 {
        self.view.borrow().version
    }

    /// A receiver that wakes on every change of the view.
    pub(crate) fn subscribe(&self) -> watch::Receiver<ModelView> {
        self.view.clone()
    }

    /// Starts the backend, or joins the start in progress.
    pub(crate) async fn start(&self) -> Result<StartOutcome, RegistryError> {
        self.ask(|reply| Command::Start {
            automatic: false,
            reply,
        })
        .await
    }

    /// Starts the backend on backend-monitor's own account (a failure follows the restart
    /// policy).
    pub(crate) async fn start_automatically(&self) -> Result<StartOutcome, RegistryError> {
        self.ask(|reply| Command::Start {
            automatic: true,
            reply,
        })
        .await
    }

    /// Stops the backend, or joins the stop in progress; answers what the stop released
    /// (`None` when no process was stopped).
    pub(crate) async fn shutdown(&self, force: bool) -> Result<Option<FreedMemory>, RegistryError> {
        self.ask(|reply| Command::Shutdown { force, reply }).await
    }

    /// Stops a managed backend for good (backend-monitor is exiting).
    pub(crate) async fn exit(&self) {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Exit(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, RegistryError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| RegistryError::Closing)?;
        answer.await.map_err(|_| RegistryError::Closing)?
    }
}

/// Starts the owner task of one model and returns its handle. A managed model starts out
/// stopped; an external one is attached at once (its backend may come and go on its own, which
/// observation shows), and `load` re-attaches it after a health check.
pub(super) fn spawn(context: Context) -> ModelHandle {
    let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events) = mpsc::unbounded_channel();
    let state = match &context.spec.source {
        BackendSource::Managed(_) => State::Stopped,
        BackendSource::External { address, pid } => match start::connect(address) {
            Ok(client) => {
                let run = Run {
                    client,
                    address: address.clone(),
                    process: None,
                    watched: pid.map(ProcessId::of),
                    since: Instant::now(),
                };
                if let Some((process, root)) = run.tree() {
                    context.sampler.track(process, root);
                }
                State::Running { run }
            }
            Err(cause) => State::Failed {
                failure: Failure::Start(cause),
                restart: None,
            },
        },
    };
    let owner = Owner {
        state,
        closing: false,
        run: 1,
        tasks: 0,
        shutdown_refused: None,
        restarts: 0,
        in_a_row: 0,
        last_exit: None,
        freed: None,
        idle_from: None,
        commands: receiver,
        events_tx,
        events,
        view: watch::Sender::new(initial_view(&context.spec)),
        context,
    };
    let handle = ModelHandle {
        spec: Arc::clone(&owner.context.spec),
        observed: Arc::clone(&owner.context.observed),
        logs: Arc::clone(&owner.context.logs),
        commands,
        view: owner.view.subscribe(),
    };
    owner.publish();
    tokio::spawn(owner.run());
    handle
}

fn initial_view(spec: &ModelSpec) -> ModelView {
    ModelView {
        version: 0,
        lifecycle: Lifecycle::Stopped,
        run: 0,
        pid: None,
        address: external_address(spec),
        since: None,
        last_error: None,
        shutdown_refused: None,
        client: None,
        watched: None,
        restarts: 0,
        last_exit: None,
        freed: None,
        restart_at: None,
        idle: None,
        starting: None,
    }
}

/// An external backend's address is known (and shown) whether or not it is attached.
fn external_address(spec: &ModelSpec) -> Option<String> {
    match &spec.source {
        BackendSource::External { address, .. } => Some(address.clone()),
        BackendSource::Managed(_) => None,
    }
}

/// One run of the backend: what exists from its start until it is stopped.
struct Run {
    client: BackendClient,
    address: String,
    /// A managed backend's process; `None` for an external one.
    process: Option<ManagedProcess>,
    watched: Option<Result<ProcessId, ProcessError>>,
    since: Instant,
}

impl Run {
    /// The watched process and the root of its tree (a managed backend's shim, which adopts
    /// its orphans; the process itself otherwise), when a live process is known.
    fn tree(&self) -> Option<(ProcessId, u32)> {
        let Some(Ok(process)) = &self.watched else {
            return None;
        };
        let root = self
            .process
            .as_ref()
            .map_or(process.pid, ManagedProcess::shim_pid);
        Some((*process, root))
    }
}

/// A start or stop task the owner spawned; aborted when dropped (when the state moves on).
struct Task {
    id: u64,
    abort: AbortHandle,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// Where a stop is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopPhase {
    /// Waiting for a busy backend (which keeps serving `Status`).
    BusyWait,
    /// Calling `Free` and ending the process.
    Ending,
}

/// Why the model is failed.
#[derive(Clone, Debug, thiserror::Error)]
enum Failure {
    /// It could not be started.
    #[error(transparent)]
    Start(#[from] StartFailure),
    /// Its process exited without being asked to.
    #[error("backend exited unexpectedly ({exit}); last stderr line: {last_stderr}")]
    Exited { exit: ExitInfo, last_stderr: String },
    /// It kept failing: `restart_limit` restarts in a row did not keep it up.
    #[error("gave up after {restarts} restarts in a row; the last failure: {last}")]
    GaveUp { restarts: u32, last: Box<Failure> },
}

/// An automatic restart waiting for its backoff to pass.
#[derive(Clone, Copy, Debug)]
struct PendingRestart {
    at: Instant,
}

/// The model's lifecycle; each variant holds only what exists in it.
enum State {
    Stopped,
    Failed {
        failure: Failure,
        restart: Option<PendingRestart>,
    },
    Starting {
        run: Run,
        task: Task,
        starters: Vec<Reply<StartOutcome>>,
        /// Begun by backend-monitor itself: a failure follows the restart policy.
        automatic: bool,
        /// The step it is on, once the start task has said.
        step: Option<StartPhase>,
    },
    Running {
        run: Run,
    },
    Stopping {
        run: Run,
        task: Task,
        phase: StopPhase,
        stoppers: Vec<Reply<Option<FreedMemory>>>,
        /// Starts asked for during the stop: begun once it is done.
        starters: Vec<Reply<StartOutcome>>,
        exits: Vec<oneshot::Sender<()>>,
        /// Begun by idle auto-stop.
        idle: bool,
    },
}

struct Owner {
    context: Context,
    state: State,
    /// backend-monitor is exiting: no more starts.
    closing: bool,
    run: u64,
    tasks: u64,
    shutdown_refused: Option<String>,
    /// Automatic restarts so far, and how many of them in a row (reset by a steady run).
    restarts: u32,
    in_a_row: u32,
    /// How the last crashed run ended, and its last stderr lines.
    last_exit: Option<(ExitInfo, Vec<String>)>,
    /// What the last shutdown released, until the next start.
    freed: Option<FreedMemory>,
    /// Idle time counts from here at the earliest (set when an idle stop was refused).
    idle_from: Option<Instant>,
    commands: mpsc::Receiver<Command>,
    events_tx: mpsc::UnboundedSender<Tagged>,
    events: mpsc::UnboundedReceiver<Tagged>,
    view: watch::Sender<ModelView>,
}

impl Owner {
    async fn run(mut self) {
        loop {
            let running = match &self.state {
                State::Running { run } => run.process.clone(),
                _ => None,
            };
            let restart_at = match &self.state {
                State::Failed {
                    restart: Some(restart),
                    ..
                } => Some(restart.at),
                _ => None,
            };
            let idle_at = self.idle_deadline();
            tokio::select! {
                command = self.commands.recv() => match command {
                    // Boxed (as below): a start's futures take kilobytes, needed only while
                    // they run, and an owner spends nearly all its time waiting.
                    Some(command) => Box::pin(self.on_command(command)).await,
                    // Every handle is gone: the registry was dropped.
                    None => break,
                },
                Some((task, event)) = self.events.recv() => Box::pin(self.on_event(task, *event)).await,
                exit = exited(running) => self.on_unexpected_exit(exit),
                () = sleep_until(restart_at) => Box::pin(self.restart()).await,
                () = sleep_until(idle_at) => self.on_idle_deadline(),
            }
            self.publish();
        }
        // Dropping the state kills a process still running (its shim handle's last owner).
    }

    fn name(&self) -> &str {
        &self.context.spec.name
    }

    fn managed(&self) -> Option<&ManagedSpec> {
        match &self.context.spec.source {
            BackendSource::Managed(spec) => Some(spec),
            BackendSource::External { .. } => None,
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Start { automatic, reply } => self.on_start(automatic, reply).await,
            Command::Shutdown { force, reply } => self.on_shutdown(force, reply),
            Command::Exit(done) => self.on_exit(done),
        }
    }

    async fn on_start(&mut self, automatic: bool, reply: Reply<StartOutcome>) {
        if self.closing {
            let _ = reply.send(Err(RegistryError::Closing));
            return;
        }
        match &mut self.state {
            State::Running { .. } => {
                let _ = reply.send(Ok(StartOutcome::AlreadyRunning));
            }
            State::Starting { starters, .. } | State::Stopping { starters, .. } => {
                starters.push(reply);
            }
            State::Stopped | State::Failed { .. } => {
                if !automatic {
                    self.in_a_row = 0;
                }
                self.begin_start(vec![reply], automatic).await;
            }
        }
    }

    fn on_shutdown(&mut self, force: bool, reply: Reply<Option<FreedMemory>>) {
        if let State::Stopping { stoppers, .. } = &mut self.state {
            stoppers.push(reply);
            if force {
                self.skip_busy_wait();
            }
            return;
        }
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Stopped => {
                let _ = reply.send(Err(self.not_loaded(Lifecycle::Stopped)));
            }
            State::Failed {
                restart: Some(_), ..
            } => {
                // Stopped on purpose: it is not restarted.
                tracing::info!(model = %self.name(), "pending restart cancelled by a shutdown");
                self.in_a_row = 0;
                self.answer(vec![reply], Ok(None));
            }
            state @ State::Failed { .. } => {
                self.state = state;
                let _ = reply.send(Err(self.not_loaded(Lifecycle::Failed)));
            }
            State::Starting { run, starters, .. } => {
                tracing::info!(model = %self.name(), "start cancelled by a shutdown");
                let cancelled = RegistryError::StartCancelled(self.name().to_string());
                for starter in starters {
                    let _ = starter.send(Err(cancelled.clone()));
                }
                self.begin_stop(run, None, false, vec![reply], Vec::new());
            }
            State::Running { run } => {
                self.shutdown_refused = None;
                self.in_a_row = 0;
                let busy_wait = (!force).then_some(self.context.settings.busy_wait);
                self.begin_stop(run, busy_wait, true, vec![reply], Vec::new());
            }
            State::Stopping { .. } => unreachable!("handled above"),
        }
    }

    fn on_exit(&mut self, done: oneshot::Sender<()>) {
        self.closing = true;
        if let State::Stopping {
            starters, exits, ..
        } = &mut self.state
        {
            exits.push(done);
            for starter in starters.drain(..) {
                let _ = starter.send(Err(RegistryError::Closing));
            }
            self.skip_busy_wait();
            return;
        }
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Starting { run, starters, .. } => {
                for starter in starters {
                    let _ = starter.send(Err(RegistryError::Closing));
                }
                self.begin_stop(run, None, false, Vec::new(), vec![done]);
            }
            State::Running { run } if run.process.is_some() => {
                self.begin_stop(run, None, false, Vec::new(), vec![done]);
            }
            State::Failed { failure, .. } => {
                // No restart any more.
                self.state = State::Failed {
                    failure,
                    restart: None,
                };
                let _ = done.send(());
            }
            // Stopped, or an external backend, which backend-monitor did not start and leaves
            // running.
            state => {
                self.state = state;
                let _ = done.send(());
            }
        }
    }

    /// Turns a stop that waits for a busy backend into a forced one.
    fn skip_busy_wait(&mut self) {
        if let State::Stopping {
            run,
            task,
            phase: phase @ StopPhase::BusyWait,
            ..
        } = &mut self.state
        {
            let plan = stop_plan(&self.context, run, None, true);
            *task = spawn_task(&mut self.tasks, &self.events_tx, |reporter| {
                stop::stop(plan, reporter)
            });
            *phase = StopPhase::Ending;
        }
    }

    async fn on_event(&mut self, task: u64, event: Event) {
        let current = match &self.state {
            State::Starting { task, .. } | State::Stopping { task, .. } => task.id,
            _ => return,
        };
        if task != current {
            return;
        }
        match (&mut self.state, event) {
            (State::Stopping { phase, .. }, Event::BusyWaitOver) => {
                *phase = StopPhase::Ending;
            }
            (State::Starting { step, .. }, Event::Progress(now)) => {
                *step = Some(now);
            }
            (_, event) => self.on_outcome(event).await,
        }
    }

    /// A start or stop task's final report.
    async fn on_outcome(&mut self, event: Event) {
        match (std::mem::replace(&mut self.state, State::Stopped), event) {
            (State::Starting { run, starters, .. }, Event::StartFinished(Ok(()))) => {
                tracing::info!(model = %self.name(), address = %run.address, "backend ready");
                self.idle_from = None;
                self.state = State::Running { run };
                self.answer(starters, Ok(StartOutcome::Started));
            }
            (
                State::Starting {
                    run,
                    starters,
                    automatic,
                    ..
                },
                Event::StartFinished(Err(cause)),
            ) => {
                self.forget(&run);
                self.fail_start(cause, starters, automatic);
            }
            (
                State::Stopping {
                    run,
                    stoppers,
                    starters,
                    exits,
                    idle,
                    ..
                },
                Event::StopRefused(error),
            ) => {
                tracing::warn!(model = %self.name(), "shutdown refused: {error}");
                if idle && stoppers.is_empty() {
                    // Busy after all: idle time counts anew.
                    self.idle_from = Some(Instant::now());
                } else {
                    self.shutdown_refused = Some(error.to_string());
                }
                self.state = State::Running { run };
                self.answer(stoppers, Err(error));
                self.answer(starters, Ok(StartOutcome::AlreadyRunning));
                self.answer(exits, ());
            }
            (
                State::Stopping {
                    run,
                    stoppers,
                    starters,
                    exits,
                    ..
                },
                Event::Stopped(exit, freed),
            ) => {
                match (&run.process, exit) {
                    (Some(process), Some(exit)) => {
                        tracing::info!(model = %self.name(), pid = process.pid(), "backend stopped ({exit})");
                    }
                    _ => tracing::info!(model = %self.name(), "backend detached"),
                }
                self.forget(&run);
                self.shutdown_refused = None;
                self.freed = freed.clone();
                self.answer(stoppers, Ok(freed));
                self.answer(exits, ());
                if !starters.is_empty() && !self.closing {
                    self.begin_start(starters, false).await;
                }
            }
            (state, _) => self.state = state,
        }
    }

    fn on_unexpected_exit(&mut self, exit: ExitInfo) {
        let State::Running { run } = std::mem::replace(&mut self.state, State::Stopped) else {
            return;
        };
        self.forget(&run);
        if run.since.elapsed() >= STEADY_RUN {
            self.in_a_row = 0;
        }
        let logs = &self.context.logs;
        self.last_exit = Some((exit, logs.tail(LogStream::Stderr, CRASH_TAIL)));
        let failure = Failure::Exited {
            exit,
            last_stderr: last_stderr_line(logs),
        };
        self.fail(failure, true);
    }

    /// Publishes the state, then sends `value` to every waiter: whoever hears back sees the state
    /// its request led to.
    fn answer<T: Clone>(&self, waiters: Vec<oneshot::Sender<T>>, value: T) {
        self.publish();
        for waiter in waiters {
            let _ = waiter.send(value.clone());
        }
    }

    /// A start failed: enters `Failed` (see [`Owner::fail`]) and tells who asked for it.
    fn fail_start(
        &mut self,
        cause: StartFailure,
        starters: Vec<Reply<StartOutcome>>,
        automatic: bool,
    ) {
        let error = RegistryError::StartFailed {
            model: self.name().to_string(),
            cause: cause.clone(),
        };
        self.fail(Failure::Start(cause), automatic);
        self.answer(starters, Err(error));
    }

    /// Enters `Failed`; under `restart = "on-failure"` (and `may_restart`), schedules a restart
    /// after an exponential backoff, or gives up after `restart_limit` in a row.
    fn fail(&mut self, failure: Failure, may_restart: bool) {
        tracing::error!(model = %self.name(), "{failure}");
        self.shutdown_refused = None;
        let settings = &self.context.settings;
        let on_failure = self
            .managed()
            .is_some_and(|m| m.restart == RestartPolicy::OnFailure);
        let (failure, restart) = if !(on_failure && may_restart) || self.closing {
            (failure, None)
        } else if self.in_a_row < settings.restart_limit {
            let delay = backoff(settings, self.in_a_row);
            self.in_a_row += 1;
            tracing::warn!(model = %self.name(), "restarting in {delay:?} (restart {} in a row)", self.in_a_row);
            let at = Instant::now() + delay;
            (failure, Some(PendingRestart { at }))
        } else {
            let gave_up = Failure::GaveUp {
                restarts: self.in_a_row,
                last: Box::new(failure),
            };
            tracing::error!(model = %self.name(), "{gave_up}");
            (gave_up, None)
        };
        self.state = State::Failed { failure, restart };
    }

    /// The backoff of a pending restart has passed.
    async fn restart(&mut self) {
        if matches!(
            self.state,
            State::Failed {
                restart: Some(_),
                ..
            }
        ) {
            self.restarts += 1;
            self.begin_start(Vec::new(), true).await;
        }
    }

    /// When an idle running backend is due to be stopped, if it has an idle timeout.
    fn idle_deadline(&self) -> Option<Instant> {
        let State::Running { run } = &self.state else {
            return None;
        };
        let timeout = self
            .managed()?
            .idle_timeout
            .or(self.context.settings.idle_timeout)?;
        let last_busy = self.context.observed.last_busy().map(|b| b.at);
        let from = [Some(run.since), self.idle_from, last_busy]
            .into_iter()
            .flatten()
            .max()?;
        Some(from + timeout)
    }

    /// Stops the backend gracefully (as a shutdown does) once it has been idle long enough.
    fn on_idle_deadline(&mut self) {
        if self.idle_deadline().is_none_or(|at| at > Instant::now()) {
            // It was busy in the meantime; the loop waits for the new deadline.
            return;
        }
        let State::Running { run } = std::mem::replace(&mut self.state, State::Stopped) else {
            return;
        };
        tracing::info!(model = %self.name(), "idle for its idle_timeout; stopping");
        let busy_wait = Some(self.context.settings.busy_wait);
        self.begin_stop(run, busy_wait, true, Vec::new(), Vec::new());
        if let State::Stopping { idle, .. } = &mut self.state {
            *idle = true;
        }
    }

    /// Prepares a run (spawning a managed backend's process) and starts waiting for it.
    async fn begin_start(&mut self, starters: Vec<Reply<StartOutcome>>, automatic: bool) {
        self.run += 1;
        self.shutdown_refused = None;
        self.freed = None;
        let prepared = match &self.context.spec.source {
            BackendSource::Managed(spec) => {
                start::launch(&self.context, spec)
                    .await
                    .map(|(client, address, process)| Run {
                        client,
                        address,
                        watched: Some(Ok(process.id())),
                        process: Some(process),
                        since: Instant::now(),
                    })
            }
            BackendSource::External { address, pid } => start::connect(address).map(|client| Run {
                client,
                address: address.clone(),
                process: None,
                watched: pid.map(ProcessId::of),
                since: Instant::now(),
            }),
        };
        let run = match prepared {
            Ok(run) => run,
            Err(cause) => return self.fail_start(cause, starters, automatic),
        };
        if let Some((process, root)) = run.tree() {
            self.context.sampler.track(process, root);
        }
        let settings = Arc::clone(&self.context.settings);
        let logs = Arc::clone(&self.context.logs);
        let client = run.client.clone();
        let process = run.process.clone();
        let load = self.managed().and_then(|m| m.load.clone());
        let task = spawn_task(
            &mut self.tasks,
            &self.events_tx,
            move |reporter| async move {
                let result = match process {
                    Some(process) => {
                        let progress = |step| reporter.send(Event::Progress(step));
                        start::await_ready(
                            &process,
                            &client,
                            load.as_ref(),
                            &settings,
                            &logs,
                            progress,
                        )
                        .await
                    }
                    None => start::await_attached(&client, &settings).await,
                };
                reporter.send(Event::StartFinished(result));
            },
        );
        self.state = State::Starting {
            run,
            task,
            starters,
            automatic,
            step: None,
        };
    }

    /// Begins stopping `run`; `busy_wait: None` skips the wait for a busy backend.
    fn begin_stop(
        &mut self,
        run: Run,
        busy_wait: Option<Duration>,
        free: bool,
        stoppers: Vec<Reply<Option<FreedMemory>>>,
        exits: Vec<oneshot::Sender<()>>,
    ) {
        let plan = stop_plan(&self.context, &run, busy_wait, free);
        let task = spawn_task(&mut self.tasks, &self.events_tx, |reporter| {
            stop::stop(plan, reporter)
        });
        self.state = State::Stopping {
            run,
            task,
            phase: if busy_wait.is_some() {
                StopPhase::BusyWait
            } else {
                StopPhase::Ending
            },
            stoppers,
            starters: Vec::new(),
            exits,
            idle: false,
        };
    }

    /// Stops sampling a run's process.
    fn forget(&self, run: &Run) {
        if let Some(Ok(process)) = &run.watched {
            self.context.sampler.untrack(*process);
        }
    }

    fn not_loaded(&self, lifecycle: Lifecycle) -> RegistryError {
        RegistryError::NotLoaded {
            model: self.name().to_string(),
            lifecycle,
        }
    }

    fn publish(&self) {
        let spec = &self.context.spec;
        let (lifecycle, run, client) = match &self.state {
            State::Stopped => (Lifecycle::Stopped, None, None),
            State::Failed { .. } => (Lifecycle::Failed, None, None),
            State::Starting { run, .. } => (Lifecycle::Starting, Some(run), None),
            State::Running { run } => (Lifecycle::Running, Some(run), Some(&run.client)),
            State::Stopping { run, phase, .. } => (
                Lifecycle::Stopping,
                Some(run),
                (*phase == StopPhase::BusyWait).then_some(&run.client),
            ),
        };
        let idle = match (&self.state, self.managed()) {
            (State::Running { run }, Some(managed)) => managed
                .idle_timeout
                .or(self.context.settings.idle_timeout)
                .map(|timeout| (timeout, self.idle_from.unwrap_or(run.since).max(run.since))),
            _ => None,
        };
        let version = self.view.borrow().version + 1;
        self.view.send_replace(ModelView {
            version,
            lifecycle,
            run: self.run,
            pid: run.and_then(|r| match &r.watched {
                Some(Ok(process)) => Some(process.pid),
                _ => None,
            }),
            address: run
                .map(|r| r.address.clone())
                .or_else(|| external_address(spec)),
            since: run
                .filter(|_| lifecycle == Lifecycle::Running)
                .map(|r| r.since),
            last_error: match &self.state {
                State::Failed { failure, .. } => Some(failure.to_string()),
                _ => None,
            },
            shutdown_refused: self
                .shutdown_refused
                .clone()
                .filter(|_| lifecycle == Lifecycle::Running),
            client: client.cloned(),
            watched: run.and_then(|r| r.watched.clone()),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            freed: self.freed.clone(),
            restart_at: match &self.state {
                State::Failed {
                    restart: Some(restart),
                    ..
                } => Some(restart.at),
                _ => None,
            },
            idle,
            starting: match &self.state {
                State::Starting { run, step, .. } => Some((run.since, step.clone())),
                _ => None,
            },
        });
    }
}

/// The pause before restart number `in_a_row + 1`: the backoff doubled each time, capped.
fn backoff(settings: &Settings, in_a_row: u32) -> Duration {
    settings
        .restart_backoff
        .saturating_mul(1u32 << in_a_row.min(20))
        .min(settings.restart_backoff_max.max(settings.restart_backoff))
}

/// Resolves at `at`; never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn stop_plan(context: &Context, run: &Run, busy_wait: Option<Duration>, free: bool) -> StopPlan {
    StopPlan {
        model: context.spec.name.clone(),
        client: run.client.clone(),
        process: run.process.clone(),
        tree: run.tree(),
        sampler: context.sampler.clone(),
        busy_wait,
        free,
        settings: Arc::clone(&context.settings),
    }
}

/// Spawns a start or stop task whose events carry a fresh id.
fn spawn_task<F>(
    counter: &mut u64,
    events: &mpsc::UnboundedSender<Tagged>,
    work: impl FnOnce(Reporter) -> F,
) -> Task
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    *counter += 1;
    let reporter = Reporter {
        task: *counter,
        events: events.clone(),
    };
    Task {
        id: *counter,
        abort: tokio::spawn(work(reporter)).abort_handle(),
    }
}

/// Resolves when a running managed backend exits; never for anything else.
async fn exited(process: Option<ManagedProcess>) -> ExitInfo {
    match process {
        Some(process) => process.exited().await,
        None => std::future::pending().await,
    }
}

/// The backend's last non-empty stderr line, for error messages.
pub(super) fn last_stderr_line(logs: &LogBuffer) -> String {
    logs.tail(LogStream::Stderr, 1)
        .pop()
        .unwrap_or_else(|| "(none)".to_string())
}
