//! The `hfx.v1.EventStash` service: turns `StoreEvent` streams into batches.
//!
//! A stream's events are stamped with their producer's name (`source`) when
//! the request was authenticated ([`crate::auth`]), and checked against the
//! kinds the producer may write. A stream that carries one forbidden kind
//! ends with PERMISSION_DENIED and none of its events is stored: for a
//! producer limited to some kinds, the stream's events are held until its
//! last message has arrived and been checked, and only then handed to the
//! pipeline queue. Held events keep their room in the in-flight budget, and
//! one such stream may hold at most a quarter of `max_inflight_bytes`
//! (RESOURCE_EXHAUSTED past it: send fewer events per stream). Producers
//! allowed every kind stream batch by batch, as without authentication.
//!
//! Error statuses go to producers, who may be anyone: their messages are
//! short fixed sentences that say what to do, never a server path, an
//! output's error text or anything the producer sent. The details go to
//! the log at DEBUG (the outputs and the queue log their own failures,
//! throttled).

use std::mem;
use std::sync::Weak;

use chrono::Utc;
use eventstash_plugin_api::{
    AckHandle, Event, EventBatch, EventSink, Format, Payload, PluginContext, SinkError, ack_group,
};
use futures::FutureExt as _;
use metrics::{Gauge, Histogram, gauge, histogram};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::debug;

use crate::auth::{Producer, kind_denied, producer_of};
use crate::inflight::StreamCharge;
use crate::proto::event_stash_server::EventStash;
use crate::proto::store_event_request::EventFormat;
use crate::proto::{StoreEventRequest, StoreEventResponse};

/// Serves `StoreEvent` by feeding the pipeline queue.
pub(crate) struct EventStashService {
    /// The pipeline queue, gone once the input has stopped.
    sink: Weak<dyn EventSink>,
    /// Most events gathered into one batch.
    max_batch_events: usize,
    /// Most bytes of messages a stream of a producer limited to some kinds
    /// may hold until its end.
    max_held_bytes: usize,
    /// Streams in flight, so the drain knows when they are all done.
    streams: TaskTracker,
    /// Streams open and how long they wait for their ack.
    metrics: StreamMetrics,
    /// Deepest nesting of a JSON payload stored as `data`.
    max_json_depth: usize,
    /// Cancelled when the drain starts: a stream that begins after it is
    /// refused, even one that slips in between health turning NOT_SERVING
    /// and the connections' GOAWAY.
    shutdown: CancellationToken,
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
        max_held_bytes: usize,
        streams: TaskTracker,
        metrics: StreamMetrics,
        max_json_depth: usize,
        shutdown: CancellationToken,
    ) -> Self {
        EventStashService {
            sink,
            max_batch_events,
            max_held_bytes,
            streams,
            metrics,
            max_json_depth,
            shutdown,
        }
    }

    /// Reads the stream to its end, queueing its events in batches, each
    /// with a claim on the stream's ack group. Once a batch is queued, its
    /// messages' room in the in-flight budget is given back. A stream of a
    /// producer limited to some kinds is held whole until its end.
    async fn receive(
        &self,
        stream: &mut Streaming<StoreEventRequest>,
        ack: &AckHandle,
        charge: Option<&StreamCharge>,
        producer: Option<&Producer>,
    ) -> Result<(), Status> {
        let mut holding = producer
            .filter(|producer| !producer.writes_every_kind())
            .map(|_| HeldStream::default());
        // Sized like the previous batch: growing a vector of events
        // message by message moved each one several times.
        let mut expected = 0;
        loop {
            let Some(first) = stream.message().await.map_err(client_status)? else {
                return match holding {
                    Some(held) => self.send_held(held, ack, charge).await,
                    // The producer is now waiting: let the outputs flush what they hold.
                    None => self.send(Vec::new(), ack, true).await,
                };
            };
            let received_at = Utc::now();
            let mut events = Vec::with_capacity(expected.clamp(1, self.max_batch_events));
            let mut next = Some(first);
            // Take every message that has already arrived, without waiting.
            let mut ended = false;
            let mut failure = None;
            while let Some(message) = next.take() {
                if let Some(held) = &mut holding {
                    held.count(&message, self.max_held_bytes)?;
                }
                events.push(producer_event(message, received_at, producer, self.max_json_depth)?);
                if events.len() == self.max_batch_events {
                    break;
                }
                match stream.message().now_or_never() {
                    None => {}
                    Some(Ok(Some(message))) => next = Some(message),
                    Some(Ok(None)) => ended = true,
                    Some(Err(status)) => failure = Some(client_status(status)),
                }
            }
            expected = events.len();
            // Queued batches are bounded by their events, not by the room
            // their vectors keep: a short batch after a long one must not
            // hold on to the long one's room.
            if events.capacity() > 2 * events.len() {
                events.shrink_to_fit();
            }
            if let Some(held) = &mut holding {
                // A bad message ends the stream; nothing of it is stored.
                if let Some(status) = failure {
                    return Err(status);
                }
                held.events.append(&mut events);
                if ended {
                    return self.send_held(mem::take(held), ack, charge).await;
                }
                continue;
            }
            // Events received before a bad message are kept, not dropped.
            let queued = events.len();
            self.send(events, ack, ended).await?;
            if let Some(charge) = charge {
                charge.release_messages(queued);
            }
            if let Some(status) = failure {
                return Err(status);
            }
            if ended {
                return Ok(());
            }
        }
    }

    /// Queues a held stream, every kind checked, in batches.
    async fn send_held(&self, held: HeldStream, ack: &AckHandle, charge: Option<&StreamCharge>) -> Result<(), Status> {
        let mut events = held.events;
        while events.len() > self.max_batch_events {
            let rest = events.split_off(self.max_batch_events);
            let queued = events.len();
            self.send(mem::replace(&mut events, rest), ack, false).await?;
            if let Some(charge) = charge {
                charge.release_messages(queued);
            }
        }
        let queued = events.len();
        self.send(events, ack, true).await?;
        if let Some(charge) = charge {
            charge.release_messages(queued);
        }
        Ok(())
    }

    async fn send(&self, events: Vec<Event>, ack: &AckHandle, flush: bool) -> Result<(), Status> {
        let batch = EventBatch {
            events,
            ack: ack.share(),
            flush,
        };
        let sink = self.sink.upgrade().ok_or_else(|| queue_status(&SinkError::Closed))?;
        sink.send(batch).await.map_err(|error| queue_status(&error))
    }
}

#[tonic::async_trait]
impl EventStash for EventStashService {
    async fn store_event(
        &self,
        request: Request<Streaming<StoreEventRequest>>,
    ) -> Result<Response<StoreEventResponse>, Status> {
        if self.shutdown.is_cancelled() {
            return Err(Status::unavailable(
                "the agent is shutting down; send the stream to another agent or again after the restart",
            ));
        }
        let _in_flight = self.streams.token();
        let _open = OpenStream::new(&self.metrics);
        let started = std::time::Instant::now();
        let charge = request.extensions().get::<StreamCharge>().cloned();
        let producer = producer_of(&request).cloned();
        let mut stream = request.into_inner();
        let (ack, stored) = ack_group();
        let received = self
            .receive(&mut stream, &ack, charge.as_ref(), producer.as_deref())
            .await;
        // The stream's own claim: everything it will send has been queued.
        ack.delivered();
        if let Err(status) = received {
            debug!(code = ?status.code(), message = status.message(), "StoreEvent stream failed");
            return Err(status);
        }
        if let Err(error) = stored.wait().await {
            // The reason names outputs, paths and perhaps the producer's own
            // data: it is for the operator, not the producer.
            debug!(reason = %error, "StoreEvent stream not acknowledged: events were not stored");
            return Err(Status::unavailable("events were not stored; retry the stream"));
        }
        self.metrics.duration.record(started.elapsed().as_secs_f64());
        Ok(Response::new(StoreEventResponse { success: true }))
    }
}

/// The events of a stream held until its end, and the bytes of their messages.
#[derive(Default)]
struct HeldStream {
    events: Vec<Event>,
    bytes: usize,
}

impl HeldStream {
    /// Counts the bytes of `message`, refusing the stream past `max`.
    fn count(&mut self, message: &StoreEventRequest, max: usize) -> Result<(), Status> {
        self.bytes += message.encoded_len();
        if self.bytes > max {
            return Err(Status::resource_exhausted(format!(
                "a stream of a producer limited to some kinds is held until its end and may carry at most \
                 {max} bytes: send fewer events per stream"
            )));
        }
        Ok(())
    }
}

/// The event of a message from `producer` (if authenticated): stamped with
/// its name, or refused if its kind is not the producer's to write.
fn producer_event(
    message: StoreEventRequest,
    received_at: chrono::DateTime<Utc>,
    producer: Option<&Producer>,
    max_json_depth: usize,
) -> Result<Event, Status> {
    let mut event = to_event(message, received_at, max_json_depth);
    if let Some(producer) = producer {
        if !producer.may_write(&event.kind) {
            return Err(kind_denied(producer, &event.kind));
        }
        event.source = Some(producer.name().to_owned());
    }
    Ok(event)
}

/// The event of a message, its JSON checked to `max_json_depth`.
pub(crate) fn to_event(message: StoreEventRequest, received_at: chrono::DateTime<Utc>, max_json_depth: usize) -> Event {
    let format = match EventFormat::try_from(message.format) {
        Ok(EventFormat::Json) => Format::Json,
        // Unknown values are kept as bytes, like protobuf, rather than dropped.
        Ok(EventFormat::Protobuf) | Err(_) => Format::Protobuf,
    };
    let payload = Payload::decode_limited(format, message.data, max_json_depth);
    Event::with_payload(format, payload, message.kind, message.id, received_at)
}

/// Longest status message a producer is sent, well inside every client's
/// metadata limit (8 KiB in several).
const MAX_STATUS_MESSAGE: usize = 256;

/// Makes a receive error clear and short for the producer: tonic reports an
/// oversized message as OUT_OF_RANGE, where gRPC servers say
/// RESOURCE_EXHAUSTED.
fn client_status(status: Status) -> Status {
    let code = match status.code() {
        Code::OutOfRange if status.message().contains("too large") => Code::ResourceExhausted,
        code => code,
    };
    Status::new(code, truncate(status.message(), MAX_STATUS_MESSAGE))
}

/// The status for a batch the pipeline queue did not take.
fn queue_status(error: &SinkError) -> Status {
    match error {
        SinkError::Closed => Status::unavailable("the agent is shutting down; retry the stream"),
        SinkError::Unavailable(reason) => {
            debug!(%reason, "StoreEvent batch not queued");
            Status::unavailable("events could not be queued; retry the stream")
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max).rev().find(|&end| text.is_char_boundary(end)).unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_errors_are_short_and_oversized_messages_are_resource_exhausted() {
        let long = Status::invalid_argument("é".repeat(1000));
        let short = client_status(long);
        assert_eq!(short.code(), Code::InvalidArgument);
        assert!(short.message().len() <= MAX_STATUS_MESSAGE);
        assert!(short.message().starts_with("é"));
        let oversized = client_status(Status::out_of_range("decoded message length too large"));
        assert_eq!(oversized.code(), Code::ResourceExhausted);
    }

    #[test]
    fn queue_failures_do_not_echo_their_reason() {
        let status = queue_status(&SinkError::Unavailable("cannot write /var/lib/eventstash/queue".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains('/'), "{}", status.message());
    }

    #[test]
    fn json_deeper_than_the_inputs_limit_is_kept_as_flagged_text() {
        let message = |data: &'static [u8]| StoreEventRequest {
            format: EventFormat::Json as i32,
            data: bytes::Bytes::from_static(data),
            kind: "k".into(),
            id: "e".into(),
        };
        let at = Utc::now();
        assert!(matches!(to_event(message(b"[[1]]"), at, 2).payload, Payload::Json(_)));
        let deep = to_event(message(b"[[[1]]]"), at, 2);
        assert!(matches!(&deep.payload, Payload::InvalidJson { plain, .. } if plain == "[[[1]]]"));
    }
}
