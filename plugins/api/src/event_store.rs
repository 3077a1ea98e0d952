//! The event store: aggregates and their change sets, appended at an
//! expected version and read back in order.
//!
//! An aggregate (in the DDD sense) is kept as a little metadata: its id, its
//! type and its current version. A change set is what processing one command
//! produced: one or more events. Appending a change set at expected version
//! N stores it as version N+1 in one step with the aggregate's move from N
//! to N+1, so two writers can never both store version N+1: the loser gets
//! [`EventStoreError::Conflict`] with the version to reload from. A store
//! plugin implements [`EventStore`]; the gRPC input serves it; the engine
//! connects the two by the ids in the pipeline file.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::event::Event;

/// The largest version a store accepts, 2^53 − 1: the largest integer every
/// JSON reader holds exactly, so versions survive `eventstash read` output
/// and JavaScript clients.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// The version an append expects the aggregate to be at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The aggregate must not exist yet (wire value 0).
    NoAggregate,
    /// Whatever version it is at, or none (wire value −1).
    Any,
    /// Exactly this version, at least 1.
    Exactly(u64),
}

impl ExpectedVersion {
    /// Reads the wire form: 0 = no aggregate yet, −1 = any, N = exactly N.
    pub fn from_wire(version: i64) -> Result<ExpectedVersion, EventStoreError> {
        match version {
            0 => Ok(ExpectedVersion::NoAggregate),
            -1 => Ok(ExpectedVersion::Any),
            // The next version must still be valid.
            n if n > 0 && (n as u64) < MAX_VERSION => Ok(ExpectedVersion::Exactly(n as u64)),
            n if n > 0 => Err(EventStoreError::Invalid(format!(
                "expected_version {n} is too large: versions end at {MAX_VERSION}"
            ))),
            n => Err(EventStoreError::Invalid(format!(
                "expected_version {n} is not a version: use 0 (new aggregate), -1 (any) or the version you read"
            ))),
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::NoAggregate => f.write_str("no aggregate yet"),
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::Exactly(version) => write!(f, "version {version}"),
        }
    }
}

/// A change set to append.
#[derive(Debug, Clone)]
pub struct NewChangeSet {
    /// The aggregate it belongs to.
    pub aggregate_id: String,
    /// The aggregate's type; a new aggregate gets it, an existing one must
    /// have it.
    pub aggregate_type: String,
    /// Where the writer believes the aggregate is.
    pub expected: ExpectedVersion,
    /// Unique per change set: a re-sent id is recognised, not stored twice.
    pub change_set_id: String,
    /// The events, in order; at least one.
    pub events: Vec<Event>,
}

impl NewChangeSet {
    /// A fresh change set id (a UUID), for appends that name none.
    pub fn new_id() -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// A stored change set.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    /// The aggregate it belongs to.
    pub aggregate_id: String,
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The aggregate version it made, from 1.
    pub version: u64,
    /// The id it was appended with.
    pub change_set_id: String,
    /// When it was appended.
    pub stored_at: DateTime<Utc>,
    /// Its events, as stored (decoded by the pipeline's filters).
    pub events: Vec<Event>,
}

/// What an append did.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The version the change set is stored as.
    pub version: u64,
    /// True when the change set id was already stored: nothing was written,
    /// `version` is the one it was stored as the first time.
    pub already_stored: bool,
    /// The change set's events as stored (for a re-send, those of the first
    /// time), to be handed to the pipeline's other outputs.
    pub events: Vec<Event>,
}

/// An aggregate's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// Its id.
    pub id: String,
    /// Its type.
    pub aggregate_type: String,
    /// Its current version (that of its last change set).
    pub version: u64,
    /// When its first change set was appended, RFC 3339.
    pub created_at: String,
    /// When its last change set was appended, RFC 3339.
    pub updated_at: String,
}

/// One page of an aggregate's change sets.
#[derive(Debug, Clone, Default)]
pub struct ChangeSetPage {
    /// Change sets in version order.
    pub change_sets: Vec<ChangeSet>,
    /// Where the next page starts; `None` when this was the last.
    pub next_version: Option<u64>,
}

/// Why an event store operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventStoreError {
    /// The aggregate is not where the append expected it.
    #[error("aggregate `{aggregate_id}` is at version {current}, not at {expected}: read it again and retry")]
    Conflict {
        /// The aggregate.
        aggregate_id: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// Its version now (0: it does not exist).
        current: u64,
    },
    /// The aggregate exists with another type.
    #[error("aggregate `{aggregate_id}` is of type `{stored}`, not `{requested}`")]
    WrongType {
        /// The aggregate.
        aggregate_id: String,
        /// Its stored type.
        stored: String,
        /// The type the request named.
        requested: String,
    },
    /// The change set id was stored for another aggregate.
    #[error("change set id `{change_set_id}` was already used for aggregate `{aggregate_id}`; use a new id")]
    ChangeSetIdTaken {
        /// The id.
        change_set_id: String,
        /// The aggregate it was stored for.
        aggregate_id: String,
    },
    /// No such aggregate.
    #[error("aggregate `{0}` does not exist")]
    NotFound(String),
    /// The request cannot be stored as it is (too large, a bad value).
    #[error("{0}")]
    Invalid(String),
    /// The store's data contradicts itself; an operator must look.
    #[error("{0}")]
    Inconsistent(String),
    /// The store cannot be reached or keeps failing; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
}

/// An event store: appends change sets at an expected version and reads
/// them back. Implementations retry transient failures themselves.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Waits until the store can be used (its tables checked or created).
    /// The gRPC input calls it at start so that setup happens then, not on
    /// the first request.
    async fn ready(&self) -> Result<(), EventStoreError> {
        Ok(())
    }

    /// Appends a change set atomically with the aggregate's version move.
    async fn append(&self, change_set: NewChangeSet) -> Result<Appended, EventStoreError>;

    /// The aggregate's metadata, `None` if it does not exist.
    async fn aggregate(&self, aggregate_id: &str) -> Result<Option<Aggregate>, EventStoreError>;

    /// Up to `limit` change sets from `from_version` on (at least 1), in
    /// version order, read consistently.
    async fn read_page(
        &self,
        aggregate_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<ChangeSetPage, EventStoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_versions_map_to_expectations_and_absurd_ones_are_refused() {
        assert_eq!(ExpectedVersion::from_wire(0), Ok(ExpectedVersion::NoAggregate));
        assert_eq!(ExpectedVersion::from_wire(-1), Ok(ExpectedVersion::Any));
        assert_eq!(ExpectedVersion::from_wire(7), Ok(ExpectedVersion::Exactly(7)));
        for bad in [-2, i64::MIN, MAX_VERSION as i64, i64::MAX] {
            assert!(
                matches!(ExpectedVersion::from_wire(bad), Err(EventStoreError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
