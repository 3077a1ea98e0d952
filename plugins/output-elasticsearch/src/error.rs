//! The one error type of the Elasticsearch output, for both configuration
//! and writes.
//!
//! Configuration errors name the option at fault, since `eventstash
//! validate` shows them with the pipeline file. Write errors are complete on
//! their own: the engine hands them to producers as their ack failure.

use std::path::PathBuf;

use eventstash_plugin_api::{DeadLetterError, TemplateError};

/// What went wrong in the Elasticsearch output.
#[derive(Debug, thiserror::Error)]
pub enum ElasticsearchOutputError {
    /// An option has a value the output cannot work with.
    #[error("elasticsearch output option `{key}` {problem}")]
    InvalidOption {
        /// The option's key in the pipeline file.
        key: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// `index` or `document_id` is not a valid field template.
    #[error("elasticsearch output option `{key}`: {error}")]
    FieldTemplate {
        /// The option's key.
        key: &'static str,
        /// Why the template does not parse.
        error: TemplateError,
    },
    /// A file an option names (`template`, `ca_file`) cannot be read.
    #[error("elasticsearch output option `{key}`: cannot read {}: {error}", path.display())]
    ReadFile {
        /// The option's key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// The index template file is not an index template.
    #[error("elasticsearch output option `template`: {} {problem}", path.display())]
    TemplateFile {
        /// The template file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The HTTP client could not be set up (a bad CA certificate, say).
    #[error("elasticsearch output: cannot set up the HTTP client: {reason}")]
    Client {
        /// The client library's reason.
        reason: String,
    },
    /// An event could not be turned into its bulk lines.
    #[error("cannot encode event `{id}` for Elasticsearch: {error}")]
    Encode {
        /// The event's id.
        id: String,
        /// The serializer's reason.
        error: serde_json::Error,
    },
    /// The cluster refused the index template for a reason retrying cannot
    /// fix; writes fail until the template or the cluster is corrected.
    #[error("Elasticsearch refused index template `{name}` from {}: {reason}", path.display())]
    TemplateRejected {
        /// The template's name.
        name: String,
        /// The template file.
        path: PathBuf,
        /// The status and the cluster's reason.
        reason: String,
    },
    /// The cluster refused a whole bulk request for a reason retrying cannot
    /// fix (a 400 or 413 for the request itself, a wrong URL path).
    #[error("Elasticsearch refused the bulk request: {reason}")]
    BulkRejected {
        /// The status and the cluster's reason.
        reason: String,
    },
    /// Rejected events could not be written to the dead-letter file, so
    /// they are not safe anywhere.
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
}
