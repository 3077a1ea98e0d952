//! The one error type of the client, and the answer to the question every
//! producer has after a failure: may I send these events again?
//!
//! The agent acknowledges a `StoreEvent` stream (`success: true`) only once
//! every event of it is safe (queued on disk or delivered by every output).
//! Any failure before that leaves the stream in an unknown state: none, some
//! or all of its events may have been stored. Sending the stream again is
//! then *resend safe* when the agent may take it next time (it was busy,
//! shutting down, unreachable, or the connection broke): delivery becomes
//! at-least-once, and an event sent twice is stored twice unless it carries
//! an id (outputs key documents by id, so a resent event with an id
//! overwrites itself). A refusal of the events themselves or of the
//! producer (bad argument, bad or missing token, a kind the token may not
//! write) is not resend safe: the same stream would be refused again.

use std::path::PathBuf;

use tonic::{Code, Status};

/// What failed in a call to the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent's address is not a valid URI.
    #[error("invalid agent address {uri:?}: {reason}")]
    InvalidUri {
        /// The address as given.
        uri: String,
        /// Why it is not valid.
        reason: String,
    },
    /// A TLS or token setting cannot be used.
    #[error("invalid client setting {setting}: {reason}")]
    InvalidSetting {
        /// The setting, as its builder method is named.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// No connection to the agent could be made (nothing was sent).
    #[error("cannot connect to {uri}: {source}")]
    Connect {
        /// The agent's address.
        uri: String,
        /// The transport's reason (refused, TLS handshake, timeout, ...).
        source: tonic::transport::Error,
    },
    /// The agent (or the transport on the way) answered with an error status.
    #[error("the agent answered {}: {}", .0.code(), .0.message())]
    Status(Status),
    /// The agent answered `success: false` (HFXEventStash servers can).
    #[error("the agent answered success: false; the events may not be stored")]
    NotAcknowledged,
    /// The batching sender was closed (or its task ended) before the call.
    #[error("the batching sender is closed")]
    Closed,
    /// Batches of a batching sender failed for good; their events may not
    /// be stored.
    #[error("{events} events in {batches} batches were not acknowledged; the first failure: {first}")]
    BatchesFailed {
        /// Events of the failed batches.
        events: usize,
        /// How many batches failed.
        batches: usize,
        /// The error of the first batch that failed.
        first: Box<Error>,
    },
}

impl Error {
    /// True when sending the same events again may succeed and is harmless
    /// apart from duplicates: nothing was acknowledged, and the cause was
    /// the agent's load or state, or the network (see the module docs).
    pub fn is_resend_safe(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::NotAcknowledged => true,
            Error::Status(status) => code_is_resend_safe(status.code()),
            Error::BatchesFailed { first, .. } => first.is_resend_safe(),
            Error::InvalidUri { .. } | Error::InvalidSetting { .. } | Error::ReadFile { .. } | Error::Closed => false,
        }
    }

    /// The gRPC status the agent answered, if it answered one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Status(status) => Some(status),
            Error::BatchesFailed { first, .. } => first.status(),
            _ => None,
        }
    }

    /// The gRPC code of the answer, if there was one.
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// An `Append` conflict's current version of the aggregate (ABORTED
    /// with the trailing metadata `x-current-version`): reload from it.
    pub fn current_version(&self) -> Option<i64> {
        self.metadata_number("x-current-version")
            .filter(|_| self.code() == Some(Code::Aborted))
    }

    /// An `Append` answered UNAVAILABLE after its change set was stored:
    /// the version it was stored as (`x-stored-version`).
    pub fn stored_version(&self) -> Option<i64> {
        self.metadata_number("x-stored-version")
    }

    fn metadata_number(&self, key: &str) -> Option<i64> {
        self.status()?.metadata().get(key)?.to_str().ok()?.parse().ok()
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::Status(status)
    }
}

/// Whether a stream that ended with `code` may be sent again.
///
/// UNAVAILABLE (the agent is shutting down, or could not make the events
/// safe) and RESOURCE_EXHAUSTED (the agent holds as much as it can) are the
/// agent's "retry later". CANCELLED, DEADLINE_EXCEEDED, UNKNOWN and INTERNAL
/// are what a connection broken mid-stream looks like to tonic. Everything
/// else (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, an `Append`'s
/// ABORTED conflict, ...) would be answered the same way again.
pub(crate) fn code_is_resend_safe(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_retry_later_answers_are_resend_safe() {
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::Cancelled,
            Code::Unknown,
        ] {
            assert!(Error::Status(Status::new(code, "x")).is_resend_safe(), "{code:?}");
        }
        assert!(Error::NotAcknowledged.is_resend_safe());
    }

    #[test]
    fn refusals_of_the_events_or_the_producer_are_not() {
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::AlreadyExists,
            Code::Aborted,
        ] {
            assert!(!Error::Status(Status::new(code, "x")).is_resend_safe(), "{code:?}");
        }
        assert!(!Error::Closed.is_resend_safe());
    }

    #[test]
    fn a_batch_failure_is_as_resend_safe_as_its_first_cause() {
        let failed = |code| Error::BatchesFailed {
            events: 10,
            batches: 1,
            first: Box::new(Error::Status(Status::new(code, "x"))),
        };
        assert!(failed(Code::Unavailable).is_resend_safe());
        assert!(!failed(Code::PermissionDenied).is_resend_safe());
        assert_eq!(failed(Code::PermissionDenied).code(), Some(Code::PermissionDenied));
    }

    #[test]
    fn a_conflict_names_the_current_version() {
        let mut status = Status::aborted("version conflict");
        status.metadata_mut().insert("x-current-version", "7".parse().unwrap());
        assert_eq!(Error::Status(status).current_version(), Some(7));
        assert_eq!(Error::Status(Status::unavailable("x")).current_version(), None);
    }
}
