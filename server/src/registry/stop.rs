//! Stopping a backend: waiting while it is busy (unless forced), `Free`, then ending a managed
//! backend's process tree.

use super::RegistryError;
use super::model::{Event, Reporter};
use crate::config::Settings;
use crate::grpc::{BackendClient, CallError};
use crate::process::{ProcessId, ProcessSampler};
use crate::supervisor::ManagedProcess;
use app::snapshot::BackendState;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pause between `Status` calls while waiting for a busy backend.
const BUSY_POLL: Duration = Duration::from_millis(250);

/// What one stop works on.
pub(super) struct StopPlan {
    pub(super) model: String,
    pub(super) client: BackendClient,
    /// A managed backend's process; `None` for an external one (only `Free` is called).
    pub(super) process: Option<ManagedProcess>,
    /// The watched process and the root of its tree, for the freed-memory report.
    pub(super) tree: Option<(ProcessId, u32)>,
    pub(super) sampler: ProcessSampler,
    /// How long to wait for a busy backend; `None` to stop it whatever it is doing.
    pub(super) busy_wait: Option<Duration>,
    /// Ask the backend to `Free` its memory first (not when it never finished starting, nor at
    /// exit, where the process ends anyway).
    pub(super) free: bool,
    pub(super) settings: Arc<Settings>,
}

/// Runs a stop and reports its phases to the model's owner, with what it released (measured
/// before `Free` and after the processes are gone) unless it is a stop without `Free` (a
/// cancelled start, backend-monitor exiting).
pub(super) async fn stop(plan: StopPlan, reporter: Reporter) {
    if let Some(limit) = plan.busy_wait {
        if let Err(refused) = wait_while_busy(&plan, limit).await {
            reporter.send(Event::StopRefused(refused));
            return;
        }
        reporter.send(Event::BusyWaitOver);
    }
    let before = match plan.tree {
        Some((process, root)) if plan.free => plan.sampler.holding(process, root).await,
        _ => None,
    };
    if plan.free {
        match plan.client.free(plan.settings.free_timeout).await {
            Ok(()) | Err(CallError::Unimplemented) => {}
            Err(e) => tracing::warn!(model = %plan.model, "Free failed ({e}); stopping anyway"),
        }
    }
    let exit = match &plan.process {
        Some(process) => Some(process.terminate(plan.settings.stop_grace).await),
        None => None,
    };
    let freed = match before {
        Some(before) => Some(plan.sampler.released(before).await),
        None => None,
    };
    if let Some(freed) = &freed {
        tracing::info!(
            model = %plan.model,
            rss_released = freed.rss_released(),
            gpu_released = freed.gpu_released(),
            "memory released"
        );
        for held in &freed.still_held {
            tracing::warn!(model = %plan.model, "memory still held after the stop: {held}");
        }
    }
    reporter.send(Event::Stopped(exit, freed));
}

/// Waits while the backend is BUSY. A `Status` that does not answer within its deadline counts
/// as busy too (LocalAI's Python backends serve one request at a time); any other failure means
/// the backend is not working on anything `Free` would cut short.
async fn wait_while_busy(plan: &StopPlan, limit: Duration) -> Result<(), RegistryError> {
    let started = Instant::now();
    loop {
        match plan.client.status(plan.settings.status_timeout).await {
            Ok(status) if status.state == BackendState::Busy => {}
            Err(CallError::TimedOut(_)) => {}
            _ => return Ok(()),
        }
        let waited = started.elapsed();
        if waited >= limit {
            return Err(RegistryError::Busy {
                model: plan.model.clone(),
                waited,
            });
        }
        tokio::time::sleep(BUSY_POLL.min(limit - waited)).await;
    }
}
