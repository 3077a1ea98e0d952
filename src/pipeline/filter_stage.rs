//! The filter stage: one task between the pipeline queue and the output
//! queues. It owns the pipeline queue's receiver and one sender per output
//! queue; when the pipeline queue is closed and empty it returns, dropping
//! those senders, which closes the output queues — the next step of the
//! drain.
//!
//! Filters run on the runtime's threads, several batches at once but handed
//! on in queue order; a filter that panics costs only the event it panicked
//! on (see [`apply_isolated`]).

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;

use eventstash_plugin_api::{Event, Payload};
use futures::StreamExt as _;
use metrics::counter;
use tracing::{error, warn};

use crate::config::FilterPlugin;
use crate::metrics::{FILTER_PANICS, INVALID_EVENTS};
use crate::output_driver::OutputItem;
use crate::queue::{QueueReceiver, QueueSender, Queued};
use crate::sink::PipelineItem;

/// Distinct `kind` labels on the invalid-event counter; producers choose
/// kinds, so past this they are counted as `other` to bound the series.
const INVALID_KIND_LABELS: usize = 100;

/// Longest `kind` label value, in bytes: producers choose kinds, and a
/// megabyte-long one must not become a megabyte of `/metrics` per series.
const KIND_LABEL_BYTES: usize = 128;

/// `kind` cut to [`KIND_LABEL_BYTES`] on a character boundary.
fn kind_label(kind: &str) -> &str {
    if kind.len() <= KIND_LABEL_BYTES {
        return kind;
    }
    let mut end = KIND_LABEL_BYTES;
    while !kind.is_char_boundary(end) {
        end -= 1;
    }
    &kind[..end]
}

/// The filter stage: applies the filters to each batch, counts what stays
/// undecoded, and fans each batch out to every output queue, waiting on a
/// full one.
pub(super) struct FilterStage {
    pipeline: String,
    filters: Arc<[FilterPlugin]>,
    /// Kinds that already have their own invalid-event label.
    invalid_kinds: HashSet<String>,
}

impl FilterStage {
    pub(super) fn new(pipeline: &str, filters: Vec<FilterPlugin>) -> FilterStage {
        FilterStage {
            pipeline: pipeline.to_owned(),
            filters: filters.into(),
            invalid_kinds: HashSet::new(),
        }
    }

    /// Filtering is CPU work (protobuf decoding), so up to `workers` batches
    /// are filtered at once on the runtime's threads; `buffered` hands them
    /// on in queue order, so a stream's events keep their order everywhere.
    pub(super) async fn run(
        mut self,
        queue: QueueReceiver<PipelineItem>,
        outputs: Vec<QueueSender<OutputItem>>,
        workers: usize,
    ) {
        let batches = futures::stream::unfold(queue, |mut queue| async move {
            queue.recv().await.map(|queued| (queued, queue))
        });
        let filters = self.filters.clone();
        let pipeline: Arc<str> = Arc::from(self.pipeline.as_str());
        let mut filtered = pin!(
            batches
                .map(|queued| apply_filters(pipeline.clone(), filters.clone(), queued))
                .buffered(workers.max(1))
        );
        while let Some(queued) = filtered.next().await {
            let Some(queued) = queued else { continue };
            self.count_invalid(&queued.item.events);
            let (events_count, bytes) = (queued.events, queued.bytes);
            let PipelineItem {
                events,
                ack,
                flush,
                mut record,
            } = queued.item;
            // Every output, or on replay only those still missing the record.
            let targets: Vec<usize> = match &record {
                Some(claims) => (0..outputs.len()).filter(|&i| claims.per_output[i].is_some()).collect(),
                None => (0..outputs.len()).collect(),
            };
            let mut producer_claims = ack.map(|ack| ack.fan_out(targets.len()).into_iter());
            let events = Arc::new(events);
            for output in targets {
                let mut acks = Vec::with_capacity(2);
                acks.extend(producer_claims.as_mut().and_then(Iterator::next));
                acks.extend(record.as_mut().and_then(|claims| claims.per_output[output].take()));
                let item = OutputItem {
                    events: events.clone(),
                    acks,
                    flush,
                };
                if outputs[output].send(item, events_count, bytes).await.is_err() {
                    // The claims inside the item are dropped unsettled: the
                    // producer gets an error, the record stays on disk.
                    warn!("an output queue is closed; events for it are reported as failed");
                }
            }
        }
    }

    fn count_invalid(&mut self, events: &[Event]) {
        for event in events {
            let reason = match event.payload {
                Payload::InvalidJson { .. } => "invalidJson",
                Payload::InvalidProto(_) => "invalidProto",
                _ => continue,
            };
            let label = kind_label(&event.kind);
            let kind = if self.invalid_kinds.contains(label) {
                label.to_owned()
            } else if self.invalid_kinds.len() < INVALID_KIND_LABELS {
                self.invalid_kinds.insert(label.to_owned());
                label.to_owned()
            } else {
                "other".to_owned()
            };
            counter!(INVALID_EVENTS, "pipeline" => self.pipeline.clone(), "kind" => kind, "reason" => reason)
                .increment(1);
        }
    }
}

/// Runs the filters over one batch on a runtime thread of its own; see
/// [`apply_isolated`] for what a panicking filter costs.
async fn apply_filters(
    pipeline: Arc<str>,
    filters: Arc<[FilterPlugin]>,
    mut queued: Queued<PipelineItem>,
) -> Option<Queued<PipelineItem>> {
    if filters.is_empty() || queued.item.events.is_empty() {
        return Some(queued);
    }
    let filtered = tokio::spawn(async move {
        apply_isolated(&pipeline, &filters, &mut queued.item.events);
        queued
    });
    match filtered.await {
        Ok(queued) => Some(queued),
        Err(error) => {
            error!(%error, "the filter stage failed; the batch's producers get an error");
            None
        }
    }
}

/// Applies each filter to the whole batch; if one panics, applies it again
/// event by event, so that only the event it cannot handle is set aside —
/// passed on unfiltered, protobuf flagged `invalidProto` — and its
/// neighbours are filtered as usual. Filters skip events they already
/// changed, so the second pass redoes nothing. Without this, one event would
/// fail its whole batch, and a persisted batch would fail again at every
/// restart.
pub(crate) fn apply_isolated(pipeline: &str, filters: &[FilterPlugin], events: &mut [Event]) {
    for FilterPlugin { id, filter } in filters {
        if catch_unwind(AssertUnwindSafe(|| filter.apply(events))).is_ok() {
            continue;
        }
        for event in events.iter_mut() {
            if catch_unwind(AssertUnwindSafe(|| filter.apply(std::slice::from_mut(event)))).is_err() {
                error!(kind = %kind_label(&event.kind), "a filter panicked on an event; it is passed on unfiltered");
                counter!(FILTER_PANICS, "pipeline" => pipeline.to_owned(), "plugin" => id.clone()).increment(1);
                if let Payload::Protobuf(bytes) = &event.payload {
                    event.payload = Payload::InvalidProto(bytes.clone());
                }
            }
        }
    }
}
