//! A running pipeline: inputs → pipeline queue → filters → one queue per
//! output → output drivers.
//!
//! Every stage is a task owning the receiving end of its queue; a stage ends
//! when its queue is closed and empty, and dropping its senders closes the
//! next queue. So the drain needs no flag: the inputs stop on the shutdown
//! token and return, the pipeline queue closes, the filter stage forwards
//! what is left and ends, the output queues close, and each driver writes
//! what is left and closes its output.

use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt as _;

use async_trait::async_trait;
use eventstash_plugin_api::{
    CancellationToken, EventBatch, EventSink, Filter, InputContext, SinkClosed,
};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{FilterPlugin, PipelineConfig};
use crate::output_driver::{OutputItem, drive_output};
use crate::queue::{QueueGauge, QueueReceiver, QueueSender, Queued, bounded};

/// An input that failed: the agent stops.
#[derive(Debug)]
pub struct InputFailure {
    /// Pipeline and input id.
    pub input: String,
    /// What went wrong.
    pub error: String,
}

/// A started pipeline: its tasks and the gauges to report what is left.
pub struct RunningPipeline {
    /// `[pipeline] id`.
    pub id: String,
    tasks: TaskTracker,
    gauges: Vec<(String, QueueGauge)>,
    /// The filters, for SIGHUP reloads.
    filters: Vec<(String, Arc<dyn Filter>)>,
}

/// The input side of the pipeline queue.
struct PipelineSink {
    queue: QueueSender<EventBatch>,
    max_batch_events: usize,
}

#[async_trait]
impl EventSink for PipelineSink {
    async fn send(&self, mut batch: EventBatch) -> Result<(), SinkClosed> {
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
    async fn enqueue(&self, batch: EventBatch) -> Result<(), SinkClosed> {
        let (events, bytes) = (batch.events.len(), batch.size_estimate());
        self.queue
            .send(batch, events, bytes)
            .await
            .map_err(|_| SinkClosed)
    }
}

/// Starts every stage of `config`. Input failures are reported on `failures`.
pub fn start(
    config: PipelineConfig,
    shutdown: CancellationToken,
    failures: mpsc::UnboundedSender<InputFailure>,
) -> RunningPipeline {
    let tasks = TaskTracker::new();
    let mut gauges = Vec::new();
    let pipeline_id = config.id.clone();

    let mut output_queues = Vec::with_capacity(config.outputs.len());
    for output in config.outputs {
        let (sender, receiver) = bounded::<OutputItem>(output.queue);
        gauges.push((format!("output {}", output.id), sender.gauge()));
        output_queues.push(sender);
        tasks.spawn(drive_output(
            output.id,
            output.output,
            receiver,
            output.batch,
        ));
    }

    let (pipeline_queue, pipeline_receiver) = bounded::<EventBatch>(config.queue);
    gauges.insert(0, ("pipeline queue".to_owned(), pipeline_queue.gauge()));
    let filters = config
        .filters
        .iter()
        .map(|f| (f.id.clone(), f.filter.clone()))
        .collect();
    tasks.spawn(run_filters(
        config.filters,
        pipeline_receiver,
        output_queues,
        config.workers,
    ));

    let max_batch_events = config.queue.max_events.clamp(1, 4096);
    for input in config.inputs {
        let ctx = InputContext {
            id: input.id.clone(),
            sink: Box::new(PipelineSink {
                queue: pipeline_queue.clone(),
                max_batch_events,
            }),
            shutdown: shutdown.clone(),
        };
        let failures = failures.clone();
        let name = format!("{pipeline_id}/{}", input.id);
        tasks.spawn(async move {
            if let Err(error) = input.input.run(ctx).await {
                error!(input = %name, %error, "input failed; stopping the agent");
                let _ = failures.send(InputFailure {
                    input: name,
                    error: error.to_string(),
                });
            }
        });
    }
    // The inputs now hold the only senders: the queue closes when they return.
    drop(pipeline_queue);
    tasks.close();
    info!(pipeline = %pipeline_id, file = %config.file.display(), "pipeline started");
    RunningPipeline {
        id: pipeline_id,
        tasks,
        gauges,
        filters,
    }
}

/// The filter stage: applies the filters to each batch and fans it out to
/// every output queue, waiting on a full one.
///
/// Filtering is CPU work (protobuf decoding), so up to `workers` batches are
/// filtered at once on the runtime's threads; `buffered` hands them on in
/// queue order, so a stream's events keep their order in every output.
async fn run_filters(
    filters: Vec<FilterPlugin>,
    queue: QueueReceiver<EventBatch>,
    outputs: Vec<QueueSender<OutputItem>>,
    workers: usize,
) {
    let filters: Arc<[Arc<dyn Filter>]> = filters.into_iter().map(|f| f.filter).collect();
    let batches = futures::stream::unfold(queue, |mut queue| async move {
        queue.recv().await.map(|queued| (queued, queue))
    });
    let mut filtered = pin!(
        batches
            .map(|queued| apply_filters(filters.clone(), queued))
            .buffered(workers.max(1))
    );
    while let Some(queued) = filtered.next().await {
        let Some(queued) = queued else { continue };
        let (events_count, bytes) = (queued.events, queued.bytes);
        let EventBatch { events, ack, flush } = queued.item;
        let events = Arc::new(events);
        for (output, ack) in outputs.iter().zip(ack.fan_out(outputs.len())) {
            let item = OutputItem {
                events: events.clone(),
                ack,
                flush,
            };
            if output.send(item, events_count, bytes).await.is_err() {
                // The claim inside the item is dropped unsettled: its
                // producer gets an error, never a false success.
                warn!("an output queue is closed; events for it are reported as failed");
            }
        }
    }
}

/// Runs the filters over one batch on a runtime thread of its own. A filter
/// that panics loses the batch's claims, so its producers get an error.
async fn apply_filters(
    filters: Arc<[Arc<dyn Filter>]>,
    mut queued: Queued<EventBatch>,
) -> Option<Queued<EventBatch>> {
    if filters.is_empty() || queued.item.events.is_empty() {
        return Some(queued);
    }
    let filtered = tokio::spawn(async move {
        for filter in filters.iter() {
            filter.apply(&mut queued.item.events);
        }
        queued
    });
    match filtered.await {
        Ok(queued) => Some(queued),
        Err(error) => {
            error!(%error, "a filter panicked; the batch's producers get an error");
            None
        }
    }
}

impl RunningPipeline {
    /// Waits until every stage has finished.
    pub async fn wait(&self) {
        self.tasks.wait().await;
    }

    /// Reloads every filter (SIGHUP); a filter that fails keeps what it had.
    pub fn reload_filters(&self) {
        for (id, filter) in &self.filters {
            match filter.reload() {
                Ok(()) => info!(pipeline = %self.id, filter = %id, "filter reloaded"),
                Err(error) => {
                    error!(pipeline = %self.id, filter = %id, %error, "reload failed; the filter keeps its previous state")
                }
            }
        }
    }

    /// What each queue still holds, for the report of an unfinished drain.
    pub fn leftovers(&self) -> Vec<(String, usize, usize)> {
        self.gauges
            .iter()
            .map(|(name, gauge)| (name.clone(), gauge.events(), gauge.bytes()))
            .filter(|(_, events, _)| *events > 0)
            .collect()
    }
}
