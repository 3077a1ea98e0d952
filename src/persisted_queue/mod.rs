//! The persisted pipeline queue: the engine side of `queue_log`.
//!
//! One thread owns the pipeline's [`QueueLog`] and serves requests from the
//! async world: appends (several streams' batches are written together and
//! synced once — group commit — before any of them is acknowledged),
//! completions (an output finished a record), and checkpoints (every 200 ms
//! when something finished, and at the end). A record takes room in a disk
//! bound (`max_events`, `max_bytes`) until every output has finished it, so
//! a slow output eventually holds the producers back instead of filling the
//! disk.
//!
//! Each output's progress is its own ack group per record, whose callback
//! reports the completion: a restart replays a record only to the outputs
//! that had not finished it. An output's permanent failure leaves the record
//! unfinished for that output; it stays on disk and is replayed at the next
//! start.

mod inspect;
mod thread;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use eventstash_plugin_api::{AckHandle, Event};
use tokio::sync::oneshot;
use tracing::{info, warn};

pub use inspect::{InspectError, inspect_queue};

use crate::queue::{QueueGauge, QueueLimits};
use crate::queue_log::{LogOptions, QueueLog, QueueLogError, Recovery, StoredBatch};

/// Why a persisted queue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The queue directory cannot be used (see the log error for which file
    /// and why), or another agent holds it.
    #[error("cannot open the persisted queue: {0}")]
    Log(#[from] QueueLogError),
    /// The queue's thread could not be started.
    #[error("cannot start the persisted queue's thread: {0}")]
    Thread(std::io::Error),
}

impl OpenError {
    /// Whether another agent holds the directory: a configuration mistake
    /// (two agents given one `[queue] path`), not a failure of this run.
    pub fn is_in_use(&self) -> bool {
        matches!(self, OpenError::Log(QueueLogError::InUse { .. }))
    }
}

/// Why a batch could not be made safe on disk. Its producer gets
/// UNAVAILABLE; the log line says which file and why.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum PersistError {
    /// The log thread is gone: the pipeline is shutting down.
    #[error("the persisted queue is closed")]
    Closed,
    /// The log thread ended without answering.
    #[error("the persisted queue stopped")]
    Stopped,
    /// The record could not be written (a full disk).
    #[error("{0}")]
    Append(Arc<QueueLogError>),
    /// The record was written but the sync failed: not durable. Shared by
    /// every append of the round, hence the `Arc`.
    #[error("{0}")]
    Sync(Arc<QueueLogError>),
}

/// What the async world asks of the log thread, over one `std::sync::mpsc`
/// channel. Senders: every [`LogHandle`] (the sinks' appends, the claims'
/// completions, the queue's checkpoints). Receiver: the log thread alone.
/// The channel closes when the last handle is dropped — the inputs, the
/// output claims and the [`PersistedQueue`] all gone — and the thread then
/// syncs, checkpoints and ends.
enum Request {
    /// Write `events` as one record; the reply comes after the sync.
    Append {
        events: Arc<Vec<Event>>,
        /// Answered once, by the thread, with the record's seq.
        reply: oneshot::Sender<Result<u64, PersistError>>,
    },
    /// Output `output` finished record `seq` (sent by its claim).
    Finish { output: usize, seq: u64 },
    /// Save progress now; the reply says it is done.
    Checkpoint { reply: oneshot::Sender<()> },
}

/// A pipeline's persisted queue: its log thread and its disk bound.
pub(crate) struct PersistedQueue {
    /// The queue directory.
    pub(crate) path: PathBuf,
    /// Kept for the checkpoints at the end of a run, and cloned for sinks.
    handle: LogHandle,
    /// The log thread; detached on drop (see `Drop`).
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Cheap handle to the log thread, held by the sinks and the claims.
#[derive(Clone)]
pub(crate) struct LogHandle {
    /// Sending side of the log thread's requests (see [`Request`]).
    requests: Sender<Request>,
    /// Records on disk not yet finished by every output: acquired before an
    /// append (so a full queue holds the producer back), released when every
    /// claim of the record is settled.
    disk: QueueGauge,
    /// How many outputs the pipeline has: one claim each per record.
    outputs: usize,
}

/// One record's claims, one per output (`None` where that output already
/// has the record, on replay).
pub(crate) struct RecordClaims {
    pub(crate) per_output: Vec<Option<AckHandle>>,
}

impl PersistedQueue {
    /// Opens the queue directory, starts the log thread, and returns what a
    /// restart must replay.
    pub(crate) fn open(
        path: PathBuf,
        outputs: &[String],
        limits: QueueLimits,
        sync_every: Option<Duration>,
    ) -> Result<(PersistedQueue, Vec<StoredBatch>), OpenError> {
        let (log, recovery) = QueueLog::open(&path, outputs, LogOptions::default())?;
        report_recovery(&path, &recovery);
        let (requests, receiver) = channel();
        let thread = std::thread::Builder::new()
            .name("eventstash-queue".to_owned())
            .spawn(move || thread::serve(log, receiver, sync_every))
            .map_err(OpenError::Thread)?;
        let handle = LogHandle {
            requests,
            disk: QueueGauge::new(limits),
            outputs: outputs.len(),
        };
        let queue = PersistedQueue {
            path,
            handle,
            thread: Some(thread),
        };
        Ok((queue, recovery.replay))
    }

    pub(crate) fn handle(&self) -> LogHandle {
        self.handle.clone()
    }

    /// Records not yet finished by every output, as counted by the disk bound.
    pub(crate) fn gauge(&self) -> QueueGauge {
        self.handle.disk.clone()
    }

    /// Checkpoints, waiting at most `limit`.
    pub(crate) async fn checkpoint(&self, limit: Duration) {
        let (reply, done) = oneshot::channel();
        if self.handle.requests.send(Request::Checkpoint { reply }).is_ok() {
            let _ = tokio::time::timeout(limit, done).await;
        }
    }
}

impl PersistedQueue {
    /// Waits for the log thread to end, for tests that reopen the
    /// directory: every handle and claim must be gone already.
    #[cfg(test)]
    fn close(mut self) {
        let thread = self.thread.take();
        drop(self);
        if let Some(thread) = thread {
            thread.join().unwrap();
        }
    }
}

impl Drop for PersistedQueue {
    fn drop(&mut self) {
        // The thread ends once every handle is gone; waiting here would
        // block on claims that are still alive, so it is only detached.
        drop(self.thread.take());
    }
}

impl LogHandle {
    /// Writes `events` as one record and syncs it; returns the events and
    /// the record's claims for every output.
    pub(crate) async fn persist(
        &self,
        events: Vec<Event>,
        bytes: usize,
    ) -> Result<(Vec<Event>, RecordClaims), PersistError> {
        let permits = Arc::new(self.disk.acquire(events.len(), bytes).await);
        let events = Arc::new(events);
        let (reply, written) = oneshot::channel();
        let request = Request::Append {
            events: events.clone(),
            reply,
        };
        self.requests.send(request).map_err(|_| PersistError::Closed)?;
        let seq = written.await.map_err(|_| PersistError::Stopped)??;
        // The log thread dropped its reference before replying.
        let events = Arc::try_unwrap(events).unwrap_or_else(|shared| (*shared).clone());
        let claims = self.claims(seq, 0..self.outputs, permits);
        Ok((events, claims))
    }

    /// Claims for a replayed record, only for the outputs still missing it.
    pub(crate) async fn replay_claims(&self, batch: &StoredBatch, bytes: usize) -> RecordClaims {
        let permits = Arc::new(self.disk.acquire(batch.events.len(), bytes).await);
        self.claims(batch.seq, batch.pending.iter().copied(), permits)
    }

    /// Marks a record finished for every output still missing it, without
    /// delivering it (it was set aside).
    pub(crate) fn finish_everywhere(&self, batch: &StoredBatch) {
        for &output in &batch.pending {
            let _ = self.requests.send(Request::Finish { output, seq: batch.seq });
        }
    }

    fn claims(
        &self,
        seq: u64,
        outputs: impl Iterator<Item = usize>,
        permits: Arc<crate::queue::Permits>,
    ) -> RecordClaims {
        let mut per_output: Vec<Option<AckHandle>> = (0..self.outputs).map(|_| None).collect();
        for output in outputs {
            let requests = self.requests.clone();
            let permits = permits.clone();
            per_output[output] = Some(AckHandle::with_callback(move |outcome| {
                match outcome {
                    Ok(()) => drop(requests.send(Request::Finish { output, seq })),
                    // Left unfinished: still on disk, replayed at the next start.
                    Err(error) => warn!(seq, output, %error, "record not stored by an output; kept for the next start"),
                }
                drop(permits);
            }));
        }
        RecordClaims { per_output }
    }
}

fn report_recovery(path: &std::path::Path, recovery: &Recovery) {
    let events: usize = recovery.replay.iter().map(|b| b.events.len()).sum();
    info!(queue = %path.display(), records = recovery.replay.len(), events, "persisted queue opened; replaying what outputs had not finished");
    for skipped in &recovery.skipped {
        warn!(queue = %path.display(), skipped = %skipped, "persisted queue: skipped a damaged part; the good records before it are kept");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::json_events as events;

    const LIMITS: QueueLimits = QueueLimits {
        max_events: 100,
        max_bytes: 1 << 20,
    };

    fn outputs() -> Vec<String> {
        vec!["a".to_owned(), "b".to_owned()]
    }

    #[tokio::test]
    async fn a_record_is_replayed_only_to_the_outputs_that_had_not_finished_it() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, replay) = PersistedQueue::open(dir.path().to_owned(), &outputs(), LIMITS, None).unwrap();
        assert!(replay.is_empty());
        let (stored, claims) = queue.handle().persist(events(2), 100).await.unwrap();
        assert_eq!(stored.len(), 2, "the events come back for the pipeline queue");
        assert_eq!(queue.gauge().events(), 2, "held on disk until every output finishes");
        let mut per_output = claims.per_output;
        per_output[0].take().unwrap().delivered();
        per_output[1].take().unwrap().failed("output b is down");
        assert_eq!(queue.gauge().events(), 0, "settled either way: the room is given back");
        queue.checkpoint(Duration::from_secs(10)).await;
        queue.close();

        let (queue, replay) = PersistedQueue::open(dir.path().to_owned(), &outputs(), LIMITS, None).unwrap();
        assert_eq!(replay.len(), 1);
        assert_eq!(replay[0].pending, [1], "only output b still needs it");
        assert_eq!(replay[0].events.len(), 2);
        let claims = queue.handle().replay_claims(&replay[0], 100).await;
        assert!(claims.per_output[0].is_none() && claims.per_output[1].is_some());
    }

    #[tokio::test]
    async fn a_record_set_aside_is_not_replayed_again() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, _) = PersistedQueue::open(dir.path().to_owned(), &outputs(), LIMITS, None).unwrap();
        let (_, claims) = queue.handle().persist(events(1), 10).await.unwrap();
        drop(claims);
        queue.checkpoint(Duration::from_secs(10)).await;
        queue.close();
        let (queue, replay) = PersistedQueue::open(dir.path().to_owned(), &outputs(), LIMITS, None).unwrap();
        assert_eq!(replay.len(), 1, "claims dropped unsettled leave the record");
        queue.handle().finish_everywhere(&replay[0]);
        queue.checkpoint(Duration::from_secs(10)).await;
        queue.close();
        let (_, replay) = PersistedQueue::open(dir.path().to_owned(), &outputs(), LIMITS, None).unwrap();
        assert!(replay.is_empty());
    }

    #[test]
    fn a_directory_another_queue_holds_is_refused_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (_queue, _) = PersistedQueue::open(dir.path().to_owned(), &outputs(), LIMITS, None).unwrap();
        let Err(error) = PersistedQueue::open(dir.path().to_owned(), &outputs(), LIMITS, None) else {
            panic!("a second queue opened the same directory");
        };
        assert!(error.is_in_use(), "{error}");
    }
}
