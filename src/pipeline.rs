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
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventstash_plugin_api::{CancellationToken, Event, Filter, InputContext, Payload, ack_group};
use futures::StreamExt as _;
use metrics::counter;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{FilterPlugin, InputPlugin, PipelineConfig};
use crate::health::{OutputHealth, QueueReading};
use crate::metrics::{EVENTS_IN, FILTER_PANICS, INVALID_EVENTS, RELOADS};
use crate::output_driver::{OutputDriver, OutputItem};
use crate::persisted_queue::{OpenError, PersistedQueue};
use crate::queue::{QueueReceiver, QueueSender, Queued, bounded};
use crate::queue_log::StoredBatch;
use crate::replay_guard::{self, ReplayGuard, SETTLE_LIMIT};
use crate::sink::{Persistence, PipelineItem, PipelineSink};

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
    /// Its crash-loop guard, told when the agent stops by choice.
    replay_guard: Option<Arc<ReplayGuard>>,
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
    let replay_guard = persisted.as_ref().map(|queue| Arc::new(ReplayGuard::open(&queue.path)));

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
        replay_guard: replay_guard.clone(),
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
        replay_guard,
    })
}

/// What starting the inputs needs, moved into the task that first replays.
struct InputStarter {
    pipeline: String,
    tasks: TaskTracker,
    queue: QueueSender<PipelineItem>,
    max_batch_events: usize,
    persistence: Option<Arc<Persistence>>,
    replay_guard: Option<Arc<ReplayGuard>>,
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
        if let (Some(persistence), Some(guard)) = (&self.persistence, &self.replay_guard)
            && !self.replay(persistence, guard, replay).await
        {
            return;
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

impl InputStarter {
    /// Queues what the persisted queue left unfinished, as the replay guard
    /// plans it: at once, or one record at a time after a crash; a record
    /// that crashed the agent too often is set aside. False if the pipeline
    /// closed meanwhile.
    async fn replay(&self, persistence: &Persistence, guard: &ReplayGuard, replay: Vec<StoredBatch>) -> bool {
        let plan = guard.plan(replay);
        replay_guard::report(&plan);
        for batch in &plan.poisoned {
            if guard.set_aside(batch).await {
                persistence.log.finish_everywhere(batch);
            }
        }
        let records = plan.replay.len();
        let mut careful = plan.careful;
        for batch in plan.replay {
            let bytes = batch.events.iter().map(Event::size_estimate).sum();
            let record = persistence.log.replay_claims(&batch, bytes).await;
            let count = batch.events.len();
            let (settled, wait) = if careful {
                guard.note(batch.seq);
                let (ack, wait) = ack_group();
                (Some(ack), Some(wait))
            } else {
                (None, None)
            };
            let item = PipelineItem {
                events: batch.events,
                ack: settled,
                flush: true,
                record: Some(record),
            };
            if self.queue.send(item, count, bytes).await.is_err() {
                return false;
            }
            if let Some(wait) = wait
                && tokio::time::timeout(SETTLE_LIMIT, wait.wait()).await.is_err()
            {
                // Slow outputs, not a crash: the rest goes at once.
                info!(pipeline = %self.pipeline, seq = batch.seq, "a replayed record waits on its outputs; replaying the rest at once");
                careful = false;
            }
        }
        if plan.careful && careful {
            guard.done();
        }
        if records > 0 {
            info!(pipeline = %self.pipeline, records, "replay queued; starting inputs");
        }
        true
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
    filters: Arc<[Arc<dyn Filter>]>,
    mut queued: Queued<PipelineItem>,
) -> Option<Queued<PipelineItem>> {
    if filters.is_empty() || queued.item.events.is_empty() {
        return Some(queued);
    }
    let filtered = tokio::spawn(async move {
        apply_isolated(&filters, &mut queued.item.events);
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
pub(crate) fn apply_isolated(filters: &[Arc<dyn Filter>], events: &mut [Event]) {
    for filter in filters {
        if catch_unwind(AssertUnwindSafe(|| filter.apply(events))).is_ok() {
            continue;
        }
        for event in events.iter_mut() {
            if catch_unwind(AssertUnwindSafe(|| filter.apply(std::slice::from_mut(event)))).is_err() {
                error!(kind = %kind_label(&event.kind), "a filter panicked on an event; it is passed on unfiltered");
                counter!(FILTER_PANICS).increment(1);
                if let Payload::Protobuf(bytes) = &event.payload {
                    event.payload = Payload::InvalidProto(bytes.clone());
                }
            }
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
    /// The agent is stopping by choice: no crash-loop note is left.
    pub async fn checkpoint(&self) {
        if let Some(guard) = &self.replay_guard {
            guard.done();
        }
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
