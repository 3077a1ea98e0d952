//! What an `[[inputs]] type = "sqs"` table says, and its checked form.
//!
//! The struct is plain serde data; [`SqsInputConfig::build`] checks every
//! option without touching the network, so `eventstash validate` runs
//! anywhere. The queue is looked up when the input starts: a queue SQS says
//! does not exist stops the agent there, with its name, region and
//! endpoint.

use std::time::Duration;

use eventstash_plugin_api::Backoff;
use serde::Deserialize;

use crate::client::{ConnectionOptions, ConnectionSettings, OptionProblem};
use crate::error::SqsInputError;
use crate::input::{PollSettings, SqsInput};
use crate::queue::QueueRef;

/// SQS's most messages per `ReceiveMessage`.
const MAX_MESSAGES_PER_RECEIVE: usize = 10;
/// SQS's longest long poll, in seconds.
const MAX_WAIT_TIME_SECONDS: u64 = 20;
/// SQS's longest visibility timeout, in seconds (12 hours).
const MAX_VISIBILITY_TIMEOUT_SECONDS: u64 = 43_200;
/// The shortest visibility timeout that leaves room to extend it in time.
const MIN_VISIBILITY_TIMEOUT_SECONDS: u64 = 5;

/// The options of the SQS input. (`Debug` is written by hand so that the
/// secret key never reaches a log.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsInputConfig {
    /// The queue: its URL, or its name in the client's region and account.
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
    /// Static credentials, for local servers. Empty: the standard chain.
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
    /// Long-polling loops, each with one `ReceiveMessage` in flight.
    #[serde(default = "defaults::pollers")]
    pub pollers: usize,
    /// Messages asked for per `ReceiveMessage` (1 to 10).
    #[serde(default = "defaults::max_messages")]
    pub max_messages: usize,
    /// How long a `ReceiveMessage` waits for messages (0 to 20 s).
    #[serde(default = "defaults::wait_time_seconds")]
    pub wait_time_seconds: u64,
    /// How long a received message stays hidden from other consumers; it
    /// is extended by as much, a third before it ends, until the message is
    /// stored and deleted.
    #[serde(default = "defaults::visibility_timeout_seconds")]
    pub visibility_timeout_seconds: u64,
    /// Messages received but not yet deleted; the pollers wait while this
    /// many are held.
    #[serde(default = "defaults::max_in_flight_messages")]
    pub max_in_flight_messages: usize,
    /// The first wait before a retry; it doubles (with jitter) per attempt.
    #[serde(default = "defaults::retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    /// The longest wait between two attempts.
    #[serde(default = "defaults::retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// How long one request may take (beyond a receive's wait time) before
    /// it is abandoned and retried.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl std::fmt::Debug for SqsInputConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &str| if secret.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("SqsInputConfig")
            .field("queue_url", &self.queue_url)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("ca_file", &self.ca_file)
            .field("session_token", &redacted(&self.session_token))
            .field("pollers", &self.pollers)
            .field("max_messages", &self.max_messages)
            .field("wait_time_seconds", &self.wait_time_seconds)
            .field("visibility_timeout_seconds", &self.visibility_timeout_seconds)
            .field("max_in_flight_messages", &self.max_in_flight_messages)
            .field("retry_initial_backoff_ms", &self.retry_initial_backoff_ms)
            .field("retry_max_backoff_ms", &self.retry_max_backoff_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// The defaults of the optional keys, in one place.
mod defaults {
    pub(super) fn pollers() -> usize {
        4
    }

    pub(super) fn max_messages() -> usize {
        10
    }

    pub(super) fn wait_time_seconds() -> u64 {
        20
    }

    pub(super) fn visibility_timeout_seconds() -> u64 {
        60
    }

    pub(super) fn max_in_flight_messages() -> usize {
        5000
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

impl SqsInputConfig {
    /// Checks the options; connects to nothing yet.
    pub fn build(self) -> Result<SqsInput, SqsInputError> {
        let queue = QueueRef::parse(&self.queue_url).map_err(|problem| invalid("queue_url", problem))?;
        let connection = self.connection_settings(&queue)?;
        let poll = self.poll_settings()?;
        Ok(SqsInput::new(queue, connection, poll))
    }

    fn connection_settings(&self, queue: &QueueRef) -> Result<ConnectionSettings, SqsInputError> {
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
            OptionProblem::CaFile { path, reason } => SqsInputError::CaFile { path, reason },
        })
    }

    fn poll_settings(&self) -> Result<PollSettings, SqsInputError> {
        if !(1..=256).contains(&self.pollers) {
            return Err(invalid("pollers", "must be between 1 and 256"));
        }
        if !(1..=MAX_MESSAGES_PER_RECEIVE).contains(&self.max_messages) {
            return Err(invalid("max_messages", "must be between 1 and 10"));
        }
        if self.wait_time_seconds > MAX_WAIT_TIME_SECONDS {
            return Err(invalid("wait_time_seconds", "must be between 0 and 20"));
        }
        if !(MIN_VISIBILITY_TIMEOUT_SECONDS..=MAX_VISIBILITY_TIMEOUT_SECONDS).contains(&self.visibility_timeout_seconds)
        {
            return Err(invalid(
                "visibility_timeout_seconds",
                "must be between 5 and 43200 (12 hours)",
            ));
        }
        if self.max_in_flight_messages < self.max_messages {
            return Err(invalid(
                "max_in_flight_messages",
                "must be at least `max_messages`, or nothing could be received",
            ));
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
        Ok(PollSettings {
            pollers: self.pollers,
            max_messages: self.max_messages,
            wait_time: Duration::from_secs(self.wait_time_seconds),
            visibility_timeout: Duration::from_secs(self.visibility_timeout_seconds),
            max_in_flight_messages: self.max_in_flight_messages,
            backoff: Backoff::new(
                Duration::from_millis(self.retry_initial_backoff_ms),
                Duration::from_millis(self.retry_max_backoff_ms),
            ),
        })
    }
}

fn invalid(key: &'static str, problem: &'static str) -> SqsInputError {
    SqsInputError::InvalidOption { key, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> SqsInputConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_queue_alone_builds_with_the_defaults() {
        let config = parse(r#"queue_url = "event-queue""#);
        assert_eq!(config.pollers, 4);
        assert_eq!(config.max_messages, 10);
        assert_eq!(config.wait_time_seconds, 20);
        assert_eq!(config.visibility_timeout_seconds, 60);
        assert_eq!(config.max_in_flight_messages, 5000);
        assert!(config.build().is_ok());
    }

    #[test]
    fn the_queue_is_required_and_unknown_keys_are_rejected() {
        let error = toml::from_str::<SqsInputConfig>("pollers = 2").unwrap_err();
        assert!(error.to_string().contains("queue_url"), "{error}");
        let error = toml::from_str::<SqsInputConfig>("queue_url = \"q\"\nwait = 3").unwrap_err();
        assert!(error.to_string().contains("unknown field `wait`"), "{error}");
    }

    #[test]
    fn the_secret_key_stays_out_of_debug_output() {
        let config = parse("queue_url = \"q\"\naccess_key_id = \"AKIA1\"\nsecret_access_key = \"s3cr3t\"");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", config.build().unwrap()).contains("s3cr3t"));
    }

    #[test]
    fn options_with_impossible_values_are_rejected() {
        let bad = [
            "queue_url = \"not a queue\"",
            "queue_url = \"q\"\nendpoint_url = \"localhost:4566\"",
            "queue_url = \"q\"\nsecret_access_key = \"s\"",
            "queue_url = \"q\"\npollers = 0",
            "queue_url = \"q\"\nmax_messages = 11",
            "queue_url = \"q\"\nwait_time_seconds = 21",
            "queue_url = \"q\"\nvisibility_timeout_seconds = 1",
            "queue_url = \"q\"\nmax_in_flight_messages = 5",
            "queue_url = \"q\"\nretry_initial_backoff_ms = 0",
            "queue_url = \"q\"\nrequest_timeout_ms = 0",
        ];
        for text in bad {
            assert!(parse(text).build().is_err(), "{text} was accepted");
        }
    }
}
