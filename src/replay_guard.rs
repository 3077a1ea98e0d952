//! The guard against a crash loop over one persisted record.
//!
//! A record that kills the process while it is processed (a stack overflow
//! or an abort, which no `catch_unwind` stops) is still on disk at the next
//! start, is replayed, and kills the process again — forever, and every
//! producer is locked out. So each start notes in `<queue>/replay-attempts`
//! which record it is working on, and the next start reads the note:
//!
//! - The note names a record that is still unfinished: the last run died
//!   before getting past it. This start replays *carefully*: one record at
//!   a time, noting each before processing it, waiting until the outputs
//!   settle it (or [`SETTLE_LIMIT`] passes) before taking the next. A crash
//!   now names its record exactly.
//! - A record noted [`MAX_ATTEMPTS`] times in a row is set aside: its events
//!   go to `<queue>/dead-letters.jsonl` with the reason, it is marked
//!   finished for every output, logged at ERROR and counted
//!   (`eventstash_poison_records_total`), and the queue moves on.
//!
//! The note is a small text file written without `fsync`: it guards against
//! the process dying, and the page cache outlives a process. A normal start
//! notes only the oldest record it replays, so the guard costs nothing on
//! the hot path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eventstash_plugin_api::{DeadLetterFile, Event};
use metrics::counter;
use tracing::{error, info, warn};

use crate::metrics::POISON_RECORDS;
use crate::queue_log::StoredBatch;

/// Starts in a row that may die on the same record before it is set aside.
pub(crate) const MAX_ATTEMPTS: u32 = 3;

/// How long a careful replay waits for one record before taking the next:
/// a record that merely waits on a slow output is not the one that crashes.
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// The note's file name in the queue directory.
const NOTE_FILE: &str = "replay-attempts";
/// Where set-aside records go, in the queue directory.
pub(crate) const DEAD_LETTER_FILE: &str = "dead-letters.jsonl";

/// A record being worked on, and in how many starts in a row it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    seq: u64,
    count: u32,
}

/// What this start does with its replay.
pub(crate) struct ReplayPlan {
    /// Records to replay, in order.
    pub(crate) replay: Vec<StoredBatch>,
    /// Records to set aside instead (at most one per start).
    pub(crate) poisoned: Vec<StoredBatch>,
    /// Replay one record at a time, noting each.
    pub(crate) careful: bool,
}

/// The note of one queue directory.
pub(crate) struct ReplayGuard {
    path: PathBuf,
    dead_letters: DeadLetterFile,
    previous: Option<Attempt>,
}

impl ReplayGuard {
    /// Reads the note the last start left in `dir`, if any.
    pub(crate) fn open(dir: &Path) -> ReplayGuard {
        let path = dir.join(NOTE_FILE);
        let previous = std::fs::read_to_string(&path).ok().and_then(|text| parse(&text));
        ReplayGuard {
            dead_letters: DeadLetterFile::new(dir.join(DEAD_LETTER_FILE), "persisted-queue"),
            path,
            previous,
        }
    }

    /// Decides how to replay `replay` (oldest first), and notes the start.
    pub(crate) fn plan(&self, mut replay: Vec<StoredBatch>) -> ReplayPlan {
        let unfinished = self
            .previous
            .filter(|noted| replay.iter().any(|batch| batch.seq == noted.seq));
        let mut poisoned = Vec::new();
        if let Some(noted) = unfinished.filter(|noted| noted.count >= MAX_ATTEMPTS)
            && let Some(at) = replay.iter().position(|batch| batch.seq == noted.seq)
        {
            poisoned.push(replay.remove(at));
        }
        let careful = unfinished.is_some();
        if !careful && let Some(oldest) = replay.first() {
            self.note(oldest.seq);
        }
        ReplayPlan {
            replay,
            poisoned,
            careful,
        }
    }

    /// Notes that `seq` is being worked on now.
    pub(crate) fn note(&self, seq: u64) {
        let count = match self.previous {
            Some(noted) if noted.seq == seq => noted.count + 1,
            _ => 1,
        };
        if let Err(error) = std::fs::write(&self.path, format!("{seq} {count}\n")) {
            warn!(file = %self.path.display(), %error, "cannot note the replayed record; a crash loop could not be broken");
        }
    }

    /// The replay is over: nothing is being worked on any more.
    pub(crate) fn done(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Writes a poisoned record's events to the dead-letter file. Returns
    /// whether they are safely there (only then may the record be finished).
    /// `pipeline` labels the count.
    pub(crate) async fn set_aside(&self, pipeline: &str, batch: &StoredBatch) -> bool {
        let reason = format!(
            "the agent stopped {MAX_ATTEMPTS} times in a row while processing this persisted record (seq {}); set aside so the queue can move on",
            batch.seq
        );
        let rejected: Vec<(&Event, String)> = batch.events.iter().map(|e| (e, reason.clone())).collect();
        match self.dead_letters.write(&rejected).await {
            Ok(()) => {
                error!(
                    seq = batch.seq, events = batch.events.len(), file = %self.dead_letters.path().display(),
                    "a persisted record crashed the agent {MAX_ATTEMPTS} times; its events were set aside to the dead-letter file"
                );
                counter!(POISON_RECORDS, "pipeline" => pipeline.to_owned()).increment(1);
                true
            }
            Err(error) => {
                error!(seq = batch.seq, %error, "cannot set a crashing record aside; it stays in the queue");
                false
            }
        }
    }
}

/// Logs how this start replays.
pub(crate) fn report(plan: &ReplayPlan) {
    if plan.careful {
        info!(
            records = plan.replay.len(),
            "the last run stopped while replaying; replaying one record at a time"
        );
    }
}

fn parse(text: &str) -> Option<Attempt> {
    let mut words = text.split_whitespace();
    let seq = words.next()?.parse().ok()?;
    let count = words.next()?.parse().ok()?;
    Some(Attempt { seq, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> StoredBatch {
        StoredBatch {
            seq,
            events: Vec::new(),
            pending: vec![0],
        }
    }

    fn seqs(batches: &[StoredBatch]) -> Vec<u64> {
        batches.iter().map(|b| b.seq).collect()
    }

    #[test]
    fn a_first_start_replays_at_once_and_notes_the_oldest_record() {
        let dir = tempfile::tempdir().unwrap();
        let plan = ReplayGuard::open(dir.path()).plan(vec![batch(4), batch(5)]);
        assert!(!plan.careful);
        assert_eq!(seqs(&plan.replay), [4, 5]);
        assert_eq!(std::fs::read_to_string(dir.path().join(NOTE_FILE)).unwrap(), "4 1\n");
    }

    #[test]
    fn a_start_after_dying_on_a_record_replays_carefully_then_sets_it_aside() {
        let dir = tempfile::tempdir().unwrap();
        ReplayGuard::open(dir.path()).plan(vec![batch(4), batch(5)]);
        // Died on 4: careful; died on 5 noted twice more.
        let guard = ReplayGuard::open(dir.path());
        let plan = guard.plan(vec![batch(4), batch(5)]);
        assert!(plan.careful);
        assert!(plan.poisoned.is_empty());
        guard.note(5);
        for expected in [2, 3] {
            let guard = ReplayGuard::open(dir.path());
            let plan = guard.plan(vec![batch(5), batch(6)]);
            assert!(plan.careful);
            assert!(plan.poisoned.is_empty());
            guard.note(5);
            assert_eq!(
                std::fs::read_to_string(dir.path().join(NOTE_FILE)).unwrap(),
                format!("5 {expected}\n")
            );
        }
        let plan = ReplayGuard::open(dir.path()).plan(vec![batch(5), batch(6)]);
        assert_eq!(seqs(&plan.poisoned), [5]);
        assert_eq!(seqs(&plan.replay), [6]);
    }

    #[test]
    fn a_note_for_a_finished_record_means_a_normal_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NOTE_FILE), "3 3\n").unwrap();
        let plan = ReplayGuard::open(dir.path()).plan(vec![batch(9)]);
        assert!(!plan.careful);
        assert!(plan.poisoned.is_empty());
        assert_eq!(seqs(&plan.replay), [9]);
    }
}
