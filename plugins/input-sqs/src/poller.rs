//! One poller: a loop of long-polling receives, each sent into the
//! pipeline as one batch with its own ack group.
//!
//! Before asking SQS for messages a poller takes room for a full receive
//! from the input's in-flight bound, and it does not receive again until
//! the pipeline queue has taken its batch: a full queue (or a slow output)
//! stops the polling, and memory stays bounded. The receive's settling task
//! (see [`crate::settle`]) starts before the batch is offered to the queue,
//! so the messages' visibility is kept up even while the poller waits.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use eventstash_plugin_api::{CancellationToken, Event, EventBatch, EventSink, LogThrottle, SinkError, ack_group};
use eventstash_support_aws::sqs::packed::{CODEC_ATTRIBUTE, PackedCodec};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::decode::{Received, decode};
use crate::input::PollSettings;
use crate::metrics::RequestMetrics;
use crate::retry::{FailureKind, RequestFailure, classify};
use crate::settle::settle;
use crate::unpack::unpack;

/// The message attributes the SQS output writes that decoding reads.
const KIND_ATTRIBUTE: &str = "kind";
const ID_ATTRIBUTE: &str = "id";
/// At most one warning per this interval while receives keep failing.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the pollers and settling tasks of one input share.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub(crate) client: Client,
    pub(crate) queue_url: String,
    pub(crate) settings: PollSettings,
    /// The input's id, for logs.
    pub(crate) plugin: String,
    /// Cancelled when the agent shuts down.
    pub(crate) shutdown: CancellationToken,
    /// One permit per message received and not yet deleted or released.
    pub(crate) in_flight: Arc<Semaphore>,
    /// The settling tasks, which the drain waits for.
    pub(crate) settling: TaskTracker,
    /// SQS calls made, as SQS bills them.
    pub(crate) requests: RequestMetrics,
}

/// A received message's receipt handle, to extend, delete or release it.
pub(crate) type Receipt = String;

/// Receives until shutdown; see the module documentation.
pub(crate) async fn poll(consumer: Arc<Consumer>, sink: Arc<dyn EventSink>) {
    let mut backoff = consumer.settings.backoff.clone();
    let throttle = LogThrottle::new(FAILURE_LOG_INTERVAL);
    let mut failing = false;
    let room = consumer.settings.max_messages as u32;
    loop {
        let mut permits = tokio::select! {
            permits = consumer.in_flight.clone().acquire_many_owned(room) => match permits {
                Ok(permits) => permits,
                Err(_closed) => return,
            },
            () = consumer.shutdown.cancelled() => return,
        };
        // A receive cut short by shutdown may already have been answered;
        // its messages come back once their visibility timeout ends.
        let received = tokio::select! {
            received = consumer.receive() => received,
            () = consumer.shutdown.cancelled() => return,
        };
        let messages = match received {
            Ok(messages) => {
                if std::mem::take(&mut failing) {
                    throttle.reset();
                    info!(input = %consumer.plugin, "sqs receives succeed again");
                }
                backoff.reset();
                messages
            }
            Err(failure) => {
                failing |= failure.kind != FailureKind::Throttled;
                log_failure(&consumer, &failure, &throttle);
                drop(permits);
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                    () = consumer.shutdown.cancelled() => return,
                }
            }
        };
        if messages.is_empty() {
            continue;
        }
        // Give back the room a short receive did not use.
        drop(permits.split(room as usize - messages.len()));
        if !offer(&consumer, &sink, messages, permits).await {
            return;
        }
    }
}

/// Sends the messages' events into the pipeline with a fresh ack group
/// whose outcome their settling task waits for. False when the pipeline
/// no longer takes events (shutdown).
async fn offer(
    consumer: &Arc<Consumer>,
    sink: &Arc<dyn EventSink>,
    messages: Vec<Message>,
    permits: OwnedSemaphorePermit,
) -> bool {
    let (events, receipts) = decode_all(&messages, &consumer.plugin);
    drop(messages);
    let (ack, stored) = ack_group();
    consumer
        .settling
        .spawn(settle(consumer.clone(), receipts, stored, permits));
    let batch = EventBatch {
        events,
        ack,
        flush: false,
    };
    // On shutdown the batch is dropped, which fails its ack group: the
    // settling task then makes the messages visible again at once.
    let sent = tokio::select! {
        sent = sink.send(batch) => sent,
        () = consumer.shutdown.cancelled() => Err(SinkError::Closed),
    };
    match sent {
        Ok(()) => true,
        Err(SinkError::Closed) => false,
        Err(error) => {
            warn!(input = %consumer.plugin, %error, "the pipeline did not take received messages; they will come back");
            true
        }
    }
}

/// The events of the messages (a packed message holds many), and their
/// receipts.
fn decode_all(messages: &[Message], plugin: &str) -> (Vec<Event>, Vec<Receipt>) {
    let mut events = Vec::with_capacity(messages.len());
    let mut receipts = Vec::with_capacity(messages.len());
    for message in messages {
        let attribute = |name: &str| {
            message
                .message_attributes()
                .and_then(|attributes| attributes.get(name))
                .and_then(|value| value.string_value())
        };
        let sent_at = message
            .attributes()
            .and_then(|attributes| attributes.get(&MessageSystemAttributeName::SentTimestamp))
            .and_then(|millis| millis.parse::<i64>().ok())
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_else(Utc::now);
        let received = Received {
            body: message.body().unwrap_or_default(),
            message_id: message.message_id().unwrap_or_default(),
            kind: attribute(KIND_ATTRIBUTE),
            id: attribute(ID_ATTRIBUTE),
            sent_at,
        };
        match attribute(CODEC_ATTRIBUTE).and_then(PackedCodec::from_attribute) {
            Some(codec) => unpack(received, codec, plugin, &mut events),
            None => events.push(decode(received)),
        }
        if let Some(handle) = message.receipt_handle() {
            receipts.push(handle.to_owned());
        }
    }
    (events, receipts)
}

fn log_failure(consumer: &Consumer, failure: &RequestFailure, throttle: &LogThrottle) {
    let reason = &failure.reason;
    if failure.kind == FailureKind::Throttled {
        debug!(input = %consumer.plugin, %reason, "sqs throttled a receive; retrying");
        return;
    }
    let Some(suppressed) = throttle.allow() else {
        debug!(input = %consumer.plugin, %reason, "sqs receive failed again; retrying");
        return;
    };
    if failure.kind == FailureKind::NeedsOperator {
        error!(
            input = %consumer.plugin, %reason, suppressed,
            "sqs refuses our receives; retrying until this is fixed"
        );
    } else {
        warn!(input = %consumer.plugin, %reason, suppressed, "sqs receive failed; retrying");
    }
}

impl Consumer {
    /// One long-polling receive.
    async fn receive(&self) -> Result<Vec<Message>, RequestFailure> {
        let settings = &self.settings;
        let received = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(settings.max_messages as i32)
            .wait_time_seconds(settings.wait_time.as_secs() as i32)
            .visibility_timeout(settings.visibility_timeout.as_secs() as i32)
            .message_attribute_names(KIND_ATTRIBUTE)
            .message_attribute_names(ID_ATTRIBUTE)
            .message_attribute_names(CODEC_ATTRIBUTE)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await;
        let messages = received
            .map(|output| output.messages.unwrap_or_default())
            .map_err(|error| classify(&error));
        let payload = messages
            .as_ref()
            .map_or(0, |messages| messages.iter().map(payload_bytes).sum());
        self.requests.record("ReceiveMessage", payload);
        messages
    }
}

/// What SQS counts of a received message: its body and its attributes'
/// names, data types and values.
fn payload_bytes(message: &Message) -> usize {
    let attributes = message.message_attributes().map_or(0, |attributes| {
        attributes
            .iter()
            .map(|(name, value)| name.len() + value.data_type().len() + value.string_value().map_or(0, str::len))
            .sum()
    });
    message.body().map_or(0, str::len) + attributes
}
