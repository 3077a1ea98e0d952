//! The running gRPC server: listens, serves until shutdown, then drains.
//!
//! The services (`hfx.v1.EventStash`, health, reflection) are tonic's; the
//! accept loop ([`crate::listener`]) and each connection
//! ([`crate::connection`]) are ours, so that connections, handshakes, idle
//! time and bytes in flight all have limits.
//!
//! On shutdown the health service turns NOT_SERVING first, then the
//! listener closes and every connection gets a GOAWAY; the streams in
//! flight finish and their producers still get their acknowledgement.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventstash_plugin_api::{BoxError, EventSink, Input, InputContext};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha;
use tracing::info;

use crate::config::Limits;
use crate::connection::ConnectionContext;
use crate::error::GrpcInputError;
use crate::event_store::{EventStoreBackends, ServeContext};
use crate::inflight::InflightBudget;
use crate::listener::accept_connections;
use crate::open_files::raise_open_file_limit;
use crate::proto;
use crate::proto::event_stash_server::EventStashServer;
use crate::security::Security;
use crate::service::{EventStashService, StreamMetrics};

/// How long connections may take to close after the last stream, before
/// they are dropped.
const IDLE_CONNECTION_GRACE: Duration = Duration::from_millis(500);

/// A checked, not yet listening, gRPC input.
#[derive(Debug)]
pub struct GrpcInput {
    /// Where to listen.
    pub(crate) addr: SocketAddr,
    /// Sizes, counts and timeouts.
    pub(crate) limits: Limits,
    /// TLS and producer authentication.
    pub(crate) security: Security,
    /// A socket already bound, served instead of binding `addr`: an
    /// embedding program (a test) binds port 0 itself and knows the port
    /// without probing for a free one.
    pub(crate) listener: Option<std::net::TcpListener>,
}

impl GrpcInput {
    /// Serves on `listener` (already bound) instead of binding `bind`.
    pub fn with_listener(mut self, listener: std::net::TcpListener) -> GrpcInput {
        if let Ok(addr) = listener.local_addr() {
            self.addr = addr;
        }
        self.listener = Some(listener);
        self
    }
}

#[async_trait]
impl Input for GrpcInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<(), BoxError> {
        self.serve(ctx, None).await
    }
}

impl GrpcInput {
    /// Serves `hfx.v1.EventStash`, and `hfx.v1.EventStore` if given, until
    /// shutdown, then drains.
    pub(crate) async fn serve(
        self,
        ctx: InputContext,
        event_store: Option<EventStoreBackends>,
    ) -> Result<(), BoxError> {
        let GrpcInput {
            addr,
            limits,
            security,
            listener,
        } = self;
        raise_open_file_limit(limits.max_connections);
        let listener = match listener {
            Some(bound) => bound.set_nonblocking(true).and_then(|()| TcpListener::from_std(bound)),
            None => TcpListener::bind(addr).await,
        }
        .map_err(|source| GrpcInputError::Listen { addr, source })?;
        // With port 0 the system picks the port; the "listening" line names
        // the one bound (a documented interface: tests and scripts read it).
        let addr = listener.local_addr().unwrap_or(addr);
        let (health, health_service) = tonic_health::server::health_reporter();
        let reporting = tokio::spawn(report_health(health.clone(), ctx.serving.clone()));

        let max_batch_events = limits.max_batch_events.min(ctx.sink.max_batch_events()).max(1);
        // The service holds the sink weakly, so that returning from here
        // closes the pipeline queue even if a connection task lingers.
        let sink: Arc<dyn EventSink> = Arc::from(ctx.sink);
        let streams = TaskTracker::new();
        let service = EventStashService::new(
            Arc::downgrade(&sink),
            max_batch_events,
            limits.max_held_stream_bytes(),
            streams.clone(),
            StreamMetrics::new(&ctx.context),
            limits.max_json_depth,
            ctx.shutdown.clone(),
        );
        let event_stash = EventStashServer::new(service).max_decoding_message_size(limits.max_message_size);
        let (reflection, reflection_v1alpha) = reflection_services(event_store.is_some())?;
        let mut routes = Routes::new(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(event_stash);
        if let Some(backends) = event_store {
            let serving = ServeContext {
                sink: &sink,
                appends: &streams,
                health: &health,
                serving: &ctx.serving,
                shutdown: &ctx.shutdown,
                max_message_size: limits.max_message_size,
                max_json_depth: limits.max_json_depth,
            };
            routes = backends.serve_on(routes, serving);
        }
        let routes = routes.prepare();

        let closing = CancellationToken::new();
        let abort = CancellationToken::new();
        let budget = InflightBudget::new(&limits, &ctx.context);
        let context = Arc::new(ConnectionContext::new(
            &limits,
            routes,
            budget,
            closing.clone(),
            abort.clone(),
            security.clone(),
            &ctx.context,
        ));
        let input = ctx.context.plugin.clone();
        info!(%input, %addr, max_connections = limits.max_connections, max_inflight_bytes = limits.max_inflight_bytes, "gRPC input listening");
        security.start(addr, ctx.shutdown.clone());

        let connections = TaskTracker::new();
        let stop_accepting = CancellationToken::new();
        let accepting = accept_connections(
            listener,
            addr,
            limits.max_connections,
            context,
            &connections,
            stop_accepting.clone(),
        );
        let stop = async {
            ctx.shutdown.cancelled().await;
            // Tell load balancers and `eventstash healthcheck` first, before
            // the listener closes.
            reporting.abort();
            for service in ["", SERVICE_NAME] {
                health.set_service_status(service, ServingStatus::NotServing).await;
            }
            info!(%addr, "gRPC input stops accepting streams; finishing those in flight");
            stop_accepting.cancel();
            closing.cancel();
        };
        tokio::join!(accepting, stop);

        // A graceful HTTP/2 close waits for every client to answer the
        // GOAWAY; a frozen client must not hold up the drain. Once every
        // stream in flight has finished, connections get a short grace.
        streams.close();
        streams.wait().await;
        connections.close();
        if tokio::time::timeout(IDLE_CONNECTION_GRACE, connections.wait())
            .await
            .is_err()
        {
            info!(%addr, "closing idle client connections");
            abort.cancel();
            connections.wait().await;
        }
        drop(sink);
        info!(%input, %addr, "gRPC input stopped");
        Ok(())
    }
}

/// Server reflection (v1 and v1alpha, for older grpcurl) over the service
/// and health protos, so clients need no proto file to explore the server.
fn reflection_services(
    event_store: bool,
) -> Result<
    (
        ServerReflectionServer<impl ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    GrpcInputError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(if event_store {
                proto::EVENT_STORE_FILE_DESCRIPTOR_SET
            } else {
                &[]
            })
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Mirrors the agent's health in `grpc.health.v1`: the overall service ("")
/// and `hfx.v1.EventStash` are SERVING exactly while the agent is.
async fn report_health(health: tonic_health::server::HealthReporter, mut serving: tokio::sync::watch::Receiver<bool>) {
    loop {
        let status = if *serving.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        health.set_service_status(SERVICE_NAME, status).await;
        if serving.changed().await.is_err() {
            return;
        }
    }
}

/// The full name of the event service, as health checks name it.
const SERVICE_NAME: &str = "hfx.v1.EventStash";
