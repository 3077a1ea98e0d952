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

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use eventstash_plugin_api::{AckHandle, Event};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::queue::{QueueGauge, QueueLimits};
use crate::queue_log::{LogOptions, QueueLog, QueueLogError, Recovery, StoredBatch};

/// How often finished records are checkpointed (and segments deleted).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Most requests served between two syncs, so a sync is never put off long.
const REQUESTS_PER_ROUND: usize = 4096;

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

enum Request {
    Append {
        events: Arc<Vec<Event>>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Finish {
        output: usize,
        seq: u64,
    },
    Checkpoint {
        reply: oneshot::Sender<()>,
    },
}

/// A pipeline's persisted queue: its log thread and its disk bound.
pub(crate) struct PersistedQueue {
    /// The queue directory.
    pub(crate) path: PathBuf,
    handle: LogHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Cheap handle to the log thread, held by the sinks and the claims.
#[derive(Clone)]
pub(crate) struct LogHandle {
    requests: Sender<Request>,
    disk: QueueGauge,
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
            .spawn(move || serve(log, receiver, sync_every))
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
    pub(crate) async fn persist(&self, events: Vec<Event>, bytes: usize) -> Result<(Vec<Event>, RecordClaims), String> {
        let permits = Arc::new(self.disk.acquire(events.len(), bytes).await);
        let events = Arc::new(events);
        let (reply, written) = oneshot::channel();
        let request = Request::Append {
            events: events.clone(),
            reply,
        };
        self.requests
            .send(request)
            .map_err(|_| "the persisted queue is closed".to_owned())?;
        let seq = written.await.map_err(|_| "the persisted queue stopped".to_owned())??;
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

/// The log thread: group commit of appends, completions, checkpoints.
/// With `sync_every` (`sync = "interval"`), appends wait for the next
/// periodic sync instead of syncing each round: fewer fsyncs, slower acks.
fn serve(mut log: QueueLog, requests: Receiver<Request>, sync_every: Option<Duration>) {
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
                    let written = log.append(&events).map_err(|e| e.to_string());
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

/// `eventstash queue inspect`: the depth and per-output positions of a
/// pipeline's persisted queue, read without changing anything. `None` for a
/// pipeline with the memory queue.
pub fn inspect_queue(config: &crate::config::PipelineConfig) -> Result<Option<String>, String> {
    use std::fmt::Write as _;
    let Some(settings) = &config.persisted else {
        return Ok(None);
    };
    let outputs: Vec<String> = config.outputs.iter().map(|o| o.id.clone()).collect();
    let inspection = QueueLog::inspect(&settings.path, &outputs)
        .map_err(|e| format!("cannot inspect {}: {e}", settings.path.display()))?;
    let stats = &inspection.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline {:?}: queue {}\n  unfinished: {} events in {} records, {} bytes\n  on disk: {} segment(s), {} bytes; next seq {}",
        config.id,
        settings.path.display(),
        stats.unfinished.events,
        stats.unfinished.records,
        stats.unfinished.bytes,
        stats.segments,
        stats.disk_bytes,
        stats.next_seq
    );
    for output in &stats.outputs {
        let _ = writeln!(
            out,
            "  output {}: finished up to seq {}, pending {} events in {} records",
            output.id, output.watermark, output.pending.events, output.pending.records
        );
    }
    for skipped in &inspection.skipped {
        let _ = writeln!(out, "  damaged: {skipped}");
    }
    if let Some(reset) = &inspection.progress_reset {
        let _ = writeln!(out, "  progress file unusable, everything would be replayed: {reset:?}");
    }
    Ok(Some(out))
}

type AppendReply = (oneshot::Sender<Result<u64, String>>, Result<u64, String>);

/// Syncs what was appended and answers the producers waiting for it.
fn sync_and_reply(log: &mut QueueLog, waiting: &mut Vec<AppendReply>) {
    if waiting.is_empty() {
        return;
    }
    let synced = log.sync().map_err(|e| e.to_string());
    if let Err(error) = &synced {
        error!(%error, "persisted queue cannot sync; producers get UNAVAILABLE");
    }
    for (reply, written) in waiting.drain(..) {
        let outcome = written.and_then(|seq| synced.clone().map(|()| seq));
        let _ = reply.send(outcome);
    }
}
