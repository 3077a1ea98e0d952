//! The input side of the pipeline queue: what `EventSink::send` does with a
//! batch before the filters see it.
//!
//! With the memory queue the batch is queued as it is, its producer's claim
//! travelling with it to the outputs (`ack = "delivered"`). With the
//! persisted queue it is first written and synced to disk; with
//! `ack = "queued"` the producer's claim is settled right then, otherwise it
//! travels on as with the memory queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use eventstash_plugin_api::{AckHandle, Event, EventBatch, EventSink, SinkError};
use metrics::Counter;

use crate::persisted_queue::{LogHandle, RecordClaims};
use crate::queue::QueueSender;

/// What the pipeline queue holds.
pub(crate) struct PipelineItem {
    /// The events, in the producer's order.
    pub(crate) events: Vec<Event>,
    /// The producer's claim, while it waits for delivery.
    pub(crate) ack: Option<AckHandle>,
    /// The producer is waiting: outputs should write without delay.
    pub(crate) flush: bool,
    /// The persisted record's per-output claims (persisted queue only).
    pub(crate) record: Option<RecordClaims>,
}

/// Persisting before queueing.
pub(crate) struct Persistence {
    pub(crate) log: LogHandle,
    /// Acknowledge producers once their events are synced to disk.
    pub(crate) ack_queued: bool,
}

/// An input's handle on the pipeline queue.
pub(crate) struct PipelineSink {
    pub(crate) queue: QueueSender<PipelineItem>,
    pub(crate) max_batch_events: usize,
    pub(crate) persistence: Option<Arc<Persistence>>,
    pub(crate) events_in: Counter,
    pub(crate) total_in: Arc<AtomicU64>,
}

#[async_trait]
impl EventSink for PipelineSink {
    async fn send(&self, mut batch: EventBatch) -> Result<(), SinkError> {
        // A batch larger than allowed is split, each part with its own claim.
        while batch.events.len() > self.max_batch_events {
            let tail = batch.events.split_off(self.max_batch_events);
            let head = EventBatch {
                events: std::mem::replace(&mut batch.events, tail),
                ack: batch.ack.share(),
                flush: false,
            };
            self.enqueue(head).await?;
        }
        self.enqueue(batch).await
    }

    fn max_batch_events(&self) -> usize {
        self.max_batch_events
    }
}

impl PipelineSink {
    async fn enqueue(&self, batch: EventBatch) -> Result<(), SinkError> {
        let (count, bytes) = (batch.events.len(), batch.size_estimate());
        let EventBatch { events, ack, flush } = batch;
        let item = match &self.persistence {
            // Flush markers carry no event: nothing to persist.
            Some(persistence) if count > 0 => {
                let (events, record) = persistence
                    .log
                    .persist(events, bytes)
                    .await
                    .map_err(|error| SinkError::Unavailable(error.to_string()))?;
                let ack = if persistence.ack_queued {
                    ack.delivered();
                    None
                } else {
                    Some(ack)
                };
                PipelineItem {
                    events,
                    ack,
                    flush,
                    record: Some(record),
                }
            }
            // With `ack = "queued"` the marker's claim is settled here like
            // an event batch's: carried on, it would wait for the outputs.
            Some(persistence) if persistence.ack_queued => {
                ack.delivered();
                PipelineItem {
                    events,
                    ack: None,
                    flush,
                    record: None,
                }
            }
            _ => PipelineItem {
                events,
                ack: Some(ack),
                flush,
                record: None,
            },
        };
        self.queue
            .send(item, count, bytes)
            .await
            .map_err(|_| SinkError::Closed)?;
        self.events_in.increment(count as u64);
        self.total_in.fetch_add(count as u64, Ordering::Relaxed);
        Ok(())
    }
}
