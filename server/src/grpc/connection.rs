//! The HTTP/2 connection to one backend, as the service tonic's generated client calls through.
//!
//! tonic's `Channel` puts a `Buffer` (a worker task and a queue) and a `Reconnect` layer in front
//! of each connection; with 1,000 backends that machinery outweighed everything else the server
//! keeps per backend. Here a call takes the connection's `SendRequest` (dialling first when there
//! is none, or the last one closed) and sends on it: nothing runs per backend but hyper's own
//! connection task. The caller's deadline covers dialling as well as the call.

use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};

/// The connection to the backend at one `host:port`, shared by all clones; dialled on first
/// use and again once it has closed (the backend restarted, or went away and came back).
#[derive(Clone, Debug)]
pub(super) struct Connection {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    address: Box<str>,
    /// The open connection, if any. Held while dialling, so concurrent calls share one dial.
    sender: Mutex<Option<SendRequest<Body>>>,
}

impl Connection {
    /// A connection to `address` (`host:port`), dialled on the first call.
    pub(super) fn new(address: &str) -> Self {
        Self {
            shared: Arc::new(Shared {
                address: address.into(),
                sender: Mutex::new(None),
            }),
        }
    }

    /// The open connection, dialled now if there is none.
    async fn sender(&self) -> Result<SendRequest<Body>, Status> {
        let mut slot = self.shared.sender.lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        *slot = None;
        let sender = dial(&self.shared.address).await?;
        *slot = Some(sender.clone());
        Ok(sender)
    }

    /// Sends `request`; a request the connection closed under before sending it goes once more
    /// on a new connection.
    async fn send(self, request: Request<Body>) -> Result<Response<Incoming>, Status> {
        let mut sender = self.sender().await?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response),
            Err(mut failed) => match failed.take_message() {
                Some(request) => self
                    .sender()
                    .await?
                    .send_request(request)
                    .await
                    .map_err(lost),
                None => Err(lost(failed.into_error())),
            },
        }
    }
}

/// Connects over TCP and starts HTTP/2 on it; hyper's connection task runs until the backend
/// closes the connection or every `SendRequest` for it is dropped.
async fn dial(address: &str) -> Result<SendRequest<Body>, Status> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| Status::unavailable(format!("tcp connect error: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| Status::unavailable(format!("tcp connect error: {e}")))?;
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Status::unavailable(format!("http/2 handshake failed: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%e, "backend connection closed");
        }
    });
    Ok(sender)
}

/// A failed send as a gRPC status: a connection that closed under the call is UNAVAILABLE (as
/// for a backend that cannot be reached); tonic sorts the rest as it does for its own channel.
fn lost(error: hyper::Error) -> Status {
    if error.is_closed() || error.is_canceled() {
        Status::unavailable(format!("connection lost: {error}"))
    } else {
        Status::from_error(Box::new(error))
    }
}

impl Service<Request<Body>> for Connection {
    type Response = Response<Incoming>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Self::Error>;

    /// Always ready: readiness is settled per call, when the connection is taken.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(self.clone().send(request))
    }
}
