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
pub(super) fn serve(mut log: QueueLog, requests: Receiver<Request>, sync_every: Option<Duration>) {
    let mut finished_since_checkpoint = false;
    let mut last_checkpoint = Instant::now();
    let mut last_sync = Instant::now();
    let mut waiting = Vec::new();
    let wake_every = sync_every.map_or(CHECKPOINT_EVERY, |every| every.min(CHECKPOINT_EVERY));
    loop {
        let first = match requests.recv_timeout(wake_every) {
            Ok(request) => Some(request),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut checkpoints = Vec::new();
        for request in first.into_iter().chain(requests.try_iter().take(REQUESTS_PER_ROUND)) {
            match request {
                Request::Append { events, reply } => {
                    let written = log.append(&events).map_err(|e| PersistError::Append(Arc::new(e)));
                    drop(events);
                    waiting.push((reply, written));
                }
                Request::Finish { output, seq } => {
                    log.finish(output, seq);
                    finished_since_checkpoint = true;
                }
                Request::Checkpoint { reply } => checkpoints.push(reply),
            }
        }
        let sync_due = sync_every.is_none_or(|every| last_sync.elapsed() >= every);
        if !waiting.is_empty() && sync_due {
            sync_and_reply(&mut log, &mut waiting);
            last_sync = Instant::now();
        }
        let due = finished_since_checkpoint && last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
        if due || !checkpoints.is_empty() {
            if let Err(error) = log.checkpoint() {
                error!(%error, "persisted queue checkpoint failed; finished records may be replayed after a restart");
            }
            finished_since_checkpoint = false;
            last_checkpoint = Instant::now();
            for reply in checkpoints {
                let _ = reply.send(());
            }
        }
    }
    sync_and_reply(&mut log, &mut waiting);
    if let Err(error) = log.checkpoint() {
        error!(%error, "final persisted queue checkpoint failed; finished records may be replayed after a restart");
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
