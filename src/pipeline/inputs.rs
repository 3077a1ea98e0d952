//! Starting the inputs, after replaying what the persisted queue left.
//!
//! [`InputStarter`] runs as one task of the pipeline. It holds the pipeline
//! queue's sender: it first queues the replayed records (so they go before
//! anything new), then hands each input a sink with its own clone of the
//! sender, and drops its own when it returns. From then on the inputs hold
//! the only senders, so the pipeline queue closes exactly when the last
//! input returns — on the shutdown token, or by failing.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use eventstash_plugin_api::{CancellationToken, Event, InputContext, ack_group};
use metrics::counter;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use super::InputFailure;
use crate::config::InputPlugin;
use crate::metrics::EVENTS_IN;
use crate::queue::QueueSender;
use crate::queue_log::StoredBatch;
use crate::replay_guard::{self, ReplayGuard, SETTLE_LIMIT};
use crate::sink::{Persistence, PipelineItem, PipelineSink};

/// What starting the inputs needs, moved into the task that first replays.
pub(super) struct InputStarter {
    /// `[pipeline] id`, for logs and metric labels.
    pub(super) pipeline: String,
    /// The pipeline's tasks: each input runs as one of them.
    pub(super) tasks: TaskTracker,
    /// Sender of the pipeline queue; the filter stage receives. Cloned into
    /// each input's sink and dropped when the starter returns, so the queue
    /// closes when the last input returns.
    pub(super) queue: QueueSender<PipelineItem>,
    /// Largest batch a sink queues at once; larger ones are split.
    pub(super) max_batch_events: usize,
    /// ... and in bytes: the pipeline queue's `max_bytes`.
    pub(super) max_batch_bytes: usize,
    /// The persisted queue, if any: sinks write to it before queueing.
    pub(super) persistence: Option<Arc<Persistence>>,
    /// The crash-loop guard of the persisted queue's replay.
    pub(super) replay_guard: Option<Arc<ReplayGuard>>,
    /// Events received by every input together, for the drain report.
    pub(super) events_in: Arc<AtomicU64>,
    /// Cancelled on SIGTERM/SIGINT: inputs stop accepting and return.
    pub(super) shutdown: CancellationToken,
    /// Sender of input failures; one clone per input task. The receiver is
    /// `app::run`, which starts the drain on the first.
    pub(super) failures: mpsc::UnboundedSender<InputFailure>,
    /// Whether the agent is serving (health); the inputs mirror it in their
    /// health protocols. The sender is `AgentHealth`.
    pub(super) serving: watch::Receiver<bool>,
    /// Set once the replay is queued and every input is started; the
    /// receiver is `app::run`, which marks the agent running then.
    pub(super) started: watch::Sender<bool>,
}

impl InputStarter {
    /// Queues the replayed records (in order, before anything new), then
    /// starts the inputs. The inputs hold the only queue senders after
    /// this, so the queue closes when they return.
    pub(super) async fn start_after_replay(self, inputs: Vec<InputPlugin>, replay: Vec<StoredBatch>) {
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
                    max_batch_bytes: self.max_batch_bytes,
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
                    let _ = failures.send(InputFailure { input: name, error });
                }
            });
        }
        self.started.send_replace(true);
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
            if guard.set_aside(&self.pipeline, batch).await {
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
