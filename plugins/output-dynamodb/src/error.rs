//! The one error type of the DynamoDB output.
//!
//! Configuration problems name the option at fault. At run time almost
//! nothing is an error: throttling, outages, missing credentials or a
//! missing table are retried (and logged) until they pass, and items
//! DynamoDB refuses go to the dead-letter file. What is left, a dead-letter
//! file that cannot be written, fails the batch, and its message is what
//! the producers see.

use eventstash_plugin_api::{DeadLetterError, TemplateError};

/// What went wrong in the DynamoDB output.
#[derive(Debug, thiserror::Error)]
pub enum DynamoDbOutputError {
    /// An option has a value the output cannot work with.
    #[error("dynamodb output option `{key}` {problem}")]
    InvalidOption {
        /// The option's key in the pipeline file (`partition_key.name`).
        key: String,
        /// What is wrong with its value.
        problem: &'static str,
    },
    /// An option of a `type = "dynamodb"` event store or replay table has
    /// a value the store cannot work with.
    #[error("dynamodb event store option `{key}` {problem}")]
    InvalidStoreOption {
        /// The option's key in the pipeline file (`change_sets_table`).
        key: String,
        /// What is wrong with its value.
        problem: &'static str,
    },
    /// `ca_file` cannot be read or holds no PEM certificate.
    #[error("dynamodb option `ca_file` = {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A template option does not parse.
    #[error("dynamodb output option `{key}`: {error}")]
    Template {
        /// The option's key in the pipeline file (`sort_key.value`).
        key: String,
        /// Why the template does not parse.
        error: TemplateError,
    },
    /// Events DynamoDB refused could not be written to the dead-letter file,
    /// so they are neither stored nor kept.
    #[error("dynamodb output refused {events} event(s) and could not keep them: {error}")]
    DeadLetter {
        /// How many events were refused.
        events: usize,
        /// Why the dead-letter file could not be written.
        error: DeadLetterError,
    },
}
