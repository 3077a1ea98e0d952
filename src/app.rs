//! Running the agent: start every pipeline, wait for a signal or a failure,
//! then drain within one deadline.
//!
//! SIGTERM or SIGINT cancels the shutdown token: the inputs stop accepting
//! work and finish their streams, and the pipelines drain stage by stage
//! (see `pipeline`). If the drain does not finish within the shutdown
//! timeout — or a second signal arrives — what is left in each queue is
//! reported and the outcome says so, for a non-zero exit. SIGHUP reloads
//! the filters (the protobuf filter re-reads its .proto files).

use std::time::Duration;

use eventstash_plugin_api::CancellationToken;
use futures::future::join_all;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::PipelineConfig;
use crate::pipeline::{RunningPipeline, start};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Shut down on request and every queue drained: exit 0.
    Drained,
    /// An input failed (for example its port was taken): exit 1.
    InputFailed,
    /// The drain did not finish in time; events were lost: exit 1.
    Unfinished,
}

/// Runs the pipelines until a signal or an input failure, then drains.
pub async fn run(pipelines: Vec<PipelineConfig>) -> std::io::Result<RunOutcome> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let shutdown_timeout = pipelines
        .iter()
        .map(|p| p.shutdown_timeout)
        .max()
        .unwrap_or(Duration::from_secs(15));

    let shutdown = CancellationToken::new();
    let (failures, mut failed) = mpsc::unbounded_channel();
    let running: Vec<RunningPipeline> = pipelines
        .into_iter()
        .map(|pipeline| start(pipeline, shutdown.clone(), failures.clone()))
        .collect();
    drop(failures);

    let mut outcome = RunOutcome::Drained;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                info!(signal = "SIGHUP", "reloading filters");
                running.iter().for_each(RunningPipeline::reload_filters);
                continue;
            }
            _ = terminate.recv() => info!(signal = "SIGTERM", timeout = ?shutdown_timeout, "shutting down: draining"),
            _ = interrupt.recv() => info!(signal = "SIGINT", timeout = ?shutdown_timeout, "shutting down: draining"),
            Some(failure) = failed.recv() => {
                error!(input = %failure.input, error = %failure.error, "shutting down after an input failure");
                outcome = RunOutcome::InputFailed;
            }
            () = wait_all(&running) => info!("every input has finished; draining"),
        }
        break;
    }
    shutdown.cancel();

    let deadline = tokio::time::sleep(shutdown_timeout);
    tokio::select! {
        () = wait_all(&running) => {
            info!("drained: every accepted event was written by every output");
            Ok(outcome)
        }
        () = deadline => {
            report_leftovers(&running, &format!("shutdown timeout of {shutdown_timeout:?} passed"));
            Ok(RunOutcome::Unfinished)
        }
        _ = terminate.recv() => {
            report_leftovers(&running, "second signal");
            Ok(RunOutcome::Unfinished)
        }
        _ = interrupt.recv() => {
            report_leftovers(&running, "second signal");
            Ok(RunOutcome::Unfinished)
        }
    }
}

async fn wait_all(running: &[RunningPipeline]) {
    join_all(running.iter().map(RunningPipeline::wait)).await;
}

/// Logs, per queue, the events that will be lost by exiting now.
fn report_leftovers(running: &[RunningPipeline], reason: &str) {
    let mut total = 0;
    for pipeline in running {
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
