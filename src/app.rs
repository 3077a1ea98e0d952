//! Running the agent: start every pipeline, wait for a signal or a failure,
//! then drain within one deadline.
//!
//! SIGTERM or SIGINT cancels the shutdown token: health turns NOT_SERVING,
//! the inputs stop accepting work and finish their streams, and the
//! pipelines drain stage by stage (see `pipeline`). If the drain does not
//! finish within the shutdown timeout — or a second signal arrives — what is
//! left in each queue is reported and the outcome says so, for a non-zero
//! exit. SIGHUP reloads the filters (the protobuf filter re-reads its .proto
//! files).

use std::sync::Arc;
use std::time::Duration;

use eventstash_plugin_api::CancellationToken;
use futures::future::join_all;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::PipelineConfig;
use crate::health::{AgentHealth, Lifecycle};
use crate::pipeline::{InputFailure, RunningPipeline, output_health, start};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Shut down on request and every queue drained: exit 0.
    Drained,
    /// An input failed (for example its port was taken): exit 1.
    InputFailed,
    /// The drain did not finish in time; events were lost: exit 1.
    Unfinished,
    /// Another agent holds a persisted queue's directory, or a filter
    /// cannot start (its directories cannot be watched): exit 2, as for any
    /// other configuration mistake.
    ConfigConflict,
}

/// The signals the agent answers to, installed before anything starts.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// What the agent takes from all its pipelines together.
struct AgentSettings {
    /// The longest pipeline's: one deadline for the whole drain.
    shutdown_timeout: Duration,
    /// The shortest pipeline's.
    unhealthy_after: Duration,
    /// The first pipeline's `[metrics] bind`.
    metrics_bind: Option<std::net::SocketAddr>,
}

impl AgentSettings {
    fn of(pipelines: &[PipelineConfig]) -> AgentSettings {
        AgentSettings {
            shutdown_timeout: pipelines
                .iter()
                .map(|p| p.shutdown_timeout)
                .max()
                .unwrap_or(Duration::from_secs(15)),
            unhealthy_after: pipelines
                .iter()
                .map(|p| p.unhealthy_after)
                .min()
                .unwrap_or(Duration::from_secs(30)),
            metrics_bind: pipelines.iter().find_map(|p| p.metrics_bind),
        }
    }
}

/// Runs the pipelines until a signal or an input failure, then drains.
pub async fn run(pipelines: Vec<PipelineConfig>) -> std::io::Result<RunOutcome> {
    let mut signals = Signals::install()?;
    let settings = AgentSettings::of(&pipelines);
    let shutdown = CancellationToken::new();
    // Senders: one per input task (see `pipeline`); receiver: the loop in
    // `wait_for_stop`. It never closes while an input could still fail.
    let (failures, mut failed) = mpsc::unbounded_channel();
    let outputs = pipelines.iter().flat_map(output_health).collect();
    let (health, serving) = AgentHealth::new(settings.unhealthy_after, outputs, Vec::new());
    let running = match start_all(pipelines, &shutdown, &failures, &serving).await {
        Ok(running) => running,
        Err(outcome) => return Ok(outcome),
    };
    drop(failures);
    let queues = running.iter().flat_map(RunningPipeline::queue_readings).collect();
    let health = Arc::new(health.with_queues(queues));
    let background = CancellationToken::new();
    spawn_observers(&health, settings.metrics_bind, &background);
    spawn_start_serving(&health, &running);

    let outcome = wait_for_stop(&mut signals, &mut failed, &running, settings.shutdown_timeout).await;
    // The inputs refuse new streams before health says NOT_SERVING, so a
    // producer that reads NOT_SERVING and tries another stream is refused.
    shutdown.cancel();
    health.set_lifecycle(Lifecycle::Draining);
    let finished = drain(&mut signals, &running, settings.shutdown_timeout, outcome).await;
    // Persist the outputs' progress, so a restart resends as little as possible.
    join_all(running.iter().map(RunningPipeline::checkpoint)).await;
    background.cancel();
    Ok(finished)
}

/// Starts every pipeline, or none: if one cannot start, what did start is
/// stopped and the outcome says why.
async fn start_all(
    pipelines: Vec<PipelineConfig>,
    shutdown: &CancellationToken,
    failures: &mpsc::UnboundedSender<InputFailure>,
    serving: &watch::Receiver<bool>,
) -> Result<Vec<RunningPipeline>, RunOutcome> {
    let mut running: Vec<RunningPipeline> = Vec::with_capacity(pipelines.len());
    for pipeline in pipelines {
        match start(pipeline, shutdown.clone(), failures.clone(), serving.clone()) {
            Ok(pipeline) => running.push(pipeline),
            Err(reason) => {
                // Nothing half-started stays up: stop what did start.
                error!(%reason, "a pipeline cannot start; stopping");
                shutdown.cancel();
                wait_all(&running).await;
                return Err(if reason.is_config_mistake() {
                    RunOutcome::ConfigConflict
                } else {
                    RunOutcome::InputFailed
                });
            }
        }
    }
    Ok(running)
}

/// Waits for what starts the drain — a signal, an input failure, or every
/// input finishing — answering SIGHUP meanwhile.
async fn wait_for_stop(
    signals: &mut Signals,
    failed: &mut mpsc::UnboundedReceiver<InputFailure>,
    running: &[RunningPipeline],
    shutdown_timeout: Duration,
) -> RunOutcome {
    loop {
        tokio::select! {
            // In this order: an input that fails also ends, so its failure
            // and "every input has finished" are ready together, and the
            // failure must win (exit 1, not 0).
            biased;
            _ = signals.hangup.recv() => {
                info!(signal = "SIGHUP", "reloading filters");
                running.iter().for_each(RunningPipeline::reload_filters);
            }
            _ = signals.terminate.recv() => {
                info!(signal = "SIGTERM", timeout = ?shutdown_timeout, "drain started");
                return RunOutcome::Drained;
            }
            _ = signals.interrupt.recv() => {
                info!(signal = "SIGINT", timeout = ?shutdown_timeout, "drain started");
                return RunOutcome::Drained;
            }
            Some(failure) = failed.recv() => {
                error!(input = %failure.input, error = %failure.error, "drain started after an input failure");
                return RunOutcome::InputFailed;
            }
            () = wait_all(running) => {
                info!("every input has finished; drain started");
                return RunOutcome::Drained;
            }
        }
    }
}

/// Waits for the drain within the shutdown timeout; past it, or on a
/// second signal, reports what is left and gives up.
async fn drain(
    signals: &mut Signals,
    running: &[RunningPipeline],
    shutdown_timeout: Duration,
    outcome: RunOutcome,
) -> RunOutcome {
    let deadline = tokio::time::sleep(shutdown_timeout);
    tokio::select! {
        () = wait_all(running) => {
            report_counts(running);
            outcome
        }
        () = deadline => {
            report_leftovers(running, &format!("shutdown timeout of {shutdown_timeout:?} passed"));
            RunOutcome::Unfinished
        }
        _ = signals.terminate.recv() => {
            report_leftovers(running, "second signal");
            RunOutcome::Unfinished
        }
        _ = signals.interrupt.recv() => {
            report_leftovers(running, "second signal");
            RunOutcome::Unfinished
        }
    }
}

/// The health evaluator and, if configured, the metrics endpoint. They run
/// through the drain, so operators can watch it.
fn spawn_observers(health: &Arc<AgentHealth>, metrics_bind: Option<std::net::SocketAddr>, stop: &CancellationToken) {
    let evaluator = health.clone();
    let stop_evaluator = stop.clone();
    tokio::spawn(async move { evaluator.watch(stop_evaluator).await });
    if let Some(bind) = metrics_bind {
        let health = health.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::metrics::serve(bind, health, stop).await {
                error!(%bind, %error, "metrics endpoint failed; events still flow");
            }
        });
    }
}

/// Marks the agent running once every pipeline has replayed what its
/// persisted queue left and started its inputs: until then health says
/// `starting` (NOT_SERVING), however long the replay takes, while
/// `/metrics` already answers. Signals are handled meanwhile by
/// `wait_for_stop`; a drain that begins first keeps the agent from ever
/// being marked running.
fn spawn_start_serving(health: &Arc<AgentHealth>, running: &[RunningPipeline]) {
    let health = health.clone();
    let pipelines = running.len();
    let started: Vec<_> = running.iter().map(RunningPipeline::inputs_started).collect();
    tokio::spawn(async move {
        // An error means the pipeline stopped before its inputs started:
        // the drain has begun, and `start_serving` refuses.
        join_all(started.into_iter().map(|mut started| async move {
            let _ = started.wait_for(|started| *started).await;
        }))
        .await;
        if health.start_serving() {
            info!(pipelines, "eventstash running");
        }
    });
}

async fn wait_all(running: &[RunningPipeline]) {
    join_all(running.iter().map(RunningPipeline::wait)).await;
}

/// The drain finished: every accepted event was stored by every output.
fn report_counts(running: &[RunningPipeline]) {
    for pipeline in running {
        let (events_in, outputs) = pipeline.counts();
        for (output, stored) in outputs {
            info!(pipeline = %pipeline.id, %output, events_in, stored, "output totals");
        }
    }
    info!("drain finished: every accepted event was handled by every output");
}

/// Logs, per queue, the events that will be lost by exiting now — or, with
/// the persisted queue, that wait on disk for the next start.
fn report_leftovers(running: &[RunningPipeline], reason: &str) {
    let mut total = 0;
    for pipeline in running {
        if let Some((path, events)) = pipeline.persisted_leftovers() {
            warn!(
                pipeline = %pipeline.id, queue = %path.display(), events, reason,
                "drain incomplete: events remain in the persisted queue and are delivered after the next start"
            );
            continue;
        }
        for (queue, events, bytes) in pipeline.leftovers() {
            total += events;
            error!(pipeline = %pipeline.id, %queue, events, bytes, "events lost: not yet written when the drain stopped");
        }
    }
    if total == 0 {
        warn!(
            reason,
            "drain stopped before every task finished, but no queued event was left"
        );
    } else {
        // Their producers were not acknowledged, so they can send them again.
        error!(
            reason,
            events = total,
            "drain incomplete: events in memory queues are lost (their producers got no success)"
        );
    }
}
