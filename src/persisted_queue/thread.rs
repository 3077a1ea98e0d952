//! The log thread: the one owner of a pipeline's [`QueueLog`]. It serves
//! [`Request`]s in rounds: every append of a round is written, then synced
//! once (group commit) before any of its producers is answered; completions
//! are applied as they come; a checkpoint is taken every
//! [`CHECKPOINT_EVERY`] when something finished, when asked, and when the
//! thread ends — which is when the last [`LogHandle`](super::LogHandle)
//! (sinks, claims, the queue itself) is dropped and the request channel
//! disconnects.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::error;

use super::{PersistError, Request};
use crate::queue_log::QueueLog;

/// How often finished records are checkpointed (and segments deleted).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Most requests served between two syncs, so a sync is never put off long.
const REQUESTS_PER_ROUND: usize = 4096;

/// The log thread: group commit of appends, completions, checkpoints.
/// With `sync_every` (`sync = "interval"`), appends wait for the next
/// periodic sync instead of syncing each round: fewer fsyncs, slower acks.
pub(super) fn serve(log: QueueLog, requests: Receiver<Request>, sync_every: Option<Duration>) {
    let mut thread = LogThread {
        log,
        sync_every,
        waiting: Vec::new(),
        finished_since_checkpoint: false,
        last_checkpoint: Instant::now(),
        last_sync: Instant::now(),
    };
    let wake_every = sync_every.map_or(CHECKPOINT_EVERY, |every| every.min(CHECKPOINT_EVERY));
    loop {
        let first = match requests.recv_timeout(wake_every) {
            Ok(request) => Some(request),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let round = first.into_iter().chain(requests.try_iter().take(REQUESTS_PER_ROUND));
        let checkpoints = thread.apply(round);
        thread.sync_if_due();
        thread.checkpoint_if_due(checkpoints);
    }
    sync_and_reply(&mut thread.log, &mut thread.waiting);
    if let Err(error) = thread.log.checkpoint() {
        error!(%error, "final persisted queue checkpoint failed; finished records may be replayed after a restart");
    }
}

/// The log and what the thread remembers between rounds.
struct LogThread {
    log: QueueLog,
    /// `sync = "interval"`: how often appends are synced.
    sync_every: Option<Duration>,
    /// Appends of this round (or, with `sync_every`, since the last sync)
    /// waiting for the sync before they are answered.
    waiting: Vec<AppendReply>,
    /// A record was finished since the last checkpoint.
    finished_since_checkpoint: bool,
    last_checkpoint: Instant,
    last_sync: Instant,
}

impl LogThread {
    /// Writes the round's appends and applies its completions; returns the
    /// checkpoint requests, answered after the round's checkpoint.
    fn apply(&mut self, round: impl Iterator<Item = Request>) -> Vec<oneshot::Sender<()>> {
        let mut checkpoints = Vec::new();
        for request in round {
            match request {
                Request::Append { events, reply } => {
                    let written = self.log.append(&events).map_err(|e| PersistError::Append(Arc::new(e)));
                    drop(events);
                    self.waiting.push((reply, written));
                }
                Request::Finish { output, seq } => {
                    self.log.finish(output, seq);
                    self.finished_since_checkpoint = true;
                }
                Request::Checkpoint { reply } => checkpoints.push(reply),
            }
        }
        checkpoints
    }

    /// Syncs the waiting appends (every round, or every `sync_every`) and
    /// answers their producers.
    fn sync_if_due(&mut self) {
        let sync_due = self.sync_every.is_none_or(|every| self.last_sync.elapsed() >= every);
        if !self.waiting.is_empty() && sync_due {
            sync_and_reply(&mut self.log, &mut self.waiting);
            self.last_sync = Instant::now();
        }
    }

    /// Checkpoints when asked, or every [`CHECKPOINT_EVERY`] while records
    /// finish.
    fn checkpoint_if_due(&mut self, requests: Vec<oneshot::Sender<()>>) {
        let due = self.finished_since_checkpoint && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
        if !due && requests.is_empty() {
            return;
        }
        if let Err(error) = self.log.checkpoint() {
            error!(%error, "persisted queue checkpoint failed; finished records may be replayed after a restart");
        }
        self.finished_since_checkpoint = false;
        self.last_checkpoint = Instant::now();
        for reply in requests {
            let _ = reply.send(());
        }
    }
}

/// A producer waiting for the sync, and where its append stands.
type AppendReply = (oneshot::Sender<Result<u64, PersistError>>, Result<u64, PersistError>);

/// Syncs what was appended and answers the producers waiting for it.
fn sync_and_reply(log: &mut QueueLog, waiting: &mut Vec<AppendReply>) {
    if waiting.is_empty() {
        return;
    }
    let synced = log.sync().map_err(|e| PersistError::Sync(Arc::new(e)));
    if let Err(error) = &synced {
        error!(%error, "persisted queue cannot sync; producers get UNAVAILABLE");
    }
    for (reply, written) in waiting.drain(..) {
        let outcome = written.and_then(|seq| synced.clone().map(|()| seq));
        let _ = reply.send(outcome);
    }
}
