//! What a failed DynamoDB request means for the events in it.
//!
//! Only one kind of failure is the events' fault: a request DynamoDB refuses
//! as invalid (`ValidationException`), which the writer narrows down to the
//! refused items and sends to the dead-letter file. Everything else is
//! about the service, the network or the setup (throttling, 5xx, timeouts,
//! credentials, permissions, a missing table) and is retried without limit
//! with the shared [`Backoff`](eventstash_plugin_api::Backoff): the events
//! wait (and their producers with them) until it passes or shutdown ends
//! the wait. The kinds differ only in how loudly they are logged.
//!
//! The SDK's own retries are turned off (see `client.rs`), so every attempt
//! is counted and logged here.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use eventstash_plugin_api::error_chain;

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// DynamoDB asks us to slow down: retry after a backoff.
    Throttled,
    /// The request is invalid because of an item in it: find the item and
    /// dead-letter it.
    Refused,
    /// The service or the network failed: retry.
    Transient,
    /// Retrying will not help until an operator acts (credentials,
    /// permissions, the table), but the events wait rather than get lost.
    NeedsOperator,
}

/// A failed request: its kind and a message for logs and dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestFailure {
    pub(crate) kind: FailureKind,
    pub(crate) reason: String,
}

/// Error codes that mean "slow down".
const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "LimitExceededException",
];
/// Error codes that blame the request's content.
const REFUSED: &[&str] = &["ValidationException", "ItemCollectionSizeLimitExceededException"];

/// Classifies an SDK error of any DynamoDB operation.
pub(crate) fn classify<E>(error: &SdkError<E>) -> RequestFailure
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

/// The kind of a service error from its code and HTTP status.
fn kind_of(code: Option<&str>, status: u16) -> FailureKind {
    match code {
        Some(code) if THROTTLING.contains(&code) => FailureKind::Throttled,
        Some(code) if REFUSED.contains(&code) => FailureKind::Refused,
        _ if status == 429 => FailureKind::Throttled,
        _ if status >= 500 => FailureKind::Transient,
        // Other 4xx: access denied, unknown or expired credentials, bad
        // signature (clock skew), missing table. Not the events' fault.
        _ => FailureKind::NeedsOperator,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_recognised_by_code_or_status() {
        for code in [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
        ] {
            assert_eq!(kind_of(Some(code), 400), FailureKind::Throttled, "{code}");
        }
        assert_eq!(kind_of(None, 429), FailureKind::Throttled);
    }

    #[test]
    fn only_validation_blames_the_items() {
        assert_eq!(kind_of(Some("ValidationException"), 400), FailureKind::Refused);
        assert_eq!(
            kind_of(Some("ResourceNotFoundException"), 400),
            FailureKind::NeedsOperator
        );
        assert_eq!(kind_of(Some("AccessDeniedException"), 400), FailureKind::NeedsOperator);
        assert_eq!(
            kind_of(Some("UnrecognizedClientException"), 400),
            FailureKind::NeedsOperator
        );
    }

    #[test]
    fn server_errors_are_transient() {
        assert_eq!(kind_of(Some("InternalServerError"), 500), FailureKind::Transient);
        assert_eq!(kind_of(None, 503), FailureKind::Transient);
        assert_eq!(kind_of(Some("ServiceUnavailable"), 503), FailureKind::Transient);
    }
}
