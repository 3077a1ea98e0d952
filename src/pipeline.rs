//! A running pipeline: inputs → pipeline queue → filters → one queue per
//! output → output drivers.
//!
//! Every stage is a task owning the receiving end of its queue; a stage ends
//! when its queue is closed and empty, and dropping its senders closes the
//! next queue. So the drain needs no flag: the inputs stop on the shutdown
//! token and return, the pipeline queue closes, the filter stage forwards
//! what is left and ends, the output queues close, and each driver writes
//! what is left and closes its output.

use std::collections::HashSet;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventstash_plugin_api::{CancellationToken, Event, Filter, InputContext, Payload};
use futures::StreamExt as _;
use metrics::counter;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{FilterPlugin, InputPlugin, PipelineConfig};
use crate::health::{OutputHealth, QueueReading};
use crate::metrics::{EVENTS_IN, INVALID_EVENTS, RELOADS};
use crate::output_driver::{OutputDriver, OutputItem};
use crate::persisted_queue::{OpenError, PersistedQueue};
use crate::queue::{QueueReceiver, QueueSender, Queued, bounded};
use crate::queue_log::StoredBatch;
use crate::sink::{Persistence, PipelineItem, PipelineSink};

/// Distinct `kind` labels on the invalid-event counter; producers choose
/// kinds, so past this they are counted as `other` to bound the series.
const INVALID_KIND_LABELS: usize = 100;

/// An input that failed: the agent stops.
#[derive(Debug)]
pub struct InputFailure {
    /// Pipeline and input id.
    pub input: String,
    /// What went wrong.
    pub error: String,
}

/// A started pipeline: its tasks, and what health and reports read.
pub struct RunningPipeline {
    /// `[pipeline] id`.
    pub id: String,
    tasks: TaskTracker,
    queues: Vec<QueueReading>,
    outputs: Vec<(String, Arc<AtomicU64>)>,
    events_in: Arc<AtomicU64>,
    /// The filters, for SIGHUP reloads.
    filters: Vec<(String, Arc<dyn Filter>)>,
    /// The persisted queue, if the pipeline has one.
    persisted: Option<PersistedQueue>,
}

/// Starts every stage of `config`. Input failures are reported on
/// `failures`; inputs mirror `serving` in their health protocols. With the
/// persisted queue, what a previous run left unfinished is replayed before
/// the inputs start.
pub fn start(
    config: PipelineConfig,
    shutdown: CancellationToken,
    failures: mpsc::UnboundedSender<InputFailure>,
    serving: watch::Receiver<bool>,
) -> Result<RunningPipeline, OpenError> {
    let tasks = TaskTracker::new();
    let pipeline_id = config.id.clone();
    let mut queues = Vec::new();
    let mut outputs = Vec::new();

    let output_ids: Vec<String> = config.outputs.iter().map(|o| o.id.clone()).collect();
    let (persisted, replay) = match &config.persisted {
        Some(settings) => {
            let (queue, replay) =
                PersistedQueue::open(settings.path.clone(), &output_ids, config.queue, settings.sync_interval)?;
            (Some(queue), replay)
        }
        None => (None, Vec::new()),
    };

    let mut output_queues = Vec::with_capacity(config.outputs.len());
    for output in config.outputs {
        let (sender, receiver) = bounded::<OutputItem>(output.queue);
        queues.push(QueueReading {
            pipeline: pipeline_id.clone(),
            queue: format!("output {}", output.id),
            gauge: sender.gauge(),
        });
        output_queues.push(sender);
        let driver = OutputDriver::new(&pipeline_id, output);
        outputs.push((driver.id().to_owned(), driver.delivered_counter()));
        tasks.spawn(driver.run(receiver));
    }

    let (pipeline_queue, pipeline_receiver) = bounded::<PipelineItem>(config.queue);
    queues.insert(
        0,
        QueueReading {
            pipeline: pipeline_id.clone(),
            queue: "pipeline".to_owned(),
            gauge: pipeline_queue.gauge(),
        },
    );
    let filters = config
        .filters
        .iter()
        .map(|f| (f.id.clone(), f.filter.clone()))
        .collect();
    let stage = FilterStage::new(&pipeline_id, config.filters);
    tasks.spawn(stage.run(pipeline_receiver, output_queues, config.workers));

    let persistence = persisted.as_ref().map(|queue| {
        queues.push(QueueReading {
            pipeline: pipeline_id.clone(),
            queue: "persisted".to_owned(),
            gauge: queue.gauge(),
        });
        Arc::new(Persistence {
            log: queue.handle(),
            ack_queued: config.persisted.as_ref().is_some_and(|p| p.ack_queued),
        })
    });
    let events_in = Arc::new(AtomicU64::new(0));
    let inputs = InputStarter {
        pipeline: pipeline_id.clone(),
        tasks: tasks.clone(),
        queue: pipeline_queue,
        max_batch_events: config.queue.max_events.clamp(1, 4096),
        persistence,
        events_in: events_in.clone(),
        shutdown,
        failures,
        serving,
    };
    tasks.spawn(inputs.start_after_replay(config.inputs, replay));
    tasks.close();
    info!(pipeline = %pipeline_id, file = %config.file.display(), "pipeline started");
    Ok(RunningPipeline {
        id: pipeline_id,
        tasks,
        queues,
        outputs,
        events_in,
        filters,
        persisted,
    })
}

/// What starting the inputs needs, moved into the task that first replays.
struct InputStarter {
    pipeline: String,
    tasks: TaskTracker,
    queue: QueueSender<PipelineItem>,
    max_batch_events: usize,
    persistence: Option<Arc<Persistence>>,
    events_in: Arc<AtomicU64>,
    shutdown: CancellationToken,
    failures: mpsc::UnboundedSender<InputFailure>,
    serving: watch::Receiver<bool>,
}

impl InputStarter {
    /// Queues the replayed records (in order, before anything new), then
    /// starts the inputs. The inputs hold the only queue senders after
    /// this, so the queue closes when they return.
    async fn start_after_replay(self, inputs: Vec<InputPlugin>, replay: Vec<StoredBatch>) {
        if let Some(persistence) = &self.persistence {
            let records = replay.len();
            for batch in replay {
                let bytes = batch.events.iter().map(Event::size_estimate).sum();
                let record = persistence.log.replay_claims(&batch, bytes).await;
                let count = batch.events.len();
                let item = PipelineItem {
                    events: batch.events,
                    ack: None,
                    flush: true,
                    record: Some(record),
                };
                if self.queue.send(item, count, bytes).await.is_err() {
                    return;
                }
            }
            if records > 0 {
                info!(pipeline = %self.pipeline, records, "replay queued; starting inputs");
            }
        }
        for input in inputs {
            let labels = [("pipeline", self.pipeline.clone()), ("plugin", input.id.clone())];
            let ctx = InputContext {
                context: input.context,
                sink: Box::new(PipelineSink {
                    queue: self.queue.clone(),
                    max_batch_events: self.max_batch_events,
                    persistence: self.persistence.clone(),
                    events_in: counter!(EVENTS_IN, &labels),
                    total_in: self.events_in.clone(),
                }),
                shutdown: self.shutdown.clone(),
                serving: self.serving.clone(),
            };
            let failures = self.failures.clone();
            let name = format!("{}/{}", self.pipeline, input.id);
            self.tasks.spawn(async move {
                if let Err(error) = input.input.run(ctx).await {
                    error!(input = %name, %error, "input failed; stopping the agent");
                    let _ = failures.send(InputFailure {
                        input: name,
                        error: error.to_string(),
                    });
                }
            });
        }
    }
}

/// The filter stage: applies the filters to each batch, counts what stays
/// undecoded, and fans each batch out to every output queue, waiting on a
/// full one.
struct FilterStage {
    pipeline: String,
    filters: Arc<[Arc<dyn Filter>]>,
    /// Kinds that already have their own invalid-event label.
    invalid_kinds: HashSet<String>,
}

impl FilterStage {
    fn new(pipeline: &str, filters: Vec<FilterPlugin>) -> FilterStage {
        FilterStage {
            pipeline: pipeline.to_owned(),
            filters: filters.into_iter().map(|f| f.filter).collect(),
            invalid_kinds: HashSet::new(),
        }
    }

    /// Filtering is CPU work (protobuf decoding), so up to `workers` batches
    /// are filtered at once on the runtime's threads; `buffered` hands them
    /// on in queue order, so a stream's events keep their order everywhere.
    async fn run(mut self, queue: QueueReceiver<PipelineItem>, outputs: Vec<QueueSender<OutputItem>>, workers: usize) {
        let batches = futures::stream::unfold(queue, |mut queue| async move {
            queue.recv().await.map(|queued| (queued, queue))
        });
        let filters = self.filters.clone();
        let mut filtered = pin!(
            batches
                .map(|queued| apply_filters(filters.clone(), queued))
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
            let kind = if self.invalid_kinds.contains(&event.kind) {
                event.kind.clone()
            } else if self.invalid_kinds.len() < INVALID_KIND_LABELS {
                self.invalid_kinds.insert(event.kind.clone());
                event.kind.clone()
            } else {
                "other".to_owned()
            };
            counter!(INVALID_EVENTS, "pipeline" => self.pipeline.clone(), "kind" => kind, "reason" => reason)
                .increment(1);
        }
    }
}

/// Runs the filters over one batch on a runtime thread of its own. A filter
/// that panics loses the batch's claims, so its producers get an error.
async fn apply_filters(
    filters: Arc<[Arc<dyn Filter>]>,
    mut queued: Queued<PipelineItem>,
) -> Option<Queued<PipelineItem>> {
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
            let outcome = match filter.reload() {
                Ok(()) => {
                    info!(pipeline = %self.id, filter = %id, "filter reloaded");
                    "ok"
                }
                Err(error) => {
                    error!(pipeline = %self.id, filter = %id, %error, "reload failed; the filter keeps its previous state");
                    "failed"
                }
            };
            counter!(RELOADS, "pipeline" => self.id.clone(), "plugin" => id.clone(), "outcome" => outcome).increment(1);
        }
    }

    /// The queues, for health and metrics.
    pub(crate) fn queue_readings(&self) -> impl Iterator<Item = QueueReading> + '_ {
        self.queues.iter().map(|q| QueueReading {
            pipeline: q.pipeline.clone(),
            queue: q.queue.clone(),
            gauge: q.gauge.clone(),
        })
    }

    /// Events received and, per output, events stored so far.
    pub fn counts(&self) -> (u64, Vec<(String, u64)>) {
        let outputs = self
            .outputs
            .iter()
            .map(|(id, delivered)| (id.clone(), delivered.load(Ordering::Relaxed)))
            .collect();
        (self.events_in.load(Ordering::Relaxed), outputs)
    }

    /// The persisted queue's directory and the events it still holds.
    pub fn persisted_leftovers(&self) -> Option<(std::path::PathBuf, usize)> {
        self.persisted.as_ref().map(|q| (q.path.clone(), q.gauge().events()))
    }

    /// Persists the progress of the outputs (best effort, bounded in time).
    pub async fn checkpoint(&self) {
        if let Some(queue) = &self.persisted {
            queue.checkpoint(std::time::Duration::from_secs(2)).await;
        }
    }

    /// What each queue still holds, for the report of an unfinished drain.
    pub fn leftovers(&self) -> Vec<(String, usize, usize)> {
        self.queues
            .iter()
            .map(|q| (q.queue.clone(), q.gauge.events(), q.gauge.bytes()))
            .filter(|(_, events, _)| *events > 0)
            .collect()
    }
}

/// Output health cells of a pipeline's config, registered before it starts.
pub(crate) fn output_health(config: &PipelineConfig) -> Vec<OutputHealth> {
    config
        .outputs
        .iter()
        .map(|o| OutputHealth {
            pipeline: config.id.clone(),
            output: o.id.clone(),
            health: o.health.clone(),
        })
        .collect()
}
