//! Starting a backend: launching a managed one under its shim, then waiting until it answers
//! `Health` and has loaded its model; attaching an external one after a health check.

use super::model::{Context, last_stderr_line};
use crate::config::{LoadSpec, ManagedSpec, Settings};
use crate::grpc::{BackendClient, CallError};
use crate::logs::LogBuffer;
use crate::supervisor::{self, ExitInfo, ManagedProcess, SpawnError};
use app::snapshot::StartPhase;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a backend could not be started; kept whole until it is shown.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StartFailure {
    /// No TCP port was free for its gRPC server.
    #[error("no free port: {0}")]
    NoPort(Arc<std::io::Error>),
    /// Its address cannot be dialled.
    #[error("{0}")]
    Address(CallError),
    /// The process could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// An external backend did not pass the health check.
    #[error("Health: {0}")]
    Health(CallError),
    /// An external backend answered `Health` with something other than OK.
    #[error("Health did not answer OK")]
    Unhealthy,
    /// A managed backend started but never became ready.
    #[error("{reason} ({ended}); last stderr line: {last_stderr}")]
    NotReady {
        /// What went wrong.
        reason: NotReady,
        /// How its process ended.
        ended: Ended,
        /// The last line it wrote to stderr.
        last_stderr: String,
    },
}

/// What kept a started backend from becoming ready.
#[derive(Clone, Debug, thiserror::Error)]
pub enum NotReady {
    /// It exited before answering `Health`.
    #[error("backend exited during start-up")]
    Exited,
    /// It never answered `Health` OK.
    #[error("backend did not answer Health OK after {attempts} attempts {interval:?} apart")]
    NeverHealthy {
        /// Health checks made.
        attempts: u32,
        /// Time between them.
        interval: Duration,
    },
    /// It exited while loading its model.
    #[error("backend exited while loading {0:?}")]
    ExitedWhileLoading(String),
    /// `LoadModel` failed or timed out.
    #[error("LoadModel({model:?}) failed: {source}")]
    Load {
        /// The model file.
        model: String,
        /// What the call said.
        source: CallError,
    },
}

/// How the process of a backend that never became ready ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself.
    Exited(ExitInfo),
    /// backend-monitor stopped it.
    Stopped(ExitInfo),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Exited(exit) => write!(f, "{exit}"),
            Ended::Stopped(exit) => write!(f, "stopped by backend-monitor: {exit}"),
        }
    }
}

/// A client for `address`, as a start failure when the address cannot be used.
pub(super) fn connect(address: &str) -> Result<BackendClient, StartFailure> {
    BackendClient::new(address).map_err(StartFailure::Address)
}

/// Starts a managed backend on a free loopback port; returns its client, address and process.
pub(super) async fn launch(
    context: &Context,
    spec: &ManagedSpec,
) -> Result<(BackendClient, String, ManagedProcess), StartFailure> {
    let port = supervisor::free_port().map_err(|e| StartFailure::NoPort(Arc::new(e)))?;
    let address = format!("127.0.0.1:{port}");
    let client = connect(&address)?;
    let name = &context.spec.name;
    let process = supervisor::spawn(
        &context.shim,
        name,
        spec,
        &address,
        Arc::clone(&context.logs),
    )
    .await?;
    tracing::info!(model = %name, pid = process.pid(), %address, "backend started");
    Ok((client, address, process))
}

/// Waits for `Health` OK, then loads the model if one is configured. A backend that never
/// becomes ready is stopped (unless it exited by itself).
pub(super) async fn await_ready(
    process: &ManagedProcess,
    client: &BackendClient,
    load: Option<&LoadSpec>,
    settings: &Settings,
    logs: &LogBuffer,
    progress: impl Fn(StartPhase),
) -> Result<(), StartFailure> {
    let Err(reason) = ready(process, client, load, settings, &progress).await else {
        return Ok(());
    };
    let ended = match process.exit_info() {
        Some(exit) => Ended::Exited(exit),
        None => Ended::Stopped(process.terminate(settings.stop_grace).await),
    };
    Err(StartFailure::NotReady {
        reason,
        ended,
        last_stderr: last_stderr_line(logs),
    })
}

async fn ready(
    process: &ManagedProcess,
    client: &BackendClient,
    load: Option<&LoadSpec>,
    settings: &Settings,
    progress: &impl Fn(StartPhase),
) -> Result<(), NotReady> {
    let attempts = settings.health_attempts.max(1);
    let interval = settings.health_interval;
    let deadline = interval.max(Duration::from_secs(1));
    let mut healthy = false;
    for attempt in 1..=attempts {
        progress(StartPhase::HealthCheck {
            attempt,
            of: attempts,
        });
        tokio::select! {
            _ = process.exited() => return Err(NotReady::Exited),
            health = client.health(deadline) => if health == Ok(true) {
                healthy = true;
                break;
            },
        }
        if attempt < attempts {
            tokio::select! {
                _ = process.exited() => return Err(NotReady::Exited),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
    if !healthy {
        return Err(NotReady::NeverHealthy { attempts, interval });
    }
    if let Some(load) = load {
        progress(StartPhase::Loading {
            model: load.model.clone(),
        });
        tokio::select! {
            _ = process.exited() => return Err(NotReady::ExitedWhileLoading(load.model.clone())),
            loaded = client.load_model(load, settings.load_timeout) => {
                loaded.map_err(|source| NotReady::Load { model: load.model.clone(), source })?;
            }
        }
    }
    Ok(())
}

/// Checks that an external backend answers `Health` OK.
pub(super) async fn await_attached(
    client: &BackendClient,
    settings: &Settings,
) -> Result<(), StartFailure> {
    match client.health(settings.status_timeout).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(StartFailure::Unhealthy),
        Err(e) => Err(StartFailure::Health(e)),
    }
}
