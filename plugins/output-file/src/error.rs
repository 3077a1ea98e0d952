//! The one error type of the file output, for both configuration and writes.
//!
//! Every message is complete on its own (it ends with the operating system's
//! reason), because the engine passes it to producers as their ack failure and
//! that text is all they see.

use std::io;
use std::path::PathBuf;

use eventstash_plugin_api::{DeadLetterError, TemplateError};

/// What went wrong in the file output.
#[derive(Debug, thiserror::Error)]
pub enum FileOutputError {
    /// The `path` option is not a valid field template.
    #[error("file output option `path`: {error}")]
    PathTemplate {
        /// Why the template does not parse.
        error: TemplateError,
    },
    /// An option has a value the output cannot work with.
    #[error("file output option `{key}` {problem}")]
    InvalidOption {
        /// The option's key in the pipeline file.
        key: &'static str,
        /// What is wrong with its value.
        problem: &'static str,
    },
    /// An event could not be turned into its JSON document.
    #[error("cannot encode event `{id}` as JSON: {error}")]
    Encode {
        /// The event's id.
        id: String,
        /// The serializer's reason.
        error: serde_json::Error,
    },
    /// The directory of an output file could not be created.
    #[error("cannot create directory {}: {error}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The operating system's reason.
        error: io::Error,
    },
    /// An output file could not be opened for appending.
    #[error("cannot open {} for appending: {error}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: io::Error,
    },
    /// Documents could not be appended to an output file.
    #[error("cannot write to {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: io::Error,
    },
    /// An output file (or its new directory entry) could not be synced to disk.
    #[error("cannot sync {} to disk: {error}", path.display())]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        error: io::Error,
    },
    /// Events whose file can never be written could not be written to the
    /// dead-letter file either, so they are neither stored nor kept.
    #[error("file output refused {events} event(s) and could not keep them: {error}")]
    DeadLetter {
        /// How many events were refused.
        events: usize,
        /// Why the dead-letter file could not be written.
        error: DeadLetterError,
    },
    /// The output's writer thread could not be started.
    #[error("cannot start the file output's writer thread: {0}")]
    Thread(io::Error),
    /// The writer thread stopped before answering (a bug: it is logged).
    #[error("the file output's writer stopped before the batch was stored")]
    WriterGone,
}
