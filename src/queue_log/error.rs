//! The one error type of the queue log. Every I/O failure names the file and
//! the operation, because the operator reading it has to find that file (a
//! full disk, a read-only mount, a permission) and fix it.

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
