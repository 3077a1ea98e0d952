//! The running SQS output: turns a batch into messages (one per event, or
//! packed, see [`crate::packed`]), puts them into
//! `SendMessageBatch` requests of at most 10 messages and at most the
//! queue's message size limit in total, sends several at once, and returns
//! when every event is in SQS or dead-lettered.
//!
//! The engine already batches by count, bytes and delay and runs
//! `concurrency` writes at once; within one write, `max_batches_in_flight`
//! requests run at once (see [`crate::send_batch`] for one request's
//! retries). The first write connects and finds the queue; until the queue
//! is found (a missing queue, an outage) the write waits and says why in
//! the log and in the agent's health.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use eventstash_plugin_api::{
    Backoff, BoxError, ComponentHealth, DeadLetterFile, Event, OutageReport, Output, OutputBatch, OutputMetrics,
    PluginContext,
};
use futures::StreamExt as _;
use tokio::sync::OnceCell;
use tracing::{error, info, warn};

use crate::client::{ConnectionSettings, connect};
use crate::error::SqsOutputError;
use crate::message::{Message, MessageSchema};
use crate::metrics::RequestMetrics;
use crate::packed::Packer;
use crate::queue::{QueueProblem, QueueRef, find};
use crate::send_batch::BatchSender;

/// Messages per `SendMessageBatch` request: SQS's limit.
const MESSAGES_PER_REQUEST: usize = 10;
/// At most one warning per this interval while requests keep failing.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Events SQS cannot take, with the reasons for the dead-letter file.
type Refused<'a> = Vec<(&'a Event, String)>;

/// How sends are spread, bounded and retried: the checked send options.
#[derive(Debug, Clone)]
pub(crate) struct SendSettings {
    /// `Some` with `codec = "packed"`: packs events into messages.
    pub(crate) packer: Option<Arc<Packer>>,
    /// Requests one write sends at once.
    pub(crate) batches_in_flight: usize,
    /// The configured bound of one message and of one request's messages.
    pub(crate) max_message_bytes: usize,
    /// The backoff every retry loop starts from.
    pub(crate) backoff: Backoff,
}

/// The client and the queue, once found.
#[derive(Debug)]
struct Connected {
    client: Client,
    queue_url: String,
    /// The configured bound, lowered to the queue's own limit.
    max_message_bytes: usize,
}

/// The SQS output, built by
/// [`SqsOutputConfig::build`](crate::SqsOutputConfig::build).
#[derive(Debug)]
pub struct SqsOutput {
    /// The queue as the pipeline file names it.
    queue: QueueRef,
    /// Where to connect; used once, on the first write.
    connection: ConnectionSettings,
    /// Made by the first write; later writes (and concurrent first writes)
    /// wait for the same one.
    connected: OnceCell<Connected>,
    /// How events become messages.
    schema: MessageSchema,
    /// Request spreading, size bound and retry.
    settings: SendSettings,
    /// Where events too large for a message go.
    dead_letters: DeadLetterFile,
    /// Retried and dead-lettered counters.
    metrics: OutputMetrics,
    /// Reported failing while SQS cannot be written.
    health: ComponentHealth,
    /// The plugin's id, for logs.
    plugin: String,
    /// Failing requests, shared by all requests in flight: reported on
    /// `health` and logged a few lines per outage.
    outage: OutageReport,
    /// SQS calls made, as SQS bills them.
    requests: RequestMetrics,
}

impl SqsOutput {
    pub(crate) fn new(
        queue: QueueRef,
        connection: ConnectionSettings,
        schema: MessageSchema,
        settings: SendSettings,
        dead_letters: DeadLetterFile,
        ctx: &PluginContext,
    ) -> SqsOutput {
        SqsOutput {
            queue,
            connection,
            connected: OnceCell::new(),
            schema,
            settings,
            dead_letters,
            metrics: ctx.output_metrics(),
            health: ctx.health.clone(),
            plugin: ctx.plugin.clone(),
            outage: OutageReport::new(ctx.health.clone(), FAILURE_LOG_INTERVAL),
            requests: RequestMetrics::new(&ctx.pipeline, &ctx.plugin),
        }
    }

    /// The client and queue, connecting and finding the queue on first use.
    async fn connected(&self) -> &Connected {
        self.connected.get_or_init(|| self.connect()).await
    }

    /// Connects and waits until the queue is found; never gives up, since
    /// the events wait either way and an operator may create the queue.
    async fn connect(&self) -> Connected {
        let (client, place) = connect(&self.connection).await;
        let queue = self.queue.as_str();
        info!(output = %self.plugin, queue, %place, "sqs output connecting");
        let mut backoff = self.settings.backoff.clone();
        let outage = OutageReport::new(self.health.clone(), FAILURE_LOG_INTERVAL);
        loop {
            let problem = match find(&client, &self.queue).await {
                Ok(found) => {
                    outage.recovered();
                    let max_message_bytes = found
                        .max_message_bytes
                        .map_or(self.settings.max_message_bytes, |limit| {
                            limit.min(self.settings.max_message_bytes)
                        });
                    info!(output = %self.plugin, url = %found.url, max_message_bytes, "sqs queue found");
                    return Connected {
                        client,
                        queue_url: found.url,
                        max_message_bytes,
                    };
                }
                Err(QueueProblem::Missing) => {
                    format!("sqs queue {queue} does not exist ({place}): create it or fix `queue_url`; events wait")
                }
                Err(QueueProblem::Request(failure)) => {
                    format!("cannot find sqs queue {queue} ({place}): {}", failure.reason)
                }
            };
            if let Some(line) = outage.failed(problem.clone()) {
                error!(output = %self.plugin, suppressed = line.suppressed, "{problem}");
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Sends the batch; returns the events SQS refused, with reasons.
    async fn store<'a>(&self, batch: &'a OutputBatch) -> Refused<'a> {
        let connected = self.connected().await;
        let (requests, mut refused) = self.pack(batch, connected.max_message_bytes);
        let sender = BatchSender {
            client: &connected.client,
            queue_url: &connected.queue_url,
            backoff: &self.settings.backoff,
            metrics: &self.metrics,
            plugin: &self.plugin,
            outage: &self.outage,
            requests: &self.requests,
        };
        // The futures are made before the stream (rather than by a `map`
        // inside it) so that the stream holds no closure over a lifetime,
        // which would keep this future from being `Send`.
        let sends: Vec<_> = requests.into_iter().map(|request| sender.send(request)).collect();
        let mut sends = futures::stream::iter(sends).buffer_unordered(self.settings.batches_in_flight);
        while let Some(request_refused) = sends.next().await {
            refused.extend(request_refused);
        }
        refused
    }

    /// The batch's messages, packed into requests, and the events too
    /// large to send.
    fn pack<'a>(&self, batch: &'a OutputBatch, max_bytes: usize) -> (Vec<Vec<Message<'a>>>, Refused<'a>) {
        let (messages, refused) = match &self.settings.packer {
            None => self.single_messages(batch, max_bytes),
            Some(packer) => self.packed_messages(packer, batch, max_bytes),
        };
        (requests(messages, max_bytes), refused)
    }

    /// One message per event; the events too large for one set aside.
    fn single_messages<'a>(&self, batch: &'a OutputBatch, max_bytes: usize) -> (Vec<Message<'a>>, Refused<'a>) {
        let mut messages = Vec::with_capacity(batch.len());
        let mut refused = Vec::new();
        for event in batch.iter() {
            let message = self.schema.message(event);
            if message.size > max_bytes {
                let reason = format!(
                    "the message is {} bytes, over the {max_bytes}-byte limit of an SQS message \
                     (`max_message_bytes`, or the queue's MaximumMessageSize if lower)",
                    message.size
                );
                refused.push((event, reason));
                continue;
            }
            messages.push(message);
        }
        (messages, refused)
    }

    /// Events packed many to a message: all of them together on a standard
    /// queue, each FIFO group apart (in order) on a FIFO queue.
    fn packed_messages<'a>(
        &self,
        packer: &Packer,
        batch: &'a OutputBatch,
        max_bytes: usize,
    ) -> (Vec<Message<'a>>, Refused<'a>) {
        let mut messages = Vec::new();
        let mut refused = Vec::new();
        if self.schema.group_id.is_none() {
            let events: Vec<&Event> = batch.iter().collect();
            packer.pack(&events, None, max_bytes, &mut messages, &mut refused);
            return (messages, refused);
        }
        // Groups in the order of their first event, each in its own order.
        let mut groups: Vec<(String, Vec<&Event>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for event in batch.iter() {
            let group = self.schema.group_id(event).unwrap_or_default();
            let slot = *index.entry(group.clone()).or_insert_with(|| {
                groups.push((group, Vec::new()));
                groups.len() - 1
            });
            groups[slot].1.push(event);
        }
        for (group, events) in groups {
            packer.pack(&events, Some(group), max_bytes, &mut messages, &mut refused);
        }
        (messages, refused)
    }

    /// Writes refused events to the dead-letter file; only then do they
    /// count as finished.
    async fn dead_letter(&self, refused: &[(&Event, String)]) -> Result<(), SqsOutputError> {
        if refused.is_empty() {
            return Ok(());
        }
        self.dead_letters
            .write(refused)
            .await
            .map_err(|error| SqsOutputError::DeadLetter {
                events: refused.len(),
                error,
            })?;
        self.metrics.dead_lettered.increment(refused.len() as u64);
        warn!(
            output = %self.plugin,
            events = refused.len(),
            first_reason = %refused[0].1,
            path = %self.dead_letters.path().display(),
            "sqs could not take events; they are in the dead-letter file"
        );
        Ok(())
    }
}

/// Puts messages into requests of at most 10 messages and `max_bytes` in
/// total, in order.
fn requests(messages: Vec<Message<'_>>, max_bytes: usize) -> Vec<Vec<Message<'_>>> {
    let mut requests = Vec::with_capacity(messages.len().div_ceil(MESSAGES_PER_REQUEST));
    let mut request = Vec::with_capacity(MESSAGES_PER_REQUEST);
    let mut request_bytes = 0;
    for message in messages {
        if request.len() == MESSAGES_PER_REQUEST || request_bytes + message.size > max_bytes {
            requests.push(std::mem::replace(
                &mut request,
                Vec::with_capacity(MESSAGES_PER_REQUEST),
            ));
            request_bytes = 0;
        }
        request_bytes += message.size;
        request.push(message);
    }
    if !request.is_empty() {
        requests.push(request);
    }
    requests
}

#[async_trait]
impl Output for SqsOutput {
    async fn check(&self) -> Result<Option<String>, BoxError> {
        let (client, place) = connect(&self.connection).await;
        let queue = self.queue.as_str();
        match find(&client, &self.queue).await {
            Ok(_) => Ok(None),
            Err(QueueProblem::Missing) => Err(format!(
                "sqs queue {queue} does not exist ({place}): create it, or fix `queue_url`, region or endpoint"
            )
            .into()),
            Err(QueueProblem::Request(failure)) => Ok(Some(format!(
                "sqs queue {queue} not checked ({place}): {}",
                failure.reason
            ))),
        }
    }

    async fn write(&self, batch: OutputBatch) -> Result<(), BoxError> {
        if batch.is_empty() {
            return Ok(());
        }
        let refused = self.store(&batch).await;
        self.dead_letter(&refused).await?;
        Ok(())
    }
}
