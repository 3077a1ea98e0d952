//! Bounded in-memory queues, bounded in events and in bytes.
//!
//! Each queued item holds permits of two semaphores, one counting events
//! and one counting estimated bytes, and gives them back when it is dropped
//! — that is, when its consumer is done with it, not when it is dequeued. So
//! the bound covers events waiting and events being worked on, and memory
//! stays bounded however slow the consumer is. A sender waits for permits:
//! that wait is the backpressure that travels back to the producers. The
//! channel beneath is unbounded because the semaphores already bound it.
//!
//! The gauges read the semaphores: room given out, to items held and to a
//! sender still waiting for the rest of its room (tokio hands a waiter
//! permits as they come free). A waiting sender takes its events' room
//! first, then bytes, so while one waits the events gauge counts its events
//! and the bytes gauge part of its bytes: bytes ÷ events is no event size.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// How much a queue may hold.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most events.
    pub max_events: usize,
    /// Most estimated bytes.
    pub max_bytes: usize,
}

/// The queue is closed: its consumer is gone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueClosed;

/// An item with the capacity it occupies until dropped.
#[derive(Debug)]
pub(crate) struct Queued<T> {
    /// The item.
    pub(crate) item: T,
    /// Events the item counts for.
    pub(crate) events: usize,
    /// Estimated bytes the item counts for.
    pub(crate) bytes: usize,
    _permits: Permits,
}

/// Capacity taken from a [`QueueGauge`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Permits {
    _held: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

/// The sending side; cheap to clone.
#[derive(Debug)]
pub(crate) struct QueueSender<T> {
    tx: mpsc::UnboundedSender<Queued<T>>,
    gauge: QueueGauge,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        QueueSender {
            tx: self.tx.clone(),
            gauge: self.gauge.clone(),
        }
    }
}

/// The receiving side.
#[derive(Debug)]
pub(crate) struct QueueReceiver<T> {
    rx: mpsc::UnboundedReceiver<Queued<T>>,
}

/// Reads how full a queue is.
#[derive(Debug, Clone)]
pub(crate) struct QueueGauge {
    events: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    limits: QueueLimits,
}

/// Makes a queue with the given limits.
pub(crate) fn bounded<T>(limits: QueueLimits) -> (QueueSender<T>, QueueReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let gauge = QueueGauge::new(limits);
    (QueueSender { tx, gauge }, QueueReceiver { rx })
}

impl<T> QueueSender<T> {
    /// Queues `item`, waiting until there is room for its events and bytes.
    /// An item larger than the whole queue waits for the queue to be empty,
    /// then takes all of it, so it is never stuck.
    pub(crate) async fn send(&self, item: T, events: usize, bytes: usize) -> Result<(), QueueClosed> {
        let permits = self.gauge.acquire(events, bytes).await;
        let queued = Queued {
            item,
            events,
            bytes,
            _permits: permits,
        };
        self.tx.send(queued).map_err(|_| QueueClosed)
    }

    /// The queue's gauge.
    pub(crate) fn gauge(&self) -> QueueGauge {
        self.gauge.clone()
    }
}

impl<T> QueueReceiver<T> {
    /// The next item, or `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<Queued<T>> {
        self.rx.recv().await
    }

    /// The next item if one is waiting.
    pub(crate) fn try_recv(&mut self) -> Result<Queued<T>, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }
}

impl QueueGauge {
    /// A capacity of its own, without a channel: for bounds on things that
    /// are not queued items (the persisted queue's records on disk).
    pub(crate) fn new(limits: QueueLimits) -> QueueGauge {
        QueueGauge {
            events: Arc::new(Semaphore::new(limits.max_events)),
            bytes: Arc::new(Semaphore::new(limits.max_bytes)),
            limits,
        }
    }

    /// Takes room for `events` and `bytes`, waiting until there is. More
    /// than the whole capacity waits for all of it, so it is never stuck.
    pub(crate) async fn acquire(&self, events: usize, bytes: usize) -> Permits {
        if events == 0 && bytes == 0 {
            return Permits { _held: None };
        }
        let event_permits = events.min(self.limits.max_events) as u32;
        let byte_permits = bytes.min(self.limits.max_bytes) as u32;
        // The semaphores are never closed, so acquiring cannot fail.
        let events_held = self.events.clone().acquire_many_owned(event_permits).await;
        let bytes_held = self.bytes.clone().acquire_many_owned(byte_permits).await;
        match (events_held, bytes_held) {
            (Ok(events), Ok(bytes)) => Permits {
                _held: Some((events, bytes)),
            },
            _ => Permits { _held: None },
        }
    }

    /// Events' room taken: queued, still being worked on, or given to a
    /// sender waiting for the rest of its room.
    pub(crate) fn events(&self) -> usize {
        self.limits.max_events - self.events.available_permits()
    }

    /// Estimated bytes' room taken, likewise.
    pub(crate) fn bytes(&self) -> usize {
        self.limits.max_bytes - self.bytes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: QueueLimits = QueueLimits {
        max_events: 10,
        max_bytes: 1000,
    };

    #[tokio::test]
    async fn a_sender_waits_while_the_queue_is_full_of_events() {
        let (tx, mut rx) = bounded::<u32>(LIMITS);
        tx.send(1, 10, 10).await.unwrap();
        assert_eq!(tx.gauge().events(), 10);
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(2, 1, 1)).await;
        assert!(blocked.is_err(), "a full queue must make the sender wait");
        let first = rx.recv().await.unwrap();
        // Dequeued but not yet dropped: still counted.
        assert_eq!(tx.gauge().events(), 10);
        drop(first);
        tx.send(2, 1, 1).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().item, 2);
    }

    #[tokio::test]
    async fn bytes_bound_too() {
        let (tx, _rx) = bounded::<u32>(LIMITS);
        tx.send(1, 1, 900).await.unwrap();
        assert_eq!(tx.gauge().bytes(), 900);
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(2, 1, 200)).await;
        assert!(blocked.is_err());
    }

    #[tokio::test]
    async fn an_item_larger_than_the_queue_passes_when_it_is_empty() {
        let (tx, mut rx) = bounded::<u32>(LIMITS);
        tx.send(1, 50, 5000).await.unwrap();
        let item = rx.recv().await.unwrap();
        assert_eq!((item.events, item.bytes), (50, 5000));
        assert_eq!(tx.gauge().events(), 10);
    }

    #[tokio::test]
    async fn receiver_ends_when_senders_are_gone() {
        let (tx, mut rx) = bounded::<u32>(LIMITS);
        tx.send(7, 0, 0).await.unwrap();
        drop(tx);
        assert_eq!(rx.recv().await.unwrap().item, 7);
        assert!(rx.recv().await.is_none());
    }
}
