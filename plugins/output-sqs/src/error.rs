//! The one error type of the SQS output.
//!
//! Configuration problems name the option at fault. At run time almost
//! nothing is an error: throttling, outages, missing credentials and even a
//! missing queue are retried (and logged) until they pass, and events too
//! large for a message go to the dead-letter file. What is left, a
//! dead-letter file that cannot be written, fails the batch, and its message
//! is what the producers see.

use eventstash_plugin_api::{DeadLetterError, TemplateError};

/// What went wrong in the SQS output.
#[derive(Debug, thiserror::Error)]
pub enum SqsOutputError {
    /// `ca_file` cannot be read or holds no PEM certificate.
    #[error("sqs option `ca_file` = {path}: {reason}")]
    CaFile {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option has a value the output cannot work with.
    #[error("sqs output option `{key}` {problem}")]
    InvalidOption {
        /// The option's key in the pipeline file (`max_message_bytes`).
        key: &'static str,
        /// What is wrong with its value.
        problem: &'static str,
    },
    /// A template option does not parse.
    #[error("sqs output option `{key}`: {error}")]
    Template {
        /// The option's key in the pipeline file (`message_group_id`).
        key: &'static str,
        /// Why the template does not parse.
        error: TemplateError,
    },
    /// Events SQS cannot take could not be written to the dead-letter file,
    /// so they are neither sent nor kept.
    #[error("sqs output could not send {events} event(s) and could not keep them: {error}")]
    DeadLetter {
        /// How many events were refused.
        events: usize,
        /// Why the dead-letter file could not be written.
        error: DeadLetterError,
    },
}
