//! The running SQS input: finds the queue, runs the pollers, and drains.
//!
//! The drain follows the engine's: on the shutdown token the pollers stop
//! receiving and return, dropping their handles on the pipeline queue, so
//! the queue closes and the outputs store what is left; each receive's
//! settling task then sees its ack group resolve and deletes the messages
//! (or, for what could not be stored, makes them visible again at once).
//! `run` returns when the last settling task has finished, so the agent's
//! shutdown deadline bounds the whole drain.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use eventstash_plugin_api::{Backoff, BoxError, CancellationToken, EventSink, Input, InputContext, LogThrottle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::client::{ConnectionSettings, connect};
use crate::error::SqsInputError;
use crate::metrics::RequestMetrics;
use crate::poller::{Consumer, poll};
use crate::queue::{QueueProblem, QueueRef, find};

/// At most one log line per this interval while the queue cannot be found.
const FIND_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How the queue is polled: the checked poll options.
#[derive(Debug, Clone)]
pub(crate) struct PollSettings {
    /// Long-polling loops.
    pub(crate) pollers: usize,
    /// Messages asked for per receive.
    pub(crate) max_messages: usize,
    /// How long a receive waits for messages.
    pub(crate) wait_time: Duration,
    /// How long a received message stays hidden, and each extension.
    pub(crate) visibility_timeout: Duration,
    /// Messages received and not yet deleted, at most.
    pub(crate) max_in_flight_messages: usize,
    /// The backoff every retry loop starts from.
    pub(crate) backoff: Backoff,
}

/// A checked, not yet connected, SQS input.
#[derive(Debug)]
pub struct SqsInput {
    /// The queue as the pipeline file names it.
    queue: QueueRef,
    /// Where to connect.
    connection: ConnectionSettings,
    /// How to poll.
    poll: PollSettings,
}

impl SqsInput {
    pub(crate) fn new(queue: QueueRef, mut connection: ConnectionSettings, poll: PollSettings) -> SqsInput {
        // A receive is a long poll: its attempt may take the wait time more.
        connection.request_timeout += poll.wait_time;
        SqsInput {
            queue,
            connection,
            poll,
        }
    }

    /// Finds the queue, retrying failed requests until shutdown. A queue
    /// SQS says does not exist is an error: the agent must not run without
    /// its source. `None`: shutdown came first.
    async fn find_queue(
        &self,
        client: &Client,
        place: &str,
        plugin: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<String>, SqsInputError> {
        let mut backoff = self.poll.backoff.clone();
        let throttle = LogThrottle::new(FIND_LOG_INTERVAL);
        loop {
            match find(client, &self.queue).await {
                Ok(found) => {
                    info!(
                        input = plugin, url = %found.url, fifo = self.queue.is_fifo(), max_message_bytes = ?found.max_message_bytes,
                        "sqs queue found"
                    );
                    return Ok(Some(found.url));
                }
                Err(QueueProblem::Missing) => {
                    return Err(SqsInputError::QueueMissing {
                        queue: self.queue.as_str().to_owned(),
                        place: place.to_owned(),
                    });
                }
                Err(QueueProblem::Request(failure)) => {
                    if let Some(suppressed) = throttle.allow() {
                        error!(
                            input = plugin, queue = self.queue.as_str(), %place, reason = %failure.reason, suppressed,
                            "cannot reach the sqs queue; retrying"
                        );
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = shutdown.cancelled() => return Ok(None),
            }
        }
    }
}

#[async_trait]
impl Input for SqsInput {
    async fn check(&self) -> Result<Option<String>, BoxError> {
        let (client, place) = connect(&self.connection).await;
        match find(&client, &self.queue).await {
            Ok(_) => Ok(None),
            Err(QueueProblem::Missing) => Err(SqsInputError::QueueMissing {
                queue: self.queue.as_str().to_owned(),
                place,
            }
            .into()),
            Err(QueueProblem::Request(failure)) => Ok(Some(format!(
                "sqs queue {} not checked ({place}): {}",
                self.queue.as_str(),
                failure.reason
            ))),
        }
    }

    async fn run(self: Box<Self>, ctx: InputContext) -> Result<(), BoxError> {
        let plugin = ctx.context.plugin.clone();
        let (client, place) = connect(&self.connection).await;
        info!(input = %plugin, queue = self.queue.as_str(), %place, "sqs input connecting");
        let Some(queue_url) = self.find_queue(&client, &place, &plugin, &ctx.shutdown).await? else {
            return Ok(());
        };
        let consumer = Arc::new(Consumer {
            client,
            queue_url,
            in_flight: Arc::new(Semaphore::new(self.poll.max_in_flight_messages)),
            settings: self.poll,
            plugin: plugin.clone(),
            shutdown: ctx.shutdown.clone(),
            settling: TaskTracker::new(),
            requests: RequestMetrics::new(&ctx.context.pipeline, &plugin),
        });
        let sink: Arc<dyn EventSink> = Arc::from(ctx.sink);
        let mut pollers = JoinSet::new();
        for _ in 0..consumer.settings.pollers {
            pollers.spawn(poll(consumer.clone(), sink.clone()));
        }
        info!(input = %plugin, pollers = consumer.settings.pollers, "sqs input receiving");
        // Only the pollers hold the pipeline queue now: once they return,
        // it closes and the outputs drain it.
        drop(sink);
        while pollers.join_next().await.is_some() {}
        let held = consumer.settings.max_in_flight_messages - consumer.in_flight.available_permits();
        info!(input = %plugin, messages = held, "sqs input stopped receiving; finishing the messages in flight");
        consumer.settling.close();
        consumer.settling.wait().await;
        info!(input = %plugin, "sqs input stopped");
        Ok(())
    }
}
