//! The HTTP/2 connection to one backend, as the service tonic's generated client calls through.
//!
//! tonic's `Channel` puts a `Buffer` (a worker task and a queue) and a `Reconnect` layer in front
//! of each connection, and hyper a dispatch queue and a second task; with 1,000 backends that
//! machinery outweighed everything else the server keeps per backend. Here a call takes the
//! connection's `h2` handle (dialling first when there is none, or the last one closed) and
//! sends on it: the only task per backend is the one driving the connection. The caller's
//! deadline covers dialling as well as the call.

use http_body::Body as _;
use http_body_util::BodyExt as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Bytes, Service};

/// The connection to the backend at one `host:port`, shared by all clones; dialled on first
/// use and again once it has closed (the backend restarted, or went away and came back).
#[derive(Clone, Debug)]
pub(super) struct Connection {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    address: Box<str>,
    /// Held while dialling, so concurrent calls share one dial.
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Counts the dials, so that a caller that found the connection closed dials only if
    /// nobody has since.
    dialled: u64,
    sender: Option<h2::client::SendRequest<Bytes>>,
}

impl Connection {
    /// A connection to `address` (`host:port`), dialled on the first call.
    pub(super) fn new(address: &str) -> Self {
        Self {
            shared: Arc::new(Shared {
                address: address.into(),
                slot: Mutex::default(),
            }),
        }
    }

    /// The connection's handle and its dial's number: the open connection, or a new one when
    /// there is none or it is dial number `closed`.
    async fn sender(
        &self,
        closed: Option<u64>,
    ) -> Result<(u64, h2::client::SendRequest<Bytes>), Status> {
        let mut slot = self.shared.slot.lock().await;
        if let Some(sender) = &slot.sender
            && closed != Some(slot.dialled)
        {
            return Ok((slot.dialled, sender.clone()));
        }
        slot.sender = None;
        let sender = dial(&self.shared.address).await?;
        slot.dialled += 1;
        slot.sender = Some(sender.clone());
        Ok((slot.dialled, sender))
    }

    /// Sends `request` and returns the response once its headers came. A connection found
    /// closed before the request went out (the backend restarted since the last call) is
    /// dialled again, once.
    async fn send(self, request: Request<Body>) -> Result<Response<Incoming>, Status> {
        let (dialled, sender) = self.sender(None).await?;
        let mut sender = match sender.ready().await {
            Ok(sender) => sender,
            Err(_) => {
                let (_, sender) = self.sender(Some(dialled)).await?;
                sender.ready().await.map_err(lost)?
            }
        };
        let (parts, mut body) = request.into_parts();
        let end = body.is_end_stream();
        let (response, mut stream) = sender
            .send_request(Request::from_parts(parts, ()), end)
            .map_err(lost)?;
        if !end {
            // A unary request's body is ready at once; h2 queues what exceeds the window.
            let mut trailers = None;
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                match frame.into_data() {
                    Ok(data) => stream.send_data(data, false).map_err(lost)?,
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
            }
            match trailers {
                Some(trailers) => stream.send_trailers(trailers).map_err(lost)?,
                None => stream.send_data(Bytes::new(), true).map_err(lost)?,
            }
        }
        let response = response.await.map_err(lost)?;
        Ok(response.map(|recv| Incoming {
            recv,
            data_done: false,
        }))
    }
}

/// How much a backend may send on one call before it is read, as hyper's client allows.
/// Flow-control limits, not buffers: nothing is allocated up front.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// How much a backend may send on all calls together before they are read, as hyper's client
/// allows. h2 also closes a connection whose small DATA frames pile up unread beyond half of
/// this: with h2's default (64 KiB) a burst of a few hundred `Status` calls at once (1,000
/// `/backend/monitor` readers) did.
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// Connects over TCP and starts HTTP/2 on it; the connection's task runs until the backend
/// closes the connection or every handle to it is dropped.
async fn dial(address: &str) -> Result<h2::client::SendRequest<Bytes>, Status> {
    let unreachable = |e: std::io::Error| Status::unavailable(format!("tcp connect error: {e}"));
    let stream = TcpStream::connect(address).await.map_err(unreachable)?;
    stream.set_nodelay(true).map_err(unreachable)?;
    let (sender, connection) = h2::client::Builder::new()
        .initial_max_send_streams(100)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(16 * 1024)
        .max_header_list_size(16 * 1024)
        .max_send_buffer_size(1024 * 1024)
        .max_local_error_reset_streams(Some(1024))
        .enable_push(false)
        .handshake(stream)
        .await
        .map_err(|e| Status::unavailable(format!("http/2 handshake failed: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%e, "backend connection closed");
        }
    });
    Ok(sender)
}

/// A failed call as a gRPC status: a connection that broke or was closed is UNAVAILABLE (as a
/// backend that cannot be reached); tonic sorts the rest (a reset stream, a protocol error).
fn lost(error: h2::Error) -> Status {
    if error.is_io() || error.is_go_away() {
        Status::unavailable(format!("connection lost: {error}"))
    } else {
        Status::from_error(Box::new(error))
    }
}

/// A response body: the DATA frames (their flow-control window given back as they are
/// taken), then the trailers, where gRPC puts its status.
#[derive(Debug)]
pub(super) struct Incoming {
    recv: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only once the stream is gone, which the next poll reports.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        Poll::Ready(
            ready!(self.recv.poll_trailers(cx))
                .map(|trailers| trailers.map(http_body::Frame::trailers))
                .transpose(),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
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
