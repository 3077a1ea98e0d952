//! The agent's health: one truth for `grpc.health.v1`, `/health` and
//! `eventstash healthcheck`.
//!
//! The agent is serving only while it runs normally: not while starting,
//! not while draining, and not while any output has been failing for longer
//! than `unhealthy_after_ms`. A task re-evaluates this a few times a second
//! and publishes it on a watch channel that inputs mirror.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use eventstash_plugin_api::{CancellationToken, ComponentHealth};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::{QUEUE_BYTES, QUEUE_EVENTS};
use crate::queue::QueueGauge;

/// How often the health is re-evaluated.
const EVALUATE_EVERY: Duration = Duration::from_millis(200);

/// Where the agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Plugins are starting.
    Starting = 0,
    /// Running.
    Running = 1,
    /// Shutting down.
    Draining = 2,
}

/// One output's health, as registered by its pipeline.
pub(crate) struct OutputHealth {
    /// `[pipeline] id`.
    pub(crate) pipeline: String,
    /// The output's id.
    pub(crate) output: String,
    /// Shared cell: written by the output plugin and its driver (through
    /// their `OutageReport`s), read here.
    pub(crate) health: ComponentHealth,
}

/// One queue's gauge, as registered by its pipeline.
pub(crate) struct QueueReading {
    /// `[pipeline] id`.
    pub(crate) pipeline: String,
    /// `pipeline`, `output <id>` or `persisted`.
    pub(crate) queue: String,
    /// Shared with the queue: moved by its senders and receiver, read here.
    pub(crate) gauge: QueueGauge,
}

/// Everything the agent's health is made of.
pub struct AgentHealth {
    /// A [`Lifecycle`], set by `app::run` as the agent starts and drains.
    lifecycle: AtomicU8,
    /// How long an output may fail before the agent stops serving.
    unhealthy_after: Duration,
    /// Every output's health cell, registered before the pipelines start.
    outputs: Vec<OutputHealth>,
    /// Every queue's gauge, added once its pipeline started.
    queues: Vec<QueueReading>,
    /// Whether the agent serves. Sent only here ([`evaluate`](Self::evaluate),
    /// on a change); received by every input (a clone each, through its
    /// `InputContext`), which mirrors it in its health protocol. It closes
    /// when the agent's health is dropped, after the drain: inputs have
    /// returned by then.
    serving: watch::Sender<bool>,
}

/// The `/health` document.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// `ok`; `degraded` from an output's first failed write, while the agent
    /// still serves (producers are answered, with errors for what that
    /// output could not store); `unhealthy` when not serving.
    pub status: &'static str,
    /// What `grpc.health.v1` says too.
    pub serving: bool,
    /// Starting, running or draining.
    pub state: Lifecycle,
    /// Each output's state.
    pub outputs: Vec<OutputReport>,
    /// Each queue's depth.
    pub queues: Vec<QueueReport>,
}

/// One output in the `/health` document.
#[derive(Debug, Serialize)]
pub struct OutputReport {
    pipeline: String,
    output: String,
    /// `ok` or `failing`.
    state: &'static str,
    /// Seconds since the current failures began.
    failing_for_seconds: Option<f64>,
    /// The last error reported, kept after recovery.
    last_error: Option<String>,
}

/// One queue in the `/health` document.
#[derive(Debug, Serialize)]
pub struct QueueReport {
    pipeline: String,
    queue: String,
    events: usize,
    bytes: usize,
}

impl AgentHealth {
    /// The health of these outputs; queues are added once the pipelines
    /// that own them have started.
    pub(crate) fn new(
        unhealthy_after: Duration,
        outputs: Vec<OutputHealth>,
        queues: Vec<QueueReading>,
    ) -> (AgentHealth, watch::Receiver<bool>) {
        let (serving, watcher) = watch::channel(false);
        let health = AgentHealth {
            lifecycle: AtomicU8::new(Lifecycle::Starting as u8),
            unhealthy_after,
            outputs,
            queues,
            serving,
        };
        (health, watcher)
    }

    /// Adds the queues to report.
    pub(crate) fn with_queues(mut self, queues: Vec<QueueReading>) -> AgentHealth {
        self.queues.extend(queues);
        self
    }

    /// Moves to a new stage of life and re-evaluates at once.
    pub fn set_lifecycle(&self, lifecycle: Lifecycle) {
        self.lifecycle.store(lifecycle as u8, Ordering::Relaxed);
        self.evaluate();
    }

    /// Moves from starting to running, once every pipeline's inputs
    /// serve; false (and nothing changes) if the agent is already draining.
    pub(crate) fn start_serving(&self) -> bool {
        let started = self
            .lifecycle
            .compare_exchange(
                Lifecycle::Starting as u8,
                Lifecycle::Running as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
        self.evaluate();
        started
    }

    fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::Relaxed) {
            0 => Lifecycle::Starting,
            1 => Lifecycle::Running,
            _ => Lifecycle::Draining,
        }
    }

    fn unhealthy_outputs(&self) -> impl Iterator<Item = &OutputHealth> + '_ {
        self.outputs.iter().filter(|o| {
            o.health
                .snapshot()
                .failing_for()
                .is_some_and(|d| d >= self.unhealthy_after)
        })
    }

    /// Recomputes whether the agent is serving and publishes a change.
    pub fn evaluate(&self) {
        let serving = self.lifecycle() == Lifecycle::Running && self.unhealthy_outputs().next().is_none();
        let changed = self.serving.send_if_modified(|current| {
            let changed = *current != serving;
            *current = serving;
            changed
        });
        if changed && self.lifecycle() == Lifecycle::Running {
            if serving {
                info!("all outputs healthy again: SERVING");
            } else {
                for o in self.unhealthy_outputs() {
                    let last_error = o.health.snapshot().last_error.unwrap_or_default();
                    warn!(pipeline = %o.pipeline, output = %o.output, %last_error,
                        "output failing for longer than unhealthy_after_ms: NOT_SERVING");
                }
            }
        }
    }

    /// Re-evaluates until `stop`, so time alone can turn a failing output
    /// into an unhealthy agent.
    pub async fn watch(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EVALUATE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => self.evaluate(),
                () = stop.cancelled() => return,
            }
        }
    }

    /// Copies the queues' depth into their gauges (called on scrape).
    pub(crate) fn record_queue_gauges(&self) {
        for q in &self.queues {
            let labels = [("pipeline", q.pipeline.clone()), ("queue", q.queue.clone())];
            metrics::gauge!(QUEUE_EVENTS, &labels).set(q.gauge.events() as f64);
            metrics::gauge!(QUEUE_BYTES, &labels).set(q.gauge.bytes() as f64);
        }
    }

    /// The `/health` document.
    pub fn report(&self) -> HealthReport {
        let outputs: Vec<OutputReport> = self
            .outputs
            .iter()
            .map(|o| {
                let snapshot = o.health.snapshot();
                OutputReport {
                    pipeline: o.pipeline.clone(),
                    output: o.output.clone(),
                    state: if snapshot.failing_since.is_some() {
                        "failing"
                    } else {
                        "ok"
                    },
                    failing_for_seconds: snapshot.failing_for().map(|d| d.as_secs_f64()),
                    last_error: snapshot.last_error,
                }
            })
            .collect();
        let queues = self
            .queues
            .iter()
            .map(|q| QueueReport {
                pipeline: q.pipeline.clone(),
                queue: q.queue.clone(),
                events: q.gauge.events(),
                bytes: q.gauge.bytes(),
            })
            .collect();
        let serving = *self.serving.borrow();
        let failing = outputs.iter().any(|o| o.failing_for_seconds.is_some());
        HealthReport {
            status: match (serving, failing) {
                (false, _) => "unhealthy",
                (true, true) => "degraded",
                (true, false) => "ok",
            },
            serving,
            state: self.lifecycle(),
            outputs,
            queues,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(unhealthy_after: Duration) -> (AgentHealth, ComponentHealth) {
        let output = ComponentHealth::default();
        let outputs = vec![OutputHealth {
            pipeline: "main".into(),
            output: "file#0".into(),
            health: output.clone(),
        }];
        let (health, _serving) = AgentHealth::new(unhealthy_after, outputs, Vec::new());
        health.set_lifecycle(Lifecycle::Running);
        (health, output)
    }

    #[test]
    fn a_failing_output_degrades_at_once_and_fails_the_agent_only_after_the_grace_period() {
        let (health, output) = agent(Duration::from_secs(3600));
        assert_eq!(health.report().status, "ok");
        output.failing("disk full");
        health.evaluate();
        let report = health.report();
        assert_eq!((report.status, report.serving), ("degraded", true));

        let (health, output) = agent(Duration::ZERO);
        output.failing("disk full");
        health.evaluate();
        let report = health.report();
        assert_eq!((report.status, report.serving), ("unhealthy", false));
        output.recovered();
        health.evaluate();
        assert_eq!(health.report().status, "ok");
    }

    #[test]
    fn inputs_see_serving_only_while_running_and_every_output_is_healthy() {
        let output = ComponentHealth::default();
        let outputs = vec![OutputHealth {
            pipeline: "main".into(),
            output: "file#0".into(),
            health: output.clone(),
        }];
        let (health, serving) = AgentHealth::new(Duration::ZERO, outputs, Vec::new());
        assert!(!*serving.borrow(), "starting");
        health.set_lifecycle(Lifecycle::Running);
        assert!(*serving.borrow());
        output.failing("disk full");
        health.evaluate();
        assert!(!*serving.borrow(), "an output failing past the grace period");
        output.recovered();
        health.evaluate();
        assert!(*serving.borrow());
        health.set_lifecycle(Lifecycle::Draining);
        assert!(!*serving.borrow(), "draining");
    }

    #[test]
    fn queues_report_their_depth() {
        let gauge = QueueGauge::new(crate::queue::QueueLimits {
            max_events: 10,
            max_bytes: 1 << 20,
        });
        let queues = vec![QueueReading {
            pipeline: "main".into(),
            queue: "pipeline".into(),
            gauge: gauge.clone(),
        }];
        let (health, _serving) = AgentHealth::new(Duration::ZERO, Vec::new(), Vec::new());
        let health = health.with_queues(queues);
        let report = health.report();
        assert_eq!(report.queues.len(), 1);
        assert_eq!((report.queues[0].events, report.queues[0].bytes), (0, 0));
    }

    #[test]
    fn an_agent_that_is_not_running_is_unhealthy() {
        let (health, _) = agent(Duration::from_secs(3600));
        health.set_lifecycle(Lifecycle::Draining);
        assert_eq!(health.report().status, "unhealthy");
    }
}
