//! Batches: events move through the queues in groups, never one by one.

use std::sync::Arc;

use crate::ack::AckHandle;
use crate::event::Event;

/// Events an input hands to the pipeline in one go, with their ack claim.
#[derive(Debug)]
pub struct EventBatch {
    /// The events, in the order the producer sent them.
    pub events: Vec<Event>,
    /// The claim that settles when every output has stored these events.
    pub ack: AckHandle,
    /// The producer is now waiting for its acknowledgement, so outputs
    /// should write at once instead of waiting for their batch to fill.
    pub flush: bool,
}

impl EventBatch {
    /// The estimated size of the batch's documents, for queue byte bounds.
    pub fn size_estimate(&self) -> usize {
        self.events.iter().map(Event::size_estimate).sum()
    }
}

/// The events an output stores in one write: the events of several input
/// batches, shared read-only with the other outputs, so fan-out copies no
/// event.
#[derive(Debug, Clone, Default)]
pub struct OutputBatch {
    chunks: Vec<Arc<Vec<Event>>>,
    len: usize,
}

impl OutputBatch {
    /// Adds the events of one input batch.
    pub fn push(&mut self, events: Arc<Vec<Event>>) {
        self.len += events.len();
        self.chunks.push(events);
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The events, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Event> + '_ {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }
}

impl From<Vec<Event>> for OutputBatch {
    fn from(events: Vec<Event>) -> OutputBatch {
        let mut batch = OutputBatch::default();
        batch.push(Arc::new(events));
        batch
    }
}
