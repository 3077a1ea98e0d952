//! Drives one output: gathers batches from its queue, writes them, settles
//! their acks.
//!
//! A batch is written when it reaches the output's size or byte limit, when
//! its first event has waited `batch_delay_ms`, or at once when it holds the
//! last events of a producer that is now waiting for its acknowledgement —
//! waiting longer would only delay that producer. Up to `concurrency`
//! writes run at once. When the queue closes, the driver writes what is left,
//! waits for its writes and closes the output: that is the drain.

use std::sync::Arc;

use eventstash_plugin_api::{AckHandle, Event, Output, OutputBatch};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info};

use crate::config::BatchSettings;
use crate::queue::{QueueReceiver, Queued};

/// What the pipeline puts on an output's queue: one input batch's events,
/// shared with the other outputs, and this output's claim on their ack.
#[derive(Debug)]
pub(crate) struct OutputItem {
    /// The events.
    pub(crate) events: Arc<Vec<Event>>,
    /// This output's claim.
    pub(crate) ack: AckHandle,
    /// The producer is waiting: write without delay.
    pub(crate) flush: bool,
}

/// Queue items gathered into one write.
struct PendingWrite {
    items: Vec<Queued<OutputItem>>,
    events: usize,
    bytes: usize,
    flush: bool,
}

impl PendingWrite {
    fn new() -> Self {
        PendingWrite {
            items: Vec::new(),
            events: 0,
            bytes: 0,
            flush: false,
        }
    }

    fn push(&mut self, item: Queued<OutputItem>) {
        self.events += item.events;
        self.bytes += item.bytes;
        self.flush |= item.item.flush;
        self.items.push(item);
    }

    fn is_ready(&self, settings: &BatchSettings) -> bool {
        self.flush || self.events >= settings.max_events || self.bytes >= settings.max_bytes
    }
}

/// Runs until the queue is closed and drained, then closes the output.
pub(crate) async fn drive_output(
    id: String,
    output: Arc<dyn Output>,
    mut queue: QueueReceiver<OutputItem>,
    settings: BatchSettings,
) {
    let mut writes = JoinSet::new();
    while let Some(first) = queue.recv().await {
        let mut pending = PendingWrite::new();
        pending.push(first);
        let deadline = Instant::now() + settings.delay;
        while !pending.is_ready(&settings) {
            // Take what is already queued before arming the timer.
            let next = match queue.try_recv() {
                Ok(item) => Some(item),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) => tokio::select! {
                    item = queue.recv() => item,
                    () = sleep_until(deadline) => break,
                },
            };
            match next {
                Some(item) => pending.push(item),
                None => break,
            }
        }
        while writes.len() >= settings.concurrency {
            writes.join_next().await;
        }
        writes.spawn(write(id.clone(), output.clone(), pending));
    }
    while writes.join_next().await.is_some() {}
    match output.close().await {
        Ok(()) => info!(output = %id, "output drained and closed"),
        Err(error) => {
            error!(output = %id, %error, "output failed to close; its last writes may not be synced")
        }
    }
}

/// Writes one batch and settles its claims with the outcome.
async fn write(id: String, output: Arc<dyn Output>, pending: PendingWrite) {
    let mut batch = OutputBatch::default();
    for queued in &pending.items {
        batch.push(queued.item.events.clone());
    }
    if batch.is_empty() {
        // Only flush markers: nothing to write, nothing to wait for.
        settle(pending.items, Ok(()));
        return;
    }
    let events = batch.len();
    let started = Instant::now();
    let outcome = output.write(batch).await;
    match &outcome {
        Ok(()) => debug!(output = %id, events, elapsed = ?started.elapsed(), "batch written"),
        Err(error) => error!(
            output = %id, events, %error,
            "output could not store a batch; its producers get an error instead of success"
        ),
    }
    settle(
        pending.items,
        outcome.map_err(|e| format!("output {id}: {e}")),
    );
}

fn settle(items: Vec<Queued<OutputItem>>, outcome: Result<(), String>) {
    for queued in items {
        let ack = queued.item.ack;
        match &outcome {
            Ok(()) => ack.delivered(),
            Err(reason) => ack.failed(reason.clone()),
        }
    }
}
