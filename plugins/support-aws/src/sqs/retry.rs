//! What a failed SQS request means, for the input's logs and retries and
//! for the events an output sends.
//!
//! Only one kind of failure is the events' fault: a request SQS refuses
//! because of what a message holds (too long, characters SQS does not
//! allow), which a sender narrows down to the refused messages and sends to
//! the dead-letter file; a receiver never meets it. Everything else is about
//! the service, the network or the setup (throttling, 5xx, timeouts,
//! credentials, permissions, KMS, a deleted queue) and is retried without
//! limit with the shared [`Backoff`](eventstash_plugin_api::Backoff):
//! receiving, extending visibility, deleting and sending are all safe to
//! repeat. The kinds differ only in how loudly they are logged.
//!
//! SQS speaks JSON with the codes of its older query protocol, so a code
//! may come in either spelling (`QueueDoesNotExist` or
//! `AWS.SimpleQueueService.NonExistentQueue`); both are listed.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use eventstash_plugin_api::error_chain;

/// How a request, or one entry of a batch, failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// SQS asks us to slow down: retry after a backoff.
    Throttled,
    /// SQS refuses what a message holds: find it and dead-letter it.
    Refused,
    /// The service or the network failed: retry.
    Transient,
    /// Retrying will not help until an operator acts (credentials,
    /// permissions, KMS, the queue), but the events wait rather than get lost.
    NeedsOperator,
}

/// A failed request: its kind and a message for logs and dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFailure {
    pub kind: FailureKind,
    pub reason: String,
}

/// Error codes that mean "slow down".
const THROTTLING: &[&str] = &[
    "RequestThrottled",
    "ThrottlingException",
    "AWS.SimpleQueueService.RequestThrottled",
    "KmsThrottled",
    "KMS.ThrottlingException",
    "OverLimit",
];
/// Error codes that blame a message's content.
const REFUSED: &[&str] = &[
    "InvalidMessageContents",
    "InvalidParameterValue",
    "InvalidAttributeValue",
    "InvalidAttributeName",
    "MessageTooLong",
    "BatchRequestTooLong",
    "AWS.SimpleQueueService.BatchRequestTooLong",
];

/// Classifies an SDK error of any SQS operation.
pub fn classify<E>(error: &SdkError<E>) -> RequestFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let service_error = context.err();
            let code = service_error.code();
            let reason = match (code, service_error.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                (None, _) => format!("HTTP {status}: {}", error_chain(error)),
            };
            RequestFailure {
                kind: kind_of(code, status),
                reason,
            }
        }
        // Before sending: no credentials, a bad endpoint. Network failures
        // (I/O, timeouts) are the transient ones.
        SdkError::ConstructionFailure(_) => RequestFailure {
            kind: FailureKind::NeedsOperator,
            reason: error_chain(error),
        },
        SdkError::DispatchFailure(failure) if !(failure.is_io() || failure.is_timeout()) => RequestFailure {
            kind: FailureKind::NeedsOperator,
            reason: error_chain(error),
        },
        _ => RequestFailure {
            kind: FailureKind::Transient,
            reason: error_chain(error),
        },
    }
}

/// The kind of one failed entry of a batch: only a sender's fault with a
/// content code blames the message; SQS's own faults are retried.
pub fn entry_kind(code: &str, sender_fault: bool) -> FailureKind {
    match kind_of(Some(code), 400) {
        FailureKind::Refused if sender_fault => FailureKind::Refused,
        FailureKind::Throttled => FailureKind::Throttled,
        _ if sender_fault => FailureKind::NeedsOperator,
        _ => FailureKind::Transient,
    }
}

/// The kind of a service error from its code and HTTP status.
fn kind_of(code: Option<&str>, status: u16) -> FailureKind {
    match code {
        Some(code) if THROTTLING.contains(&code) => FailureKind::Throttled,
        Some(code) if REFUSED.contains(&code) => FailureKind::Refused,
        _ if status == 429 => FailureKind::Throttled,
        _ if status >= 500 => FailureKind::Transient,
        // Other 4xx: access denied, unknown or expired credentials, bad
        // signature (clock skew), a deleted queue. Not the events' fault.
        _ => FailureKind::NeedsOperator,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_recognised_by_code_or_status() {
        for code in ["RequestThrottled", "ThrottlingException", "KmsThrottled"] {
            assert_eq!(kind_of(Some(code), 400), FailureKind::Throttled, "{code}");
        }
        assert_eq!(kind_of(None, 429), FailureKind::Throttled);
    }

    #[test]
    fn only_content_errors_blame_the_messages() {
        assert_eq!(kind_of(Some("InvalidMessageContents"), 400), FailureKind::Refused);
        assert_eq!(
            kind_of(Some("AWS.SimpleQueueService.BatchRequestTooLong"), 400),
            FailureKind::Refused
        );
        for code in [
            "AWS.SimpleQueueService.NonExistentQueue",
            "AccessDenied",
            "KmsAccessDenied",
        ] {
            assert_eq!(kind_of(Some(code), 400), FailureKind::NeedsOperator, "{code}");
        }
        assert_eq!(kind_of(Some("InternalError"), 500), FailureKind::Transient);
    }

    #[test]
    fn a_failed_entry_is_dead_lettered_only_for_its_own_content() {
        assert_eq!(entry_kind("InvalidMessageContents", true), FailureKind::Refused);
        assert_eq!(entry_kind("InvalidMessageContents", false), FailureKind::Transient);
        assert_eq!(entry_kind("InternalError", false), FailureKind::Transient);
        assert_eq!(entry_kind("RequestThrottled", true), FailureKind::Throttled);
        assert_eq!(entry_kind("KmsAccessDenied", true), FailureKind::NeedsOperator);
    }
}
