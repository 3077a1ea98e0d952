//! [`BatchingSender`]: events sent one at a time at high rates, stored as
//! `StoreEvent` streams of up to `max_events` events (or whatever arrived
//! within `max_delay`), with up to `max_in_flight` streams open at once.
//!
//! `send` hands an event to a bounded channel; one task reads it, fills the
//! current batch and, when the batch is full or due, starts a stream for it
//! in a `JoinSet`. When `max_in_flight` streams are open the task waits for
//! one to finish before it reads more, the channel fills, and `send` waits:
//! that is the backpressure, from the agent's acknowledgements back to the
//! producer. A batch that fails in a resend-safe way (RESOURCE_EXHAUSTED,
//! UNAVAILABLE, a broken connection) is resent with backoff by its own
//! stream task; one that fails for good is counted. `flush` sends the
//! current batch, waits for every open stream, and reports the failures
//! since the last flush — so `Ok` from `flush` means every event sent
//! before it was acknowledged, and never more. `close` is a last flush;
//! dropping the sender without it still sends what it holds, but nobody
//! learns of failures then beyond a log line.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{Client, Error, Event, RetryPolicy};

/// How a [`BatchingSender`] batches and how much it holds.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Events per stream at most.
    pub max_events: usize,
    /// How long the first event of a batch waits for more before the batch
    /// is sent anyway.
    pub max_delay: Duration,
    /// Streams open (sent, not yet acknowledged) at once.
    pub max_in_flight: usize,
    /// Events waiting for a batch at most; `send` waits beyond it.
    pub buffer: usize,
    /// Resending batches after resend-safe failures.
    pub retry: RetryPolicy,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_events: 500,
            max_delay: Duration::from_millis(20),
            max_in_flight: 4,
            buffer: 1000,
            retry: RetryPolicy::default(),
        }
    }
}

/// What the sender's handles ask of its task.
enum Command {
    /// Store this event.
    Event(Event),
    /// Send what is held, wait for every stream, answer with the failures.
    Flush(oneshot::Sender<Result<(), Error>>),
}

/// Sends events in batches over several streams; see the module docs.
#[derive(Debug)]
pub struct BatchingSender {
    /// To the batching task; bounded by `buffer`, so a full one is backpressure.
    commands: mpsc::Sender<Command>,
    /// The batching task, awaited by `close`.
    task: tokio::task::JoinHandle<()>,
}

impl BatchingSender {
    /// Starts a sender on `client`; must be called inside a tokio runtime.
    pub fn new(client: Client, options: BatchOptions) -> BatchingSender {
        let (commands, receiver) = mpsc::channel(options.buffer.max(1));
        let batcher = Batcher {
            batch: Vec::with_capacity(options.max_events),
            due: None,
            streams: JoinSet::new(),
            failures: Failures::default(),
            client,
            options,
        };
        let task = tokio::spawn(batcher.run(receiver));
        BatchingSender { commands, task }
    }

    /// Queues `event`, waiting while the sender holds as much as it may.
    /// Returning is no acknowledgement: [`BatchingSender::flush`] is.
    pub async fn send(&self, event: Event) -> Result<(), Error> {
        self.commands
            .send(Command::Event(event))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Sends what is held and waits until every event sent before this call
    /// was acknowledged: `Ok`, or [`Error::BatchesFailed`] naming how many
    /// events since the last flush may not be stored.
    pub async fn flush(&self) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Flush(reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Flushes, then stops the sender's task.
    pub async fn close(self) -> Result<(), Error> {
        let flushed = self.flush().await;
        drop(self.commands);
        self.task.await.map_err(|_| Error::Closed)?;
        flushed
    }
}

/// The batching task's state.
struct Batcher {
    /// Events of the batch being filled.
    batch: Vec<Event>,
    /// When the batch being filled must be sent; `None` while it is empty.
    due: Option<Instant>,
    /// The open streams; each answers with its event count and outcome.
    streams: JoinSet<(usize, Result<(), Error>)>,
    /// Failures since the last flush.
    failures: Failures,
    /// The connection the streams use.
    client: Client,
    /// The limits.
    options: BatchOptions,
}

impl Batcher {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // One timer, moved when a batch starts: a timer made per loop turn
        // would be registered and dropped once per event.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        // Commands are taken as many at a time as a batch holds.
        let mut received = Vec::with_capacity(self.options.max_events.max(1));
        loop {
            tokio::select! {
                count = commands.recv_many(&mut received, self.options.max_events.max(1)) => {
                    if count == 0 {
                        break;
                    }
                    for command in received.drain(..) {
                        match command {
                            Command::Event(event) => self.add(event).await,
                            Command::Flush(reply) => {
                                let _ = reply.send(self.flush().await);
                            }
                        }
                    }
                    if let Some(due) = self.due
                        && due != timer.deadline()
                    {
                        timer.as_mut().reset(due);
                    }
                }
                () = &mut timer, if self.due.is_some() => self.dispatch().await,
                Some(finished) = self.streams.join_next(), if !self.streams.is_empty() => self.record(finished),
            }
        }
        // Every handle is gone: send what is left; no one will ask how it went.
        if let Err(error) = self.flush().await {
            tracing::warn!(%error, "batching sender dropped without close: events may not be stored");
        }
    }

    async fn add(&mut self, event: Event) {
        if self.batch.is_empty() {
            self.due = Some(Instant::now() + self.options.max_delay);
        }
        self.batch.push(event);
        if self.batch.len() >= self.options.max_events {
            self.dispatch().await;
        }
    }

    /// Starts a stream for the current batch once a stream slot is free.
    async fn dispatch(&mut self) {
        self.due = None;
        if self.batch.is_empty() {
            return;
        }
        while self.streams.len() >= self.options.max_in_flight.max(1) {
            if let Some(finished) = self.streams.join_next().await {
                self.record(finished);
            }
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.options.max_events));
        let client = self.client.clone();
        let retry = self.options.retry.clone();
        self.streams.spawn(async move {
            let events = batch.len();
            // Each attempt sends clones: payloads are shared `Bytes`.
            let outcome = retry.run(|| client.store(batch.clone())).await;
            (events, outcome)
        });
    }

    async fn flush(&mut self) -> Result<(), Error> {
        self.dispatch().await;
        while let Some(finished) = self.streams.join_next().await {
            self.record(finished);
        }
        self.failures.take()
    }

    fn record(&mut self, finished: Result<(usize, Result<(), Error>), tokio::task::JoinError>) {
        match finished {
            Ok((_, Ok(()))) => {}
            Ok((events, Err(error))) => self.failures.add(events, error),
            // A stream task that panicked acknowledged nothing.
            Err(_) => self.failures.add(0, Error::Closed),
        }
    }
}

/// Batches that failed for good since the last flush.
#[derive(Default)]
struct Failures {
    events: usize,
    batches: usize,
    first: Option<Error>,
}

impl Failures {
    fn add(&mut self, events: usize, error: Error) {
        tracing::debug!(%error, events, "batch not acknowledged");
        self.events += events;
        self.batches += 1;
        self.first.get_or_insert(error);
    }

    fn take(&mut self) -> Result<(), Error> {
        let failures = std::mem::take(self);
        match failures.first {
            None => Ok(()),
            Some(first) => Err(Error::BatchesFailed {
                events: failures.events,
                batches: failures.batches,
                first: Box::new(first),
            }),
        }
    }
}
