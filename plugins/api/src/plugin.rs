//! The three plugin traits and what the engine hands to them.
//!
//! An [`Input`] runs until its shutdown token is cancelled, sending
//! [`EventBatch`]es into an [`EventSink`]; a [`Filter`] changes events in
//! place between the pipeline queue and the outputs; an [`Output`] stores
//! [`OutputBatch`]es. Plugins never see queues, tasks or other plugins: the
//! engine owns batching, fan-out, backpressure and acknowledgement.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::batch::{EventBatch, OutputBatch};
use crate::event::Event;
use crate::metrics::PluginContext;

/// The error type plugins return; each plugin crate has its own error enum
/// and boxes it here, as tower does.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the pipeline did not take a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The pipeline has stopped taking events (it is shutting down).
    #[error("the pipeline is no longer accepting events")]
    Closed,
    /// The batch could not be made safe (the persisted queue could not write
    /// it: disk full, I/O error). The agent keeps running.
    #[error("events could not be queued: {0}")]
    Unavailable(String),
}

/// Where an input sends its events: the pipeline queue.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Queues a batch, waiting while the queue is full: this wait is the
    /// backpressure an input passes on to its producers.
    async fn send(&self, batch: EventBatch) -> Result<(), SinkError>;

    /// The most events one batch should carry: larger batches are split.
    fn max_batch_events(&self) -> usize;
}

/// What the engine gives a running input.
pub struct InputContext {
    /// The pipeline and the plugin's id, for logs and metrics.
    pub context: PluginContext,
    /// The pipeline queue.
    pub sink: Box<dyn EventSink>,
    /// Cancelled when the agent shuts down: stop accepting new work, finish
    /// what is in flight, then return.
    pub shutdown: CancellationToken,
    /// Whether the agent is fit to take traffic (false while starting,
    /// draining, or while an output has been failing too long). Inputs with
    /// a health protocol report it.
    pub serving: tokio::sync::watch::Receiver<bool>,
}

/// A source of events.
#[async_trait]
pub trait Input: Send + Sync {
    /// Receives events until `ctx.shutdown` is cancelled and in-flight work
    /// is finished. An error ends the agent: an input that cannot run (its
    /// port is taken, say) must not leave a half-working pipeline.
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<(), BoxError>;

    /// Asks what only the remote side can tell, for `eventstash validate`:
    /// a source that must exist (an SQS queue). One attempt, no retries.
    /// `Ok(Some(note))`: it could not be asked (unreachable, no
    /// credentials), which `validate` reports without failing. The
    /// default has nothing to ask.
    async fn check(&self) -> Result<Option<String>, BoxError> {
        Ok(None)
    }
}

/// A step that changes events between the pipeline queue and the outputs.
/// Filters run on a worker thread and must not block on I/O.
pub trait Filter: Send + Sync {
    /// Changes the events in place. A filter that cannot handle an event
    /// flags it (for example `invalidProto`) instead of dropping it. An
    /// event the filter already changed must be left as it is: after a
    /// panic the engine applies the filter again, one event at a time.
    fn apply(&self, events: &mut [Event]);

    /// Starts what the filter runs beside its events (a file watcher),
    /// once, when its pipeline starts. Building a filter starts nothing, so
    /// that `eventstash validate` checks a config without side effects. An
    /// error stops the agent before any input starts.
    fn start(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Re-reads what the filter loaded at start (on SIGHUP). On error the
    /// filter must keep working with what it had.
    fn reload(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// The future of one write, as [`Output::start_write`] returns it.
pub type WriteFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'static>>;

/// A destination for events.
///
/// The engine starts writes in queue order ([`Output::start_write`]) and
/// runs up to `concurrency` of them at once (the output's
/// [`Output::default_concurrency`] unless the pipeline file says).
#[async_trait]
pub trait Output: Send + Sync + 'static {
    /// Stores a batch and returns once every event in it is safe (written
    /// and synced, or accepted by the remote store), retrying transient
    /// failures itself. An error means the batch could not be stored: the
    /// producers of its events get an error instead of success.
    async fn write(&self, batch: OutputBatch) -> Result<(), BoxError>;

    /// Starts writing `batch`: called by the engine in queue order, on its
    /// own task, before earlier writes have finished. The default defers
    /// everything to [`Output::write`], which then runs on a task of its
    /// own, so that concurrent writes may reach the store in any order. An
    /// output that keeps queue order at any concurrency (the file output)
    /// does its ordered part here, before returning the future that waits
    /// for the rest.
    fn start_write(self: Arc<Self>, batch: OutputBatch) -> WriteFuture {
        Box::pin(async move { self.write(batch).await })
    }

    /// Writes in flight at once when the pipeline file sets no
    /// `concurrency`: 1, unless the output overlaps its writes safely.
    fn default_concurrency(&self) -> usize {
        1
    }

    /// Flushes and releases resources after the last write.
    async fn close(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// As [`Input::check`]: a destination that must exist, for `validate`.
    async fn check(&self) -> Result<Option<String>, BoxError> {
        Ok(None)
    }
}

/// An error and its sources on one line, `: `-separated, skipping a source
/// whose text the line already holds. Client libraries' top-level messages
/// ("error sending request", "dispatch failure") rarely say why; their
/// sources do ("Connection refused").
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
