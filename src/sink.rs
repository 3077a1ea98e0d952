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
    /// The log thread's handle: one append (and sync) per batch.
    pub(crate) log: LogHandle,
    /// Acknowledge producers once their events are synced to disk.
    pub(crate) ack_queued: bool,
}

/// An input's handle on the pipeline queue. One per input; the input drops
/// it when it returns, and with the last one the pipeline queue closes.
pub(crate) struct PipelineSink {
    /// A sender of the pipeline queue, whose receiver is the filter stage.
    pub(crate) queue: QueueSender<PipelineItem>,
    /// Larger batches are split into parts of this many events.
    pub(crate) max_batch_events: usize,
    /// ... and of at most this many bytes (the pipeline queue's
    /// `max_bytes`), so that no part is larger than the whole queue, which
    /// the queue would take alone, past its bound.
    pub(crate) max_batch_bytes: usize,
    /// The persisted queue, written before queueing; `None` with the memory
    /// queue.
    pub(crate) persistence: Option<Arc<Persistence>>,
    /// `eventstash_events_in_total` of this input.
    pub(crate) events_in: Counter,
    /// Events of every input of the pipeline, for the drain report.
    pub(crate) total_in: Arc<AtomicU64>,
}

#[async_trait]
impl EventSink for PipelineSink {
    async fn send(&self, mut batch: EventBatch) -> Result<(), SinkError> {
        // A batch larger than allowed is split, each part with its own claim.
        loop {
            let (len, bytes) = self.first_part(&batch.events);
            if len == batch.events.len() {
                return self.enqueue(batch, bytes).await;
            }
            let tail = batch.events.split_off(len);
            let head = EventBatch {
                events: std::mem::replace(&mut batch.events, tail),
                ack: batch.ack.share(),
                flush: false,
            };
            self.enqueue(head, bytes).await?;
        }
    }

    fn max_batch_events(&self) -> usize {
        self.max_batch_events
    }
}

impl PipelineSink {
    /// The first part of `events` that fits one queue item, as its length
    /// and estimated bytes: at most `max_batch_events` events and
    /// `max_batch_bytes` bytes (an event larger than that on its own is a
    /// part of its own).
    fn first_part(&self, events: &[Event]) -> (usize, usize) {
        let mut bytes = 0;
        for (n, event) in events.iter().enumerate() {
            let size = event.size_estimate();
            if n > 0 && (n >= self.max_batch_events || bytes + size > self.max_batch_bytes) {
                return (n, bytes);
            }
            bytes += size;
        }
        (events.len(), bytes)
    }

    /// Queues one part, `bytes` its estimated size.
    async fn enqueue(&self, batch: EventBatch, bytes: usize) -> Result<(), SinkError> {
        let count = batch.events.len();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use eventstash_plugin_api::{AckWait, ack_group};
    use futures::poll;

    use super::*;
    use crate::persisted_queue::PersistedQueue;
    use crate::queue::{QueueLimits, QueueReceiver, bounded};
    use crate::test_support::json_events;

    const LIMITS: QueueLimits = QueueLimits {
        max_events: 100,
        max_bytes: 1 << 20,
    };

    /// A batch of `count` events whose producer waits.
    fn batch(count: usize) -> (EventBatch, AckWait) {
        let (ack, wait) = ack_group();
        let batch = EventBatch {
            events: json_events(count),
            ack,
            flush: true,
        };
        (batch, wait)
    }

    /// A persisted queue on `dir` for one output, and its persistence.
    fn persisted(dir: &std::path::Path, ack_queued: bool) -> (PersistedQueue, Persistence) {
        let outputs = ["file".to_owned()];
        let (queue, replay) = PersistedQueue::open(dir.join("queue"), &outputs, LIMITS, None).unwrap();
        assert!(replay.is_empty());
        let persistence = Persistence {
            log: queue.handle(),
            ack_queued,
        };
        (queue, persistence)
    }

    fn sink(persistence: Option<Persistence>) -> (PipelineSink, QueueReceiver<PipelineItem>) {
        let (queue, receiver) = bounded(LIMITS);
        let sink = PipelineSink {
            queue,
            max_batch_events: 2,
            max_batch_bytes: usize::MAX,
            persistence: persistence.map(Arc::new),
            events_in: Counter::noop(),
            total_in: Arc::new(AtomicU64::new(0)),
        };
        (sink, receiver)
    }

    #[tokio::test]
    async fn a_large_batch_is_split_and_its_producer_waits_for_every_part() {
        let (sink, mut receiver) = sink(None);
        let (batch, wait) = batch(5);
        sink.send(batch).await.unwrap();
        let mut parts = Vec::new();
        while let Ok(queued) = receiver.try_recv() {
            parts.push(queued.item);
        }
        let sizes: Vec<(usize, bool)> = parts.iter().map(|p| (p.events.len(), p.flush)).collect();
        assert_eq!(sizes, [(2, false), (2, false), (1, true)], "only the last part flushes");
        assert_eq!(sink.total_in.load(Ordering::Relaxed), 5);

        let mut waiting = Box::pin(wait.wait());
        let mut claims: Vec<AckHandle> = parts.into_iter().filter_map(|p| p.ack).collect();
        assert_eq!(claims.len(), 3, "every part carries the producer's claim");
        let last = claims.pop().unwrap();
        claims.into_iter().for_each(AckHandle::delivered);
        assert!(poll!(&mut waiting).is_pending(), "one part is still unsettled");
        last.delivered();
        assert!(waiting.await.is_ok());
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_queue_in_bytes_is_split_into_parts_that_fit() {
        let (mut sink, mut receiver) = sink(None);
        sink.max_batch_events = 100;
        let (seven, _wait) = batch(7);
        let event_size = seven.events[0].size_estimate();
        // Room for two and a half events: parts of two.
        sink.max_batch_bytes = event_size * 5 / 2;
        sink.send(seven).await.unwrap();
        let mut parts = Vec::new();
        while let Ok(queued) = receiver.try_recv() {
            parts.push(queued.item.events.len());
        }
        assert_eq!(parts, [2, 2, 2, 1]);

        // An event larger than the bound on its own is a part of its own.
        sink.max_batch_bytes = 1;
        let (three, _wait) = batch(3);
        sink.send(three).await.unwrap();
        let mut parts = Vec::new();
        while let Ok(queued) = receiver.try_recv() {
            parts.push(queued.item.events.len());
        }
        assert_eq!(parts, [1, 1, 1]);
    }

    #[tokio::test]
    async fn a_closed_pipeline_queue_refuses_the_batch() {
        let (sink, receiver) = sink(None);
        drop(receiver);
        let (batch, _wait) = batch(1);
        assert!(matches!(sink.send(batch).await, Err(SinkError::Closed)));
        assert_eq!(sink.total_in.load(Ordering::Relaxed), 0, "nothing was queued");
    }

    #[tokio::test]
    async fn with_ack_queued_the_producer_is_answered_once_the_batch_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, persistence) = persisted(dir.path(), true);
        let (sink, mut receiver) = sink(Some(persistence));
        let (batch, wait) = batch(1);
        sink.send(batch).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), wait.wait())
            .await
            .expect("answered without any output")
            .unwrap();
        let item = receiver.try_recv().unwrap().item;
        assert!(item.ack.is_none(), "the producer's claim is settled, not carried");
        let record = item.record.expect("the record's claims travel to the outputs");
        assert_eq!(record.per_output.len(), 1);
        assert_eq!(queue.gauge().events(), 1, "on disk until the output finishes it");
    }

    #[tokio::test]
    async fn with_ack_delivered_the_persisted_batch_still_waits_for_the_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (_queue, persistence) = persisted(dir.path(), false);
        let (sink, mut receiver) = sink(Some(persistence));
        let (batch, wait) = batch(1);
        sink.send(batch).await.unwrap();
        let mut waiting = Box::pin(wait.wait());
        assert!(poll!(&mut waiting).is_pending());
        let item = receiver.try_recv().unwrap().item;
        item.ack.expect("the producer's claim travels on").delivered();
        assert!(waiting.await.is_ok());
    }
}
