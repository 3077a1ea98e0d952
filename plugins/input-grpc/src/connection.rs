//! One client connection, from its TLS handshake and HTTP/2 preface to its
//! close.
//!
//! A connection must finish its TLS handshake (on a port with `tls`) and
//! send the 24-byte HTTP/2 preface within `handshake_timeout`, or it is
//! closed: a socket that never speaks holds a descriptor and a
//! `max_connections` slot for nothing. A client that speaks plain HTTP/2 to
//! a TLS port fails the handshake and is closed. Then hyper serves
//! HTTP/2 on it with the input's windows and stream limit, PINGs the peer
//! every `keepalive_interval` (a peer that does not answer within
//! `keepalive_timeout` is gone, and so is the connection), and every
//! request body takes its room from the in-flight budget. A connection
//! with no stream for `idle_timeout`, or any connection once the agent
//! shuts down, is closed gracefully: GOAWAY, then the streams in flight
//! finish. The input's drain cancels `abort` to drop what is left.
//!
//! Every request is admitted by [`crate::auth`] before it is routed: the
//! producer it names (by token, or by the connection's client certificate)
//! goes into the request's extensions for the services, and a request
//! without valid credentials is answered with its status and never reaches
//! a service.
//!
//! Per connection, memory is bounded by the receive window (data hyper has
//! taken from the socket and the streams have not read), the codec's
//! buffers (a frame each way, HPACK tables: about 64 KiB) and, per open
//! stream, headers of at most `MAX_HEADER_LIST_SIZE`, the decoder's buffer
//! and one frame waiting for the budget: about 48 KiB.

use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use eventstash_plugin_api::{LogThrottle, PluginContext};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::{Counter, counter};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::Service;
use tonic::service::Routes;
use tracing::{debug, warn};

use crate::auth::Producer;
use crate::config::Limits;
use crate::inflight::{BudgetedBody, InflightBudget};
use crate::security::Security;
use crate::tls;

/// The client connection preface every HTTP/2 connection starts with.
const PREFACE_LEN: usize = 24;

/// Largest header block a stream may send (hyper's default, stated here
/// because the memory bound depends on it).
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// How long an idle connection told GOAWAY has to close by itself.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// How often failed TLS handshakes are logged at most.
const HANDSHAKE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// What every connection of one input shares.
pub(crate) struct ConnectionContext {
    /// hyper's HTTP/2 settings: windows, streams, PINGs.
    http2: http2::Builder<TokioExecutor>,
    /// Time to receive the preface.
    handshake_timeout: Duration,
    /// Time without a stream before a graceful close; `None`: never.
    idle_timeout: Option<Duration>,
    /// The gRPC services.
    routes: Routes,
    /// Room for bytes in flight, shared by every stream.
    budget: InflightBudget,
    /// Cancelled when the agent shuts down: close gracefully.
    closing: CancellationToken,
    /// Cancelled at the end of the drain: drop the connection now.
    abort: CancellationToken,
    /// TLS, and who may send what.
    security: Security,
    /// Failed TLS handshakes are logged once per interval.
    handshake_log: LogThrottle,
    /// Requests refused by [`crate::auth`], by status.
    refused: RefusedRequests,
}

/// Metric name of refused requests.
const REQUESTS_REFUSED: &str = "eventstash_grpc_requests_refused_total";

/// Requests the input refused before reading them, by status code.
struct RefusedRequests {
    unauthenticated: Counter,
    permission_denied: Counter,
}

impl RefusedRequests {
    fn new(context: &PluginContext) -> RefusedRequests {
        let counter = |code: &'static str| {
            counter!(
                REQUESTS_REFUSED,
                "pipeline" => context.pipeline.clone(),
                "plugin" => context.plugin.clone(),
                "code" => code
            )
        };
        RefusedRequests {
            unauthenticated: counter("UNAUTHENTICATED"),
            permission_denied: counter("PERMISSION_DENIED"),
        }
    }

    fn count(&self, status: &Status) {
        match status.code() {
            tonic::Code::Unauthenticated => self.unauthenticated.increment(1),
            _ => self.permission_denied.increment(1),
        }
    }
}

impl ConnectionContext {
    pub(crate) fn new(
        limits: &Limits,
        routes: Routes,
        budget: InflightBudget,
        closing: CancellationToken,
        abort: CancellationToken,
        security: Security,
        plugin: &PluginContext,
    ) -> ConnectionContext {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .initial_connection_window_size(limits.connection_window)
            .initial_stream_window_size(limits.stream_window)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .keep_alive_interval(limits.keepalive_interval)
            .keep_alive_timeout(limits.keepalive_timeout);
        ConnectionContext {
            http2,
            handshake_timeout: limits.handshake_timeout,
            idle_timeout: limits.idle_timeout,
            routes,
            budget,
            closing,
            abort,
            security,
            handshake_log: LogThrottle::new(HANDSHAKE_LOG_INTERVAL),
            refused: RefusedRequests::new(plugin),
        }
    }
}

/// Serves one accepted connection until it closes; `_slot` is its place
/// among `max_connections`, given back when this returns.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<ConnectionContext>,
    _slot: OwnedSemaphorePermit,
) {
    // The TLS handshake and the preface share one deadline.
    let deadline = Instant::now() + context.handshake_timeout;
    let Some(tls) = context.security.tls.clone() else {
        return serve_http2(stream, peer, None, deadline, context).await;
    };
    let accepted = tokio::select! {
        accepted = tokio::time::timeout_at(deadline, tls.acceptor().accept(stream)) => accepted,
        () = context.closing.cancelled() => return,
    };
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            if let Some(suppressed) = context.handshake_log.allow() {
                warn!(%peer, %error, suppressed, "TLS handshake failed (a client without TLS, an untrusted certificate, or none where one is required)");
            }
            return;
        }
        Err(_) => {
            let timeout = context.handshake_timeout;
            return debug!(%peer, ?timeout, "closed a connection that did not finish its TLS handshake in time");
        }
    };
    // rustls has verified the certificate against `client_ca_file`.
    let certified = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(tls::client_name)
        .map(|name| Arc::new(Producer::certified(name)));
    serve_http2(stream, peer, certified, deadline, context).await;
}

/// Serves HTTP/2 on a connection, once its preface arrives before
/// `deadline`. `certified` is the producer its client certificate names.
async fn serve_http2<S>(
    mut stream: S,
    peer: SocketAddr,
    certified: Option<Arc<Producer>>,
    deadline: Instant,
    context: Arc<ConnectionContext>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut preface = [0; PREFACE_LEN];
    let received = tokio::select! {
        received = tokio::time::timeout_at(deadline, stream.read_exact(&mut preface)) => received,
        () = context.closing.cancelled() => return,
    };
    match received {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return debug!(%peer, %error, "connection closed before its HTTP/2 preface"),
        Err(_) => {
            let timeout = context.handshake_timeout;
            return debug!(%peer, ?timeout, "closed a connection that sent no HTTP/2 preface in time");
        }
    }

    let (open_streams, mut open) = watch::channel(0usize);
    let open_streams = Arc::new(open_streams);
    let service = {
        let context = context.clone();
        hyper::service::service_fn(move |request| {
            handle(request, peer, certified.clone(), context.clone(), open_streams.clone())
        })
    };
    let io = TokioIo::new(Prefaced {
        preface,
        replayed: 0,
        stream,
    });
    let connection = context.http2.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    let mut idle_closing = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = context.closing.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            // Once told GOAWAY, an idle connection has a short grace: a
            // graceful close waits for the client to answer a PING, and a
            // client that never does must not keep the connection.
            () = idle(&mut open, if idle_closing { Some(GOAWAY_GRACE) } else { context.idle_timeout }),
                if !closing || idle_closing =>
            {
                if idle_closing {
                    return;
                }
                debug!(%peer, "closing a connection that has had no stream for `idle_timeout`");
                closing = true;
                idle_closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = context.abort.cancelled() => return,
        }
    }
}

/// Serves one request: its body takes room from the budget, and it counts
/// as an open stream until its response body is done.
async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    certified: Option<Arc<Producer>>,
    context: Arc<ConnectionContext>,
    open_streams: Arc<watch::Sender<usize>>,
) -> Result<Response<CountedBody>, Infallible> {
    let open = OpenStream::new(open_streams);
    let (mut parts, body) = request.into_parts();
    let admitted = context
        .security
        .auth
        .admit(parts.uri.path(), &parts.headers, certified.as_ref(), peer);
    match admitted {
        Ok(Some(producer)) => {
            parts.extensions.insert(producer);
        }
        Ok(None) => {}
        // Refused before the body is read: it takes no room in the budget.
        Err(status) => {
            context.refused.count(&status);
            let response = status.into_http::<tonic::body::Body>();
            return Ok(response.map(|body| CountedBody { body, _open: open }));
        }
    }
    let (body, charge) = context.budget.wrap(body, peer);
    // The service gives room back through the charge once events are queued.
    parts.extensions.insert(charge);
    let request = Request::from_parts(parts, body);
    let mut routes = context.routes.clone();
    poll_fn(|cx| Service::<Request<BudgetedBody<Incoming>>>::poll_ready(&mut routes, cx)).await?;
    let response = routes.call(request).await?;
    Ok(response.map(|body| CountedBody { body, _open: open }))
}

/// Resolves once the connection has had no open stream for `timeout`;
/// never with no timeout.
async fn idle(open: &mut watch::Receiver<usize>, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        // The sender lives as long as the connection, so these never fail.
        if open.wait_for(|&streams| streams == 0).await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            () = tokio::time::sleep(timeout) => return,
            changed = open.changed() => if changed.is_err() {
                return std::future::pending().await;
            },
        }
    }
}

/// Counts a stream as open until dropped.
struct OpenStream(Arc<watch::Sender<usize>>);

impl OpenStream {
    fn new(streams: Arc<watch::Sender<usize>>) -> OpenStream {
        streams.send_modify(|open| *open += 1);
        OpenStream(streams)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

/// A response body that keeps its stream counted as open.
struct CountedBody {
    body: tonic::body::Body,
    _open: OpenStream,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection, with the preface already read from it given back to
/// hyper first.
struct Prefaced<S> {
    preface: [u8; PREFACE_LEN],
    replayed: usize,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefaced<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.replayed < PREFACE_LEN {
            let rest = &self.preface[self.replayed..];
            let taken = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..taken]);
            self.replayed += taken;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefaced<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
