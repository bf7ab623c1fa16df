//! The gRPC client for one backend: every call has a deadline, and errors are sorted into the
//! cases the rest of the server acts on (unimplemented, timed out, unreachable, failed).

mod connection;

use crate::config::LoadSpec;
use app::snapshot::{
    BackendState, BackendStatus, Generation, MemoryUsage, StatusFailure, StatusFailureKind,
};
use connection::Connection;
use proto::backend_client::BackendClient as RawClient;
use std::future::Future;
use std::time::Duration;
use tonic::Code;
use tonic::codegen::http::Uri;

/// Why a gRPC call gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The backend does not implement this RPC.
    #[error("not implemented by the backend")]
    Unimplemented,
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// No connection could be made.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The backend answered with an error status.
    #[error("{code:?}: {message}")]
    Failed {
        /// gRPC status code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// The backend answered `success: false`.
    #[error("{0}")]
    Rejected(String),
}

impl CallError {
    /// The kind of failure, as the panel and the metrics sort it.
    pub fn kind(&self) -> StatusFailureKind {
        match self {
            CallError::Unimplemented => StatusFailureKind::Unimplemented,
            CallError::TimedOut(_) => StatusFailureKind::TimedOut,
            CallError::Unreachable(_) => StatusFailureKind::Unreachable,
            CallError::Failed { .. } | CallError::Rejected(_) => StatusFailureKind::Error,
        }
    }

    /// The failure as the panel and history see it.
    pub fn to_status_failure(&self) -> StatusFailure {
        StatusFailure {
            kind: self.kind(),
            message: self.to_string(),
        }
    }
}

/// Sorts a gRPC error. `deadline_passed`: the call's deadline is (about) over, so a CANCELLED
/// is the backend enforcing our `grpc-timeout` (tonic servers answer so), not a failure.
fn classify(status: tonic::Status, deadline: Duration, deadline_passed: bool) -> CallError {
    match status.code() {
        Code::Unimplemented => CallError::Unimplemented,
        Code::DeadlineExceeded => CallError::TimedOut(deadline),
        Code::Cancelled if deadline_passed => CallError::TimedOut(deadline),
        Code::Unavailable => CallError::Unreachable(status.message().to_string()),
        code => CallError::Failed {
            code,
            message: status.message().to_string(),
        },
    }
}

/// A lazily connected client for the backend at one address; cheap to clone.
#[derive(Clone, Debug)]
pub struct BackendClient {
    raw: RawClient<Connection>,
}

impl BackendClient {
    /// Prepares a client for `host:port`; nothing is dialled until the first call.
    pub fn new(address: &str) -> Result<Self, CallError> {
        let origin = Uri::try_from(format!("http://{address}"))
            .map_err(|e| CallError::Unreachable(format!("bad address {address:?}: {e}")))?;
        Ok(Self {
            raw: RawClient::with_origin(Connection::new(address), origin),
        })
    }

    /// `Health`: true when the backend answers exactly `OK`.
    pub async fn health(&self, deadline: Duration) -> Result<bool, CallError> {
        let mut raw = self.raw.clone();
        let reply = call(deadline, |r| raw.health(r), proto::HealthMessage {}).await?;
        Ok(reply.message == b"OK")
    }

    /// `Status`: the backend's state and memory.
    pub async fn status(&self, deadline: Duration) -> Result<BackendStatus, CallError> {
        let mut raw = self.raw.clone();
        let reply = call(deadline, |r| raw.status(r), proto::HealthMessage {}).await?;
        Ok(BackendStatus {
            state: BackendState::from_code(reply.state),
            memory: reply.memory.map(|m| MemoryUsage {
                total: m.total,
                breakdown: m.breakdown.into_iter().collect(),
            }),
        })
    }

    /// `GetMetrics`: tokens per second and tokens of the current (or last) request. Most
    /// backends other than llama.cpp answer UNIMPLEMENTED.
    pub async fn generation(&self, deadline: Duration) -> Result<Generation, CallError> {
        let mut raw = self.raw.clone();
        let reply = call(deadline, |r| raw.get_metrics(r), proto::MetricsRequest {}).await?;
        Ok(Generation {
            tokens_per_second: reply.tokens_per_second,
            tokens_generated: u32::try_from(reply.tokens_generated).unwrap_or(0),
            prompt_tokens_processed: u32::try_from(reply.prompt_tokens_processed).unwrap_or(0),
        })
    }

    /// `LoadModel` with the configured options; `success: false` becomes [`CallError::Rejected`].
    pub async fn load_model(&self, spec: &LoadSpec, deadline: Duration) -> Result<(), CallError> {
        let mut raw = self.raw.clone();
        let options = proto::ModelOptions {
            model: spec.model.clone(),
            model_file: spec.model.clone(),
            model_path: spec.model.clone(),
            context_size: spec.context_size.unwrap_or_default(),
            threads: spec.threads.unwrap_or_default(),
            ngpu_layers: spec.gpu_layers.unwrap_or_default(),
            options: spec.options.clone(),
            ..Default::default()
        };
        let result = call(deadline, |r| raw.load_model(r), options).await?;
        if result.success {
            Ok(())
        } else {
            Err(CallError::Rejected(result.message))
        }
    }

    /// `Free`: asks the backend to release its memory.
    pub async fn free(&self, deadline: Duration) -> Result<(), CallError> {
        let mut raw = self.raw.clone();
        let result = call(deadline, |r| raw.free(r), proto::HealthMessage {}).await?;
        if result.success {
            Ok(())
        } else {
            Err(CallError::Rejected(result.message))
        }
    }
}

/// Runs one RPC under a deadline that also covers connecting. The deadline travels as
/// `grpc-timeout`, so the backend can abandon work nobody waits for.
async fn call<M, T, F>(
    deadline: Duration,
    rpc: impl FnOnce(tonic::Request<M>) -> F,
    message: M,
) -> Result<T, CallError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    let started = std::time::Instant::now();
    match tokio::time::timeout(deadline, rpc(request)).await {
        Err(_) => Err(CallError::TimedOut(deadline)),
        Ok(Err(status)) => {
            // The backend's clock starts a little after ours.
            let deadline_passed = started.elapsed() >= deadline.mul_f64(0.9);
            Err(classify(status, deadline, deadline_passed))
        }
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}
