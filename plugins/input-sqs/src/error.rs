//! The one error type of the SQS input.

/// What went wrong in the SQS input.
#[derive(Debug, thiserror::Error)]
pub enum SqsInputError {
    /// `ca_file` cannot be read or holds no PEM certificate.
    #[error("sqs option `ca_file` = {path}: {reason}")]
    CaFile {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option has a value the input cannot work with.
    #[error("sqs input option `{key}` {problem}")]
    InvalidOption {
        /// The option's key in the pipeline file (`pollers`).
        key: &'static str,
        /// What is wrong with its value.
        problem: &'static str,
    },
    /// SQS says the queue does not exist: the agent does not start.
    #[error("sqs queue {queue} does not exist ({place}): create it, or fix `queue_url`, region or endpoint")]
    QueueMissing {
        /// The queue as the pipeline file names it.
        queue: String,
        /// The region and endpoint asked.
        place: String,
    },
}
