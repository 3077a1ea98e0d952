//! The running gRPC server: listens, serves until shutdown, then drains.
//!
//! On shutdown the health service turns NOT_SERVING first, then the server
//! stops accepting connections and streams (HTTP/2 GOAWAY) and waits for the
//! streams in flight, whose producers still get their acknowledgement.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventstash_plugin_api::{BoxError, EventSink, Input, InputContext};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha;
use tracing::info;

use crate::config::GrpcInputError;
use crate::proto;
use crate::proto::event_stash_server::EventStashServer;
use crate::service::{EventStashService, StreamMetrics};

/// HTTP/2 flow-control windows. Larger than the 64 KiB default so a producer
/// streaming small events is not stalled every few hundred events, yet small
/// enough that a stalled stream buffers little.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// How long idle connections may take to close after the last stream.
const IDLE_CONNECTION_GRACE: Duration = Duration::from_millis(500);

/// A checked, not yet listening, gRPC input.
#[derive(Debug)]
pub struct GrpcInput {
    /// Where to listen.
    pub(crate) addr: SocketAddr,
    /// Largest accepted message, in bytes.
    pub(crate) max_message_size: usize,
    /// Most events in one pipeline batch.
    pub(crate) max_batch_events: usize,
}

impl GrpcInput {
    /// The address the input will listen on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[async_trait]
impl Input for GrpcInput {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<(), BoxError> {
        let addr = self.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GrpcInputError::Listen { addr, source })?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let reporting = tokio::spawn(report_health(health.clone(), ctx.serving.clone()));

        let max_batch_events = self.max_batch_events.min(ctx.sink.max_batch_events()).max(1);
        // The service holds the sink weakly, so that returning from here
        // closes the pipeline queue even if a connection task lingers.
        let sink: Arc<dyn EventSink> = Arc::from(ctx.sink);
        let streams = TaskTracker::new();
        let service = EventStashService::new(
            Arc::downgrade(&sink),
            max_batch_events,
            streams.clone(),
            StreamMetrics::new(&ctx.context),
        );
        let event_stash = EventStashServer::new(service).max_decoding_message_size(self.max_message_size);

        let input = ctx.context.plugin.clone();
        info!(%input, %addr, "gRPC input listening");
        let shutdown = ctx.shutdown.clone();
        let stop_serving = async move {
            shutdown.cancelled().await;
            // Tell load balancers and `eventstash healthcheck` first, before
            // the listener closes.
            reporting.abort();
            for service in ["", SERVICE_NAME] {
                health.set_service_status(service, ServingStatus::NotServing).await;
            }
            info!(%addr, "gRPC input stops accepting streams; finishing those in flight");
        };
        // Small acks must not wait for Nagle's algorithm (40 ms stalls).
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (reflection, reflection_v1alpha) = reflection_services()?;
        let serve = Server::builder()
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(event_stash)
            .serve_with_incoming_shutdown(incoming, stop_serving);
        // A graceful HTTP/2 close waits for every client to answer the
        // GOAWAY; a frozen client must not hold up the drain. Once every
        // stream in flight has finished, idle connections get a short grace.
        let streams_finished = async {
            ctx.shutdown.cancelled().await;
            streams.close();
            streams.wait().await;
            tokio::time::sleep(IDLE_CONNECTION_GRACE).await;
        };
        tokio::select! {
            served = serve => served.map_err(|source| GrpcInputError::Serve { addr, source })?,
            () = streams_finished => info!(%addr, "closing idle client connections"),
        }
        drop(sink);
        info!(%input, %addr, "gRPC input stopped");
        Ok(())
    }
}

/// Server reflection (v1 and v1alpha, for older grpcurl) over the service
/// and health protos, so clients need no proto file to explore the server.
fn reflection_services() -> Result<
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
