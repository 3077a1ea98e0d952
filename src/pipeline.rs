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
    /// True once the replay is queued and the inputs are started.
    inputs_started: watch::Receiver<bool>,
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
    let (inputs_started, started_watch) = watch::channel(false);
    let inputs = InputStarter {
        pipeline: config.id.clone(),
        tasks: tasks.clone(),
        queue: pipeline_queue,
        max_batch_events: config.queue.max_events.clamp(1, 4096),
        max_batch_bytes: config.queue.max_bytes.max(1),
        persistence,
        replay_guard: replay_guard.clone(),
        events_in: events_in.clone(),
        shutdown,
        failures,
        serving,
        started: inputs_started,
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
        inputs_started: started_watch,
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
    /// Turns true once the persisted queue's replay is queued and every
    /// input is started (at once without a persisted queue).
    pub fn inputs_started(&self) -> watch::Receiver<bool> {
        self.inputs_started.clone()
    }

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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use eventstash_plugin_api::{
        ComponentHealth, Event, EventBatch, Input, InputContext, Output, OutputBatch, PluginContext, ack_group,
    };

    use super::*;
    use crate::config::{BatchSettings, InputPlugin};
    use crate::queue::QueueLimits;
    use crate::test_support::json_events;

    /// Long enough for any machine; the tests do not depend on it.
    const PATIENCE: Duration = Duration::from_secs(30);

    const LIMITS: QueueLimits = QueueLimits {
        max_events: 100,
        max_bytes: 1 << 20,
    };

    /// Sends one batch, waits until it is stored everywhere, returns.
    struct OneBatch(usize);

    #[async_trait]
    impl Input for OneBatch {
        async fn run(self: Box<Self>, ctx: InputContext) -> Result<(), BoxError> {
            let (ack, wait) = ack_group();
            let events = json_events(self.0);
            ctx.sink
                .send(EventBatch {
                    events,
                    ack,
                    flush: true,
                })
                .await?;
            Ok(wait.wait().await?)
        }
    }

    /// Fails at once, like an input whose port is taken.
    struct PortTaken;

    #[async_trait]
    impl Input for PortTaken {
        async fn run(self: Box<Self>, _ctx: InputContext) -> Result<(), BoxError> {
            Err("port 42043 is taken".into())
        }
    }

    /// Records the kinds it stores, and whether it was closed.
    #[derive(Default)]
    struct Recording {
        kinds: Mutex<Vec<String>>,
        closed: Mutex<bool>,
    }

    #[async_trait]
    impl Output for Recording {
        async fn write(&self, batch: OutputBatch) -> Result<(), BoxError> {
            let mut kinds = self.kinds.lock().unwrap();
            kinds.extend(batch.iter().map(|event| event.kind.clone()));
            Ok(())
        }

        async fn close(&self) -> Result<(), BoxError> {
            *self.closed.lock().unwrap() = true;
            Ok(())
        }
    }

    /// Marks every event it sees; panics on the event with id `poison`;
    /// cannot start when asked not to.
    struct Marker {
        startable: bool,
    }

    impl Filter for Marker {
        fn apply(&self, events: &mut [Event]) {
            assert!(events.iter().all(|e| e.id != "poison"), "poisoned");
            events.iter_mut().for_each(|e| e.kind = "marked".to_owned());
        }

        fn start(&self) -> Result<(), BoxError> {
            if self.startable {
                Ok(())
            } else {
                Err("cannot watch protos/".into())
            }
        }
    }

    fn input(id: &str, input: Box<dyn Input>) -> InputPlugin {
        InputPlugin {
            id: id.into(),
            context: PluginContext::new("main", id),
            input,
        }
    }

    fn output(id: &str, output: Arc<Recording>) -> OutputPlugin {
        OutputPlugin {
            id: id.into(),
            health: ComponentHealth::default(),
            output,
            queue: LIMITS,
            batch: BatchSettings {
                max_events: 100,
                max_bytes: 1 << 20,
                delay: Duration::from_secs(60),
                concurrency: 1,
            },
        }
    }

    fn pipeline(inputs: Vec<InputPlugin>, filter: Marker, outputs: Vec<OutputPlugin>) -> PipelineConfig {
        PipelineConfig {
            file: PathBuf::from("test.toml"),
            id: "main".into(),
            shutdown_timeout: PATIENCE,
            queue: LIMITS,
            workers: 2,
            unhealthy_after: PATIENCE,
            metrics_bind: None,
            log_format: None,
            persisted: None,
            inputs,
            filters: vec![FilterPlugin {
                id: "marker".into(),
                filter: Arc::new(filter),
            }],
            outputs,
            event_stores: Vec::new(),
            replay_sources: Vec::new(),
        }
    }

    fn start_now(
        config: PipelineConfig,
    ) -> (
        Result<RunningPipeline, StartError>,
        mpsc::UnboundedReceiver<InputFailure>,
    ) {
        let (failures, failed) = mpsc::unbounded_channel();
        let (_serving, serving) = watch::channel(true);
        (start(config, CancellationToken::new(), failures, serving), failed)
    }

    #[tokio::test]
    async fn events_reach_every_output_filtered_and_the_pipeline_ends_when_its_inputs_return() {
        let (a, b) = (Arc::new(Recording::default()), Arc::new(Recording::default()));
        let config = pipeline(
            vec![input("one", Box::new(OneBatch(3)))],
            Marker { startable: true },
            vec![output("a", a.clone()), output("b", b.clone())],
        );
        let (running, _failed) = start_now(config);
        let running = running.unwrap();
        tokio::time::timeout(PATIENCE, running.wait())
            .await
            .expect("the pipeline drains");
        for output in [&a, &b] {
            assert_eq!(*output.kinds.lock().unwrap(), ["marked"; 3]);
            assert!(*output.closed.lock().unwrap(), "closed after the drain");
        }
        let (events_in, stored) = running.counts();
        assert_eq!(events_in, 3);
        assert_eq!(stored, [("a".to_owned(), 3), ("b".to_owned(), 3)]);
        assert!(running.leftovers().is_empty());
    }

    #[tokio::test]
    async fn a_failing_input_is_reported_by_name_and_the_pipeline_still_drains() {
        let recording = Arc::new(Recording::default());
        let config = pipeline(
            vec![input("bad", Box::new(PortTaken))],
            Marker { startable: true },
            vec![output("a", recording.clone())],
        );
        let (running, mut failed) = start_now(config);
        let running = running.unwrap();
        let failure = failed.recv().await.expect("the failure is reported");
        assert_eq!(failure.input, "main/bad");
        assert_eq!(failure.error.to_string(), "port 42043 is taken");
        tokio::time::timeout(PATIENCE, running.wait())
            .await
            .expect("the pipeline drains");
        assert!(*recording.closed.lock().unwrap());
    }

    #[tokio::test]
    async fn a_filter_that_cannot_start_starts_nothing_and_blames_the_configuration() {
        let recording = Arc::new(Recording::default());
        let config = pipeline(
            vec![input("one", Box::new(OneBatch(1)))],
            Marker { startable: false },
            vec![output("a", recording.clone())],
        );
        let Err(error) = start_now(config).0 else {
            panic!("the pipeline started without its filter");
        };
        assert!(error.is_config_mistake());
        assert_eq!(error.to_string(), "filter marker cannot start: cannot watch protos/");
        assert!(!*recording.closed.lock().unwrap(), "no output driver ran");
    }

    #[test]
    fn a_filter_that_panics_on_one_event_costs_only_that_event() {
        let filters = [FilterPlugin {
            id: "marker".into(),
            filter: Arc::new(Marker { startable: true }),
        }];
        let mut events = json_events(3);
        events[1].id = "poison".into();
        events[1].payload = eventstash_plugin_api::Payload::Protobuf(bytes::Bytes::from_static(b"\x08\x01"));
        apply_isolated("main", &filters, &mut events);
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["marked", "k", "marked"]);
        assert!(matches!(
            events[1].payload,
            eventstash_plugin_api::Payload::InvalidProto(_)
        ));
    }
}
