//! The `hfx.v1.EventStash` service: turns `StoreEvent` streams into batches.

use std::mem;
use std::sync::Weak;

use chrono::Utc;
use eventstash_plugin_api::{AckHandle, Event, EventBatch, EventSink, Format, PluginContext, SinkError, ack_group};
use futures::FutureExt as _;
use metrics::{Gauge, Histogram, gauge, histogram};
use tokio_util::task::TaskTracker;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::debug;

use crate::proto::event_stash_server::EventStash;
use crate::proto::store_event_request::EventFormat;
use crate::proto::{StoreEventRequest, StoreEventResponse};

/// Serves `StoreEvent` by feeding the pipeline queue.
pub(crate) struct EventStashService {
    /// The pipeline queue, gone once the input has stopped.
    sink: Weak<dyn EventSink>,
    /// Most events gathered into one batch.
    max_batch_events: usize,
    /// Streams in flight, so the drain knows when they are all done.
    streams: TaskTracker,
    /// Streams open and how long they wait for their ack.
    metrics: StreamMetrics,
}

/// Metric names of the gRPC input.
const STREAMS_OPEN: &str = "eventstash_grpc_streams_open";
const STREAM_SECONDS: &str = "eventstash_grpc_stream_duration_seconds";

/// The gRPC input's own metrics.
#[derive(Clone)]
pub(crate) struct StreamMetrics {
    open: Gauge,
    duration: Histogram,
}

impl StreamMetrics {
    pub(crate) fn new(context: &PluginContext) -> StreamMetrics {
        let labels = [
            ("pipeline", context.pipeline.clone()),
            ("plugin", context.plugin.clone()),
        ];
        StreamMetrics {
            open: gauge!(STREAMS_OPEN, &labels),
            duration: histogram!(STREAM_SECONDS, &labels),
        }
    }
}

/// Counts a stream as open until dropped.
struct OpenStream<'a>(&'a StreamMetrics);

impl<'a> OpenStream<'a> {
    fn new(metrics: &'a StreamMetrics) -> Self {
        metrics.open.increment(1.0);
        OpenStream(metrics)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.open.decrement(1.0);
    }
}

impl EventStashService {
    pub(crate) fn new(
        sink: Weak<dyn EventSink>,
        max_batch_events: usize,
        streams: TaskTracker,
        metrics: StreamMetrics,
    ) -> Self {
        EventStashService {
            sink,
            max_batch_events,
            streams,
            metrics,
        }
    }

    /// Reads the stream to its end, queueing its events in batches, each
    /// with a claim on the stream's ack group.
    async fn receive(&self, stream: &mut Streaming<StoreEventRequest>, ack: &AckHandle) -> Result<(), Status> {
        let mut events = Vec::new();
        loop {
            let Some(first) = stream.message().await.map_err(client_status)? else {
                // The producer is now waiting: let the outputs flush what they hold.
                return self.send(Vec::new(), ack, true).await;
            };
            let received_at = Utc::now();
            events.push(to_event(first, received_at));
            // Take every message that has already arrived, without waiting.
            let mut ended = false;
            let mut failure = None;
            while events.len() < self.max_batch_events {
                match stream.message().now_or_never() {
                    None => break,
                    Some(Ok(Some(message))) => events.push(to_event(message, received_at)),
                    Some(Ok(None)) => {
                        ended = true;
                        break;
                    }
                    Some(Err(status)) => {
                        failure = Some(client_status(status));
                        break;
                    }
                }
            }
            // Events received before a bad message are kept, not dropped.
            self.send(mem::take(&mut events), ack, ended).await?;
            if let Some(status) = failure {
                return Err(status);
            }
            if ended {
                return Ok(());
            }
        }
    }

    async fn send(&self, events: Vec<Event>, ack: &AckHandle, flush: bool) -> Result<(), Status> {
        let batch = EventBatch {
            events,
            ack: ack.share(),
            flush,
        };
        let unavailable = |error: SinkError| Status::unavailable(format!("{error}: retry the stream"));
        let sink = self.sink.upgrade().ok_or_else(|| unavailable(SinkError::Closed))?;
        sink.send(batch).await.map_err(unavailable)
    }
}

#[tonic::async_trait]
impl EventStash for EventStashService {
    async fn store_event(
        &self,
        request: Request<Streaming<StoreEventRequest>>,
    ) -> Result<Response<StoreEventResponse>, Status> {
        let _in_flight = self.streams.token();
        let _open = OpenStream::new(&self.metrics);
        let started = std::time::Instant::now();
        let mut stream = request.into_inner();
        let (ack, stored) = ack_group();
        let received = self.receive(&mut stream, &ack).await;
        // The stream's own claim: everything it will send has been queued.
        ack.delivered();
        if let Err(status) = received {
            debug!(code = ?status.code(), message = status.message(), "StoreEvent stream failed");
            return Err(status);
        }
        stored
            .wait()
            .await
            .map_err(|error| Status::unavailable(format!("events were not stored: {error}; retry the stream")))?;
        self.metrics.duration.record(started.elapsed().as_secs_f64());
        Ok(Response::new(StoreEventResponse { success: true }))
    }
}

fn to_event(message: StoreEventRequest, received_at: chrono::DateTime<Utc>) -> Event {
    let format = match EventFormat::try_from(message.format) {
        Ok(EventFormat::Json) => Format::Json,
        // Unknown values are kept as bytes, like protobuf, rather than dropped.
        Ok(EventFormat::Protobuf) | Err(_) => Format::Protobuf,
    };
    Event::new(format, message.data, message.kind, message.id, received_at)
}

/// Makes a receive error clear to the producer: tonic reports an oversized
/// message as OUT_OF_RANGE; gRPC servers say RESOURCE_EXHAUSTED.
fn client_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("too large") {
        return Status::resource_exhausted(status.message().to_owned());
    }
    status
}
