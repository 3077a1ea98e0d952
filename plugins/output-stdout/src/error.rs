//! The one error type of the stdout output.
//!
//! Messages end with the underlying reason, because the engine passes them to
//! producers as their ack failure.

use std::io;

/// What went wrong in the stdout output.
#[derive(Debug, thiserror::Error)]
pub enum StdoutOutputError {
    /// An event could not be turned into its JSON document.
    #[error("cannot encode event `{id}` as JSON: {error}")]
    Encode {
        /// The event's id.
        id: String,
        /// The serializer's reason.
        error: serde_json::Error,
    },
    /// Standard output refused the documents (for example a closed pipe).
    #[error("cannot write to standard output: {0}")]
    Write(io::Error),
    /// The blocking task doing the write panicked or was cancelled.
    #[error("the standard output writer task failed: {0}")]
    Task(tokio::task::JoinError),
}
