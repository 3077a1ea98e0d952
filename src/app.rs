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
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::PipelineConfig;
use crate::health::{AgentHealth, Lifecycle};
use crate::pipeline::{RunningPipeline, output_health, start};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Shut down on request and every queue drained: exit 0.
    Drained,
    /// An input failed (for example its port was taken): exit 1.
    InputFailed,
    /// The drain did not finish in time; events were lost: exit 1.
    Unfinished,
    /// Another agent holds a persisted queue's directory: exit 2, as for
    /// any other configuration mistake.
    QueueInUse,
}

struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

/// Runs the pipelines until a signal or an input failure, then drains.
pub async fn run(pipelines: Vec<PipelineConfig>) -> std::io::Result<RunOutcome> {
    let mut signals = Signals {
        terminate: signal(SignalKind::terminate())?,
        interrupt: signal(SignalKind::interrupt())?,
        hangup: signal(SignalKind::hangup())?,
    };
    let shutdown_timeout = pipelines
        .iter()
        .map(|p| p.shutdown_timeout)
        .max()
        .unwrap_or(Duration::from_secs(15));
    let unhealthy_after = pipelines
        .iter()
        .map(|p| p.unhealthy_after)
        .min()
        .unwrap_or(Duration::from_secs(30));
    let metrics_bind = pipelines.iter().find_map(|p| p.metrics_bind);
    if metrics_bind.is_some() {
        crate::metrics::recorder();
    }

    let shutdown = CancellationToken::new();
    let (failures, mut failed) = mpsc::unbounded_channel();
    let outputs = pipelines.iter().flat_map(output_health).collect();
    let (health, serving) = AgentHealth::new(unhealthy_after, outputs, Vec::new());
    let mut running: Vec<RunningPipeline> = Vec::with_capacity(pipelines.len());
    for pipeline in pipelines {
        match start(pipeline, shutdown.clone(), failures.clone(), serving.clone()) {
            Ok(pipeline) => running.push(pipeline),
            Err(reason) => {
                // Nothing half-started stays up: stop what did start.
                error!(%reason, "a pipeline cannot start; stopping");
                shutdown.cancel();
                wait_all(&running).await;
                return Ok(if reason.is_in_use() {
                    RunOutcome::QueueInUse
                } else {
                    RunOutcome::InputFailed
                });
            }
        }
    }
    drop(failures);
    let queues = running.iter().flat_map(RunningPipeline::queue_readings).collect();
    let health = Arc::new(health.with_queues(queues));
    let background = CancellationToken::new();
    spawn_observers(&health, metrics_bind, &background);
    health.set_lifecycle(Lifecycle::Running);
    info!(pipelines = running.len(), "eventstash running");

    let mut outcome = RunOutcome::Drained;
    loop {
        tokio::select! {
            // In this order: an input that fails also ends, so its failure
            // and "every input has finished" are ready together, and the
            // failure must win (exit 1, not 0).
            biased;
            _ = signals.hangup.recv() => {
                info!(signal = "SIGHUP", "reloading filters");
                running.iter().for_each(RunningPipeline::reload_filters);
                continue;
            }
            _ = signals.terminate.recv() => info!(signal = "SIGTERM", timeout = ?shutdown_timeout, "drain started"),
            _ = signals.interrupt.recv() => info!(signal = "SIGINT", timeout = ?shutdown_timeout, "drain started"),
            Some(failure) = failed.recv() => {
                error!(input = %failure.input, error = %failure.error, "drain started after an input failure");
                outcome = RunOutcome::InputFailed;
            }
            () = wait_all(&running) => info!("every input has finished; drain started"),
        }
        break;
    }
    health.set_lifecycle(Lifecycle::Draining);
    shutdown.cancel();

    let deadline = tokio::time::sleep(shutdown_timeout);
    let finished: std::io::Result<RunOutcome> = tokio::select! {
        () = wait_all(&running) => {
            report_counts(&running);
            Ok(outcome)
        }
        () = deadline => {
            report_leftovers(&running, &format!("shutdown timeout of {shutdown_timeout:?} passed"));
            Ok(RunOutcome::Unfinished)
        }
        _ = signals.terminate.recv() => {
            report_leftovers(&running, "second signal");
            Ok(RunOutcome::Unfinished)
        }
        _ = signals.interrupt.recv() => {
            report_leftovers(&running, "second signal");
            Ok(RunOutcome::Unfinished)
        }
    };
    // Persist the outputs' progress, so a restart resends as little as possible.
    join_all(running.iter().map(RunningPipeline::checkpoint)).await;
    background.cancel();
    finished
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
