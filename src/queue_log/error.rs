//! The errors of the queue log. Every I/O failure names the file and the
//! operation, because the operator reading it has to find that file (a full
//! disk, a read-only mount, a permission) and fix it. [`DecodeError`] is not
//! a failure of the log: it says why stored bytes (a record, the progress
//! file) do not read back, and is reported as damage.

use std::io;
use std::path::{Path, PathBuf};

/// Something the queue log could not do. Damaged data found while recovering
/// is not an error: it is reported in [`Recovery`](super::Recovery) and the
/// log starts anyway.
#[derive(Debug, thiserror::Error)]
pub enum QueueLogError {
    /// A file system operation failed: disk full, I/O error, permissions.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        /// What was being done: `write`, `fsync`, `create`, `read`, ...
        operation: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// Another process has the queue directory open.
    #[error(
        "the queue directory {dir} is in use by another eventstash{}: two agents must not share a queue directory; stop the other one or give this one its own `[queue] path`",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse {
        /// The queue directory.
        dir: PathBuf,
        /// The process holding it, if its lock file says.
        holder: Option<u32>,
    },
    /// A batch is too large to be one record (4 GiB, or more than `u32::MAX`
    /// events).
    #[error("a batch of {events} events is too large for one queue record: split it into smaller batches")]
    BatchTooLarge {
        /// Events in the batch.
        events: usize,
    },
    /// An event's payload could not be written as JSON text.
    #[error("cannot encode event {id:?} for the queue: {source}")]
    Encode {
        /// The event's id.
        id: String,
        /// Why.
        source: serde_json::Error,
    },
}

impl QueueLogError {
    /// Makes a closure that wraps an [`io::Error`] of `operation` on `path`,
    /// for `map_err`.
    pub(super) fn io(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> QueueLogError {
        move |source| QueueLogError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why stored bytes whose checksum matched (or a progress file) do not
/// decode: a bug, or a newer version's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside a field.
    #[error("ends early: {wanted} bytes wanted, {left} left")]
    EndsEarly {
        /// Bytes the field needs.
        wanted: usize,
        /// Bytes that were left.
        left: usize,
    },
    /// Bytes follow the last item.
    #[error("{extra} bytes after the last {item}")]
    TrailingBytes {
        /// How many.
        extra: usize,
        /// `event` or `output`.
        item: &'static str,
    },
    /// A text field is not UTF-8.
    #[error("text is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    /// An event's format byte is not one this version writes.
    #[error("unknown format {0}")]
    UnknownFormat(u8),
    /// An event's payload state byte is not one this version writes.
    #[error("unknown payload state {0}")]
    UnknownPayloadState(u8),
    /// A receive time that cannot be.
    #[error("impossible timestamp {secs}.{nanos:09}")]
    ImpossibleTimestamp {
        /// Seconds since the epoch.
        secs: i64,
        /// Nanoseconds.
        nanos: u32,
    },
    /// A JSON payload stored as checked does not parse.
    #[error("JSON payload does not parse")]
    JsonPayload,
    /// A payload stored as a JSON tree does not parse.
    #[error("payload tree does not parse: {0}")]
    PayloadTree(String),
    /// The progress file does not start with its header.
    #[error("not a progress file (bad header)")]
    NotProgressFile,
    /// The progress file's checksum does not match.
    #[error("checksum mismatch")]
    ChecksumMismatch,
    /// The progress file lists a run of finished records that cannot be.
    #[error("impossible run of finished records {first}..={last}")]
    ImpossibleRun {
        /// The run's first seq.
        first: u64,
        /// The run's last seq.
        last: u64,
    },
}
