//! A running pipeline: inputs → pipeline queue → filters → one queue per
//! output → output drivers.
//!
//! Every stage is a task owning the receiving end of its queue; a stage ends
//! when its queue is closed and empty, and dropping its senders closes the
//! next queue. So the drain needs no flag: the inputs stop on the shutdown
//! token and return, the pipeline queue closes, the filter stage forwards
//! what is left and ends, the output queues close, and each driver writes
//! what is left and closes its output.

mod filter_stage;
mod inputs;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventstash_plugin_api::{BoxError, CancellationToken, Filter};
use metrics::counter;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use filter_stage::FilterStage;
pub(crate) use filter_stage::apply_isolated;
use inputs::InputStarter;

use crate::config::{FilterPlugin, OutputPlugin, PipelineConfig};
use crate::health::{OutputHealth, QueueReading};
use crate::metrics::RELOADS;
use crate::output_driver::{OutputDriver, OutputItem};
use crate::persisted_queue::{OpenError, PersistedQueue};
use crate::queue::{QueueGauge, QueueSender, bounded};
use crate::queue_log::StoredBatch;
use crate::replay_guard::ReplayGuard;
use crate::sink::{Persistence, PipelineItem};

/// An input that failed: the agent stops.
#[derive(Debug)]
pub struct InputFailure {
    /// Pipeline and input id.
    pub input: String,
    /// What went wrong.
    pub error: BoxError,
}

/// Why a pipeline could not start. Nothing of it runs then.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The persisted queue cannot be opened.
    #[error(transparent)]
    Queue(#[from] OpenError),
    /// A filter could not start what it runs beside its events (the
    /// protobuf filter's watcher).
    #[error("filter {filter} cannot start: {source}")]
    Filter {
        /// The filter's id.
        filter: String,
        /// Why.
        source: BoxError,
    },
}

impl StartError {
    /// Whether the configuration is at fault (another agent holds the
    /// queue directory, a filter cannot watch its directories): exit 2, as
    /// for any other configuration mistake.
    pub fn is_config_mistake(&self) -> bool {
        match self {
            StartError::Queue(error) => error.is_in_use(),
            StartError::Filter { .. } => true,
        }
    }
}

/// A started pipeline: its tasks, and what health and reports read.
pub struct RunningPipeline {
    /// `[pipeline] id`.
    pub id: String,
    /// Every stage's task; closed once all are spawned, so `wait` ends when
    /// the last stage returns.
    tasks: TaskTracker,
    /// Gauges of the pipeline queue, the output queues and the persisted
    /// queue, in that order.
    queues: Vec<QueueReading>,
    /// Events each output stored, by output id.
    outputs: Vec<(String, Arc<AtomicU64>)>,
    /// Events every input received.
    events_in: Arc<AtomicU64>,
    /// The filters, for SIGHUP reloads.
    filters: Vec<(String, Arc<dyn Filter>)>,
    /// The persisted queue, if the pipeline has one.
    persisted: Option<PersistedQueue>,
    /// Its crash-loop guard, told when the agent stops by choice.
    replay_guard: Option<Arc<ReplayGuard>>,
}

/// Starts every stage of `config`, downstream first: start the filters,
/// open the persisted queue, spawn the output drivers, the filter stage,
/// then the inputs (after the replay). Input failures are reported on
/// `failures`; inputs mirror `serving` in their health protocols.
pub fn start(
    config: PipelineConfig,
    shutdown: CancellationToken,
    failures: mpsc::UnboundedSender<InputFailure>,
    serving: watch::Receiver<bool>,
) -> Result<RunningPipeline, StartError> {
    start_filters(&config.filters)?;
    let tasks = TaskTracker::new();
    let (persisted, replay) = open_queue(&config)?;
    let replay_guard = persisted.as_ref().map(|queue| Arc::new(ReplayGuard::open(&queue.path)));
    let outputs = spawn_outputs(&config.id, config.outputs, &tasks);
    let filters: Vec<(String, Arc<dyn Filter>)> = config
        .filters
        .iter()
        .map(|f| (f.id.clone(), f.filter.clone()))
        .collect();
    let stage = FilterStage::new(&config.id, config.filters);
    let (pipeline_queue, pipeline_receiver) = bounded::<PipelineItem>(config.queue);
    let mut queues = vec![reading(&config.id, "pipeline", pipeline_queue.gauge())];
    tasks.spawn(stage.run(pipeline_receiver, outputs.queues, config.workers));
    queues.extend(outputs.readings);

    let persistence = persisted.as_ref().map(|queue| {
        queues.push(reading(&config.id, "persisted", queue.gauge()));
        Arc::new(Persistence {
            log: queue.handle(),
            ack_queued: config.persisted.as_ref().is_some_and(|p| p.ack_queued),
        })
    });
    let events_in = Arc::new(AtomicU64::new(0));
    let inputs = InputStarter {
        pipeline: config.id.clone(),
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
    info!(pipeline = %config.id, file = %config.file.display(), "pipeline started");
    Ok(RunningPipeline {
        id: config.id,
        tasks,
        queues,
        outputs: outputs.delivered,
        events_in,
        filters,
        persisted,
        replay_guard,
    })
}

/// Starts what each filter runs beside its events (see `Filter::start`).
fn start_filters(filters: &[FilterPlugin]) -> Result<(), StartError> {
    for plugin in filters {
        plugin.filter.start().map_err(|source| StartError::Filter {
            filter: plugin.id.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Opens the persisted queue, if the pipeline has one, with what a previous
/// run left unfinished.
fn open_queue(config: &PipelineConfig) -> Result<(Option<PersistedQueue>, Vec<StoredBatch>), OpenError> {
    let Some(settings) = &config.persisted else {
        return Ok((None, Vec::new()));
    };
    let output_ids: Vec<String> = config.outputs.iter().map(|o| o.id.clone()).collect();
    let (queue, replay) =
        PersistedQueue::open(settings.path.clone(), &output_ids, config.queue, settings.sync_interval)?;
    Ok((Some(queue), replay))
}

/// The output drivers, spawned: the filter stage's ends of their queues,
/// and what health and the drain report read.
struct SpawnedOutputs {
    /// Senders of the output queues, in output order, for the filter stage
    /// (their only holder: the queues close when it returns). Each driver
    /// holds its queue's receiver.
    queues: Vec<QueueSender<OutputItem>>,
    /// The output queues' gauges.
    readings: Vec<QueueReading>,
    /// Events each output stored.
    delivered: Vec<(String, Arc<AtomicU64>)>,
}

fn spawn_outputs(pipeline: &str, outputs: Vec<OutputPlugin>, tasks: &TaskTracker) -> SpawnedOutputs {
    let mut spawned = SpawnedOutputs {
        queues: Vec::with_capacity(outputs.len()),
        readings: Vec::with_capacity(outputs.len()),
        delivered: Vec::with_capacity(outputs.len()),
    };
    for output in outputs {
        let (sender, receiver) = bounded::<OutputItem>(output.queue);
        spawned
            .readings
            .push(reading(pipeline, &format!("output {}", output.id), sender.gauge()));
        spawned.queues.push(sender);
        let driver = OutputDriver::new(pipeline, output);
        spawned
            .delivered
            .push((driver.id().to_owned(), driver.delivered_counter()));
        tasks.spawn(driver.run(receiver));
    }
    spawned
}

fn reading(pipeline: &str, queue: &str, gauge: QueueGauge) -> QueueReading {
    QueueReading {
        pipeline: pipeline.to_owned(),
        queue: queue.to_owned(),
        gauge,
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
