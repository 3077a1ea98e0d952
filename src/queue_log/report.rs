//! What the queue log tells its owner: the batches to replay and the damage
//! found when it opened, and how deep the queue is. Plain data, so that the
//! engine can log it, export it as metrics and print it in
//! `eventstash queue inspect`.

use std::fmt;
use std::path::PathBuf;

use eventstash_plugin_api::Event;

use super::DecodeError;

/// A batch read back from the log on open, for the outputs that have not
/// finished it.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// The batch's sequence number, to pass to [`QueueLog::finish`](super::QueueLog::finish).
    pub seq: u64,
    /// The events, as they were appended.
    pub events: Vec<Event>,
    /// Indexes (into the `outputs` given to `open`) of the outputs that have
    /// not finished this batch: only they get it again.
    pub pending: Vec<usize>,
}

/// What [`QueueLog::open`](super::QueueLog::open) found on disk.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The batches some output has not finished, in seq order.
    pub replay: Vec<StoredBatch>,
    /// Bytes that could not be read and will not be replayed.
    pub skipped: Vec<SkippedBytes>,
    /// Set when the progress file was missing or damaged, so every output
    /// starts over from the oldest record (at-least-once: outputs see
    /// duplicates, never gaps).
    pub progress_reset: Option<ProgressReset>,
    /// Outputs with no saved progress: they start at the end of the log.
    pub new_outputs: Vec<String>,
    /// Outputs in the progress file but no longer configured: forgotten at
    /// the next checkpoint.
    pub removed_outputs: Vec<String>,
}

/// A damaged stretch of a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedBytes {
    /// The segment file.
    pub segment: PathBuf,
    /// Where the first unreadable record starts.
    pub offset: u64,
    /// How many bytes from there to the end of the file were not read.
    pub bytes: u64,
    /// Why the record at `offset` was not readable.
    pub reason: SkipReason,
    /// Whether the file was cut at `offset`. Only a damaged tail of the last
    /// segment is cut (so that new records follow good ones); damage with
    /// more data after it is left on disk for a closer look, and new records
    /// go to a new segment.
    pub truncated: bool,
}

impl fmt::Display for SkippedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} bytes from offset {} skipped ({}){}",
            self.segment.display(),
            self.bytes,
            self.offset,
            self.reason,
            if self.truncated { ", file truncated there" } else { "" }
        )
    }
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The file ends inside the record: a write that a crash cut short.
    #[error("the record runs past the end of the file (torn write)")]
    IncompleteRecord,
    /// The length field cannot be a record's.
    #[error("impossible record length {0}")]
    BadLength(u32),
    /// The bytes are not those that were written.
    #[error("checksum mismatch")]
    ChecksumMismatch,
    /// The checksum matched but the content does not decode (a bug, or a
    /// newer version's format).
    #[error("the record does not decode: {0}")]
    Undecodable(DecodeError),
    /// The record's seq does not follow the one before it.
    #[error("record seq {seq} does not follow seq {after}")]
    SeqOutOfOrder {
        /// The record's seq.
        seq: u64,
        /// The seq of the record before it.
        after: u64,
    },
    /// The file does not start with the segment header.
    #[error("the file does not start with the queue segment header")]
    BadSegmentHeader,
}

/// Why every output starts over from the oldest record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressReset {
    /// The progress file.
    pub path: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

impl fmt::Display for ProgressReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}; every output starts over from the oldest queued record",
            self.path.display(),
            self.reason
        )
    }
}

/// Records, events and record bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Records (batches).
    pub records: u64,
    /// Events in them.
    pub events: u64,
    /// Their size on disk, framing included.
    pub bytes: u64,
}

/// How deep the queue is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// What some output has not finished yet.
    pub unfinished: Depth,
    /// Each output's position, in the order given to `open` or `inspect`.
    pub outputs: Vec<OutputStats>,
    /// Segment files.
    pub segments: usize,
    /// Their total size: what the queue takes on disk, finished records
    /// included until their segment is deleted.
    pub disk_bytes: u64,
    /// The seq the next appended batch gets.
    pub next_seq: u64,
}

/// One output's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputStats {
    /// The output's id.
    pub id: String,
    /// Every record at or below this seq is finished by this output.
    pub watermark: u64,
    /// What this output has not finished yet.
    pub pending: Depth,
}

/// What [`QueueLog::inspect`](super::QueueLog::inspect) found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Depth and positions, as `open` would find them.
    pub stats: QueueStats,
    /// Damage that `open` would skip (and, for a torn tail, cut).
    pub skipped: Vec<SkippedBytes>,
    /// Set when the progress file is missing or damaged.
    pub progress_reset: Option<ProgressReset>,
}
