//! What a `type = "sqs"` output table in a pipeline file says, and its check.
//!
//! The struct is plain serde data; [`SqsOutputConfig::build`] checks every
//! option and parses the template into the typed form the output runs
//! with, without touching the network, so `eventstash validate` can run it
//! on any machine. Connecting (credentials, region, the queue) happens on
//! the first write.

use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use eventstash_plugin_api::{Backoff, DeadLetterFile, FieldTemplate, PluginContext};
use eventstash_support_aws::sqs::packed::PackedCodec;
use serde::Deserialize;

use crate::client::{ConnectionOptions, ConnectionSettings, OptionProblem};
use crate::error::SqsOutputError;
use crate::message::MessageSchema;
use crate::packed::Packer;
use crate::queue::QueueRef;
use crate::sink::{SendSettings, SqsOutput};

/// SQS's largest message (and batch): 1 MiB since 2025; 256 KiB before.
const MAX_MESSAGE_BYTES: u64 = 1024 * 1024;
/// The smallest `max_message_bytes` SQS allows a queue.
const MIN_MESSAGE_BYTES: u64 = 1024;

/// The options of the SQS output. (`Debug` is written by hand so that the
/// secret key never reaches a log.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsOutputConfig {
    /// The queue: its URL, or its name in the client's region and account.
    /// A name ending in `.fifo` (or such a URL) is a FIFO queue.
    pub queue_url: String,
    /// The AWS region; empty: from the standard chain (`AWS_REGION`, the
    /// profile, instance metadata), else the queue URL's, else `us-east-1`.
    #[serde(default)]
    pub region: String,
    /// Where to send requests instead of the AWS endpoint (a local server
    /// such as moto, a VPC endpoint). Empty: `AWS_ENDPOINT_URL_SQS` or
    /// `AWS_ENDPOINT_URL` if set, else the AWS default.
    #[serde(default)]
    pub endpoint_url: String,
    /// Static credentials, for local servers. Empty: the standard chain
    /// (environment, profile, web identity, ECS, instance metadata), which
    /// is what production deployments should use.
    #[serde(default)]
    pub access_key_id: String,
    /// The secret of `access_key_id`.
    #[serde(default)]
    pub secret_access_key: String,
    /// The session token of temporary static credentials.
    #[serde(default)]
    pub session_token: String,
    /// PEM file of CAs trusted besides the system's, for an `https://`
    /// endpoint signed by a private CA.
    #[serde(default)]
    pub ca_file: String,
    /// The largest message, and the most one `SendMessageBatch` request
    /// carries; lowered to the queue's `MaximumMessageSize` if that is less.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// How events become messages: `"event"`, one event per message (for
    /// any reader: a Lambda, gateway-format readers), or `"packed"`, as many
    /// events per message as fit in `packed_bytes`, for store agents.
    #[serde(default)]
    pub codec: MessageCodec,
    /// Packed messages only: the size a message aims at, body and
    /// attributes; SQS bills each 64 KiB of a request as one request.
    #[serde(default = "defaults::packed_bytes")]
    pub packed_bytes: ByteSize,
    /// Packed messages only: `"gzip"` (the documents gzip-compressed, then
    /// base64-encoded) or `"none"` (plain JSON lines).
    #[serde(default)]
    pub packed_compression: PackedCompression,
    /// FIFO queues only: the template of `MessageGroupId`; events of one
    /// group are delivered in order.
    #[serde(default = "defaults::message_group_id")]
    pub message_group_id: String,
    /// Where events too large for a message go, one JSON line each with the
    /// reason.
    #[serde(default = "defaults::dead_letter_path")]
    pub dead_letter_path: String,
    /// `SendMessageBatch` requests (10 messages each) one write sends at once.
    #[serde(default = "defaults::max_batches_in_flight")]
    pub max_batches_in_flight: usize,
    /// The first wait before a retry; it doubles (with jitter) per attempt.
    #[serde(default = "defaults::retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    /// The longest wait between two attempts.
    #[serde(default = "defaults::retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// How long one request may take before it is abandoned and retried.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl std::fmt::Debug for SqsOutputConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &str| if secret.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("SqsOutputConfig")
            .field("queue_url", &self.queue_url)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("ca_file", &self.ca_file)
            .field("session_token", &redacted(&self.session_token))
            .field("max_message_bytes", &self.max_message_bytes)
            .field("codec", &self.codec)
            .field("packed_bytes", &self.packed_bytes)
            .field("packed_compression", &self.packed_compression)
            .field("message_group_id", &self.message_group_id)
            .field("dead_letter_path", &self.dead_letter_path)
            .field("max_batches_in_flight", &self.max_batches_in_flight)
            .field("retry_initial_backoff_ms", &self.retry_initial_backoff_ms)
            .field("retry_max_backoff_ms", &self.retry_max_backoff_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// How events become messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageCodec {
    /// One event per message, its document as the body.
    #[default]
    Event,
    /// Many events per message; see `packed.rs`.
    Packed,
}

/// How a packed message's documents are framed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackedCompression {
    /// gzip, then base64 (an SQS body must be text).
    #[default]
    Gzip,
    /// Plain JSON lines.
    None,
}

/// The defaults of the optional keys, in one place.
mod defaults {
    use bytesize::ByteSize;

    pub(super) fn packed_bytes() -> ByteSize {
        ByteSize::kib(64)
    }

    pub(super) fn max_message_bytes() -> ByteSize {
        ByteSize::kib(256)
    }

    pub(super) fn message_group_id() -> String {
        "%{index}".to_owned()
    }

    pub(super) fn dead_letter_path() -> String {
        "data/dead-letters/sqs.jsonl".to_owned()
    }

    pub(super) fn max_batches_in_flight() -> usize {
        10
    }

    pub(super) fn retry_initial_backoff_ms() -> u64 {
        100
    }

    pub(super) fn retry_max_backoff_ms() -> u64 {
        30_000
    }

    pub(super) fn request_timeout_ms() -> u64 {
        30_000
    }
}

impl SqsOutputConfig {
    /// Checks the options and builds the output. Does no network I/O: the
    /// client is made and the queue found on the first write.
    pub fn build(self, ctx: &PluginContext) -> Result<SqsOutput, SqsOutputError> {
        let queue = QueueRef::parse(&self.queue_url).map_err(|problem| invalid("queue_url", problem))?;
        let connection = self.connection_settings(&queue)?;
        let schema =
            MessageSchema {
                group_id: match queue.is_fifo() {
                    true => Some(FieldTemplate::parse(&self.message_group_id).map_err(|error| {
                        SqsOutputError::Template {
                            key: "message_group_id",
                            error,
                        }
                    })?),
                    false => None,
                },
            };
        let send = self.send_settings()?;
        if self.dead_letter_path.is_empty() {
            return Err(invalid("dead_letter_path", "must not be empty"));
        }
        let dead_letters = DeadLetterFile::new(&self.dead_letter_path, ctx.plugin.clone());
        Ok(SqsOutput::new(queue, connection, schema, send, dead_letters, ctx))
    }

    fn connection_settings(&self, queue: &QueueRef) -> Result<ConnectionSettings, SqsOutputError> {
        let options = ConnectionOptions {
            region: &self.region,
            endpoint_url: &self.endpoint_url,
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            session_token: &self.session_token,
            ca_file: &self.ca_file,
            request_timeout_ms: self.request_timeout_ms,
        };
        options.check(queue).map_err(|problem| match problem {
            OptionProblem::Invalid { key, problem } => invalid(key, problem),
            OptionProblem::CaFile { path, reason } => SqsOutputError::CaFile { path, reason },
        })
    }

    fn send_settings(&self) -> Result<SendSettings, SqsOutputError> {
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes.as_u64()) {
            return Err(invalid("max_message_bytes", "must be between 1KiB and 1MiB"));
        }
        if self.max_batches_in_flight == 0 {
            return Err(invalid("max_batches_in_flight", "must be at least 1"));
        }
        if self.retry_initial_backoff_ms == 0 {
            return Err(invalid("retry_initial_backoff_ms", "must be at least 1"));
        }
        if self.retry_max_backoff_ms < self.retry_initial_backoff_ms {
            return Err(invalid(
                "retry_max_backoff_ms",
                "must not be less than `retry_initial_backoff_ms`",
            ));
        }
        let packer = match self.codec {
            MessageCodec::Event => None,
            MessageCodec::Packed => {
                if !(MIN_MESSAGE_BYTES..=self.max_message_bytes.as_u64()).contains(&self.packed_bytes.as_u64()) {
                    return Err(invalid(
                        "packed_bytes",
                        "must be at least 1KiB and at most `max_message_bytes`",
                    ));
                }
                let codec = match self.packed_compression {
                    PackedCompression::Gzip => PackedCodec::JsonlGzipBase64,
                    PackedCompression::None => PackedCodec::Jsonl,
                };
                Some(Arc::new(Packer::new(codec, self.packed_bytes.as_u64() as usize)))
            }
        };
        Ok(SendSettings {
            packer,
            batches_in_flight: self.max_batches_in_flight,
            max_message_bytes: self.max_message_bytes.as_u64() as usize,
            backoff: Backoff::new(
                Duration::from_millis(self.retry_initial_backoff_ms),
                Duration::from_millis(self.retry_max_backoff_ms),
            ),
        })
    }
}

fn invalid(key: &'static str, problem: &'static str) -> SqsOutputError {
    SqsOutputError::InvalidOption { key, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> SqsOutputConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn ctx() -> PluginContext {
        PluginContext::new("main", "sqs#0")
    }

    #[test]
    fn a_queue_alone_builds_with_the_defaults() {
        let config = parse(r#"queue_url = "event-queue""#);
        assert_eq!(config.max_message_bytes, ByteSize::kib(256));
        assert_eq!(config.message_group_id, "%{index}");
        assert_eq!(config.max_batches_in_flight, 10);
        assert_eq!(config.dead_letter_path, "data/dead-letters/sqs.jsonl");
        assert_eq!(config.codec, MessageCodec::Event);
        assert_eq!(config.packed_bytes, ByteSize::kib(64));
        assert_eq!(config.packed_compression, PackedCompression::Gzip);
        assert!(config.build(&ctx()).is_ok());
    }

    #[test]
    fn packed_messages_are_chosen_by_codec_and_bounded_by_the_message_limit() {
        let config = parse("queue_url = \"q\"\ncodec = \"packed\"\npacked_compression = \"none\"");
        assert_eq!(config.codec, MessageCodec::Packed);
        assert!(config.build(&ctx()).is_ok());
        let config = parse("queue_url = \"q\"\ncodec = \"packed\"\npacked_bytes = \"512KiB\"");
        let error = config.build(&ctx()).unwrap_err();
        assert!(error.to_string().contains("`packed_bytes`"), "{error}");
        let error = toml::from_str::<SqsOutputConfig>("queue_url = \"q\"\ncodec = \"protobuf\"").unwrap_err();
        assert!(error.to_string().contains("unknown variant"), "{error}");
    }

    #[test]
    fn the_queue_is_required_and_unknown_keys_are_rejected() {
        let error = toml::from_str::<SqsOutputConfig>("region = \"eu-west-1\"").unwrap_err();
        assert!(error.to_string().contains("queue_url"), "{error}");
        let error = toml::from_str::<SqsOutputConfig>("queue_url = \"q\"\nqueue = \"q\"").unwrap_err();
        assert!(error.to_string().contains("unknown field `queue`"), "{error}");
    }

    #[test]
    fn a_fifo_queue_checks_its_group_template() {
        let config = parse("queue_url = \"events.fifo\"\nmessage_group_id = \"%{[data]\"");
        let error = config.build(&ctx()).unwrap_err();
        assert!(error.to_string().contains("`message_group_id`"), "{error}");
        assert!(parse("queue_url = \"events.fifo\"").build(&ctx()).is_ok());
    }

    #[test]
    fn the_secret_key_stays_out_of_debug_output() {
        let config = parse("queue_url = \"q\"\naccess_key_id = \"AKIA1\"\nsecret_access_key = \"s3cr3t\"");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", config.build(&ctx()).unwrap()).contains("s3cr3t"));
    }

    #[test]
    fn options_with_impossible_values_are_rejected() {
        let bad = [
            "queue_url = \"has space\"",
            "queue_url = \"\"",
            "queue_url = \"q\"\nendpoint_url = \"localhost:4566\"",
            "queue_url = \"q\"\naccess_key_id = \"test\"",
            "queue_url = \"q\"\nmax_message_bytes = \"2MiB\"",
            "queue_url = \"q\"\nmax_message_bytes = \"100B\"",
            "queue_url = \"q\"\nmax_batches_in_flight = 0",
            "queue_url = \"q\"\nretry_initial_backoff_ms = 500\nretry_max_backoff_ms = 100",
            "queue_url = \"q\"\ndead_letter_path = \"\"",
            "queue_url = \"q\"\nrequest_timeout_ms = 0",
        ];
        for text in bad {
            assert!(parse(text).build(&ctx()).is_err(), "{text} was accepted");
        }
    }
}
