//! Replay: streaming stored events back, in time order, page by page, from
//! the stores eventstash writes.
//!
//! A [`ReplaySource`] (the Elasticsearch output's indices, the DynamoDB
//! event table, the DynamoDB event store) opens a [`ReplayReader`] for a
//! [`ReplayQuery`]; the reader hands out one page at a time, so a replay of
//! millions of events holds one page in memory. Every event carries the
//! [`ReplayCursor`] that resumes right after it: a client that disconnects
//! sends its last cursor with the same query and gets the rest, each event
//! exactly once. Cursors are opaque to clients: base64 of a small JSON
//! value only the source that made it reads ([`ReplayCursor::encode`],
//! [`ReplayCursor::decode`]).

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::Event;

/// The most events a source fetches per page unless asked otherwise.
pub const DEFAULT_REPLAY_PAGE: usize = 500;
/// The most events a client may ask for per page.
pub const MAX_REPLAY_PAGE: usize = 10_000;
/// The longest cursor a source accepts, in bytes.
const MAX_CURSOR_BYTES: usize = 8 * 1024;

/// Which stored events to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelector {
    /// Events of one `kind`.
    Kind(String),
    /// Change sets of one aggregate type (the event store).
    AggregateType(String),
    /// Events of one `Source` (the DynamoDB event table).
    Source(String),
}

impl ReplaySelector {
    /// How the selector is named in messages.
    pub fn describe(&self) -> &'static str {
        match self {
            ReplaySelector::Kind(_) => "kind",
            ReplaySelector::AggregateType(_) => "aggregate type",
            ReplaySelector::Source(_) => "event source",
        }
    }
}

/// A replay request, checked.
#[derive(Debug, Clone)]
pub struct ReplayQuery {
    /// Which events.
    pub selector: ReplaySelector,
    /// The first instant included; `None`: from the beginning.
    pub from: Option<DateTime<Utc>>,
    /// The first instant excluded; `None`: up to now.
    pub until: Option<DateTime<Utc>>,
    /// Events fetched per request to the store.
    pub page_size: usize,
}

/// An event and where it was found.
#[derive(Debug, Clone)]
pub struct ReplayedEvent {
    /// The event, as stored.
    pub event: Event,
    /// Resumes the replay right after this event.
    pub cursor: ReplayCursor,
    /// The change set it belongs to, for events from the event store.
    pub change_set: Option<ChangeSetRef>,
}

/// The change set a replayed event belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSetRef {
    /// The aggregate.
    pub aggregate_id: String,
    /// Its type.
    pub aggregate_type: String,
    /// The change set's version.
    pub version: u64,
    /// The change set's id.
    pub change_set_id: String,
}

/// Where a replay resumes; opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayCursor(String);

impl ReplayCursor {
    /// Wraps a cursor a client sent back, unchecked (see [`Self::decode`]).
    pub fn from_client(text: impl Into<String>) -> ReplayCursor {
        ReplayCursor(text.into())
    }

    /// A cursor holding `position` as base64 JSON.
    pub fn encode(position: &impl Serialize) -> ReplayCursor {
        // Serializing plain data to a Vec cannot fail.
        let json = serde_json::to_vec(position).unwrap_or_default();
        ReplayCursor(URL_SAFE_NO_PAD.encode(json))
    }

    /// The position a cursor holds, or [`ReplayError::BadCursor`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ReplayError> {
        let bad = || ReplayError::BadCursor("not a cursor this store gave out".to_owned());
        if self.0.len() > MAX_CURSOR_BYTES {
            return Err(ReplayError::BadCursor(format!("longer than {MAX_CURSOR_BYTES} bytes")));
        }
        let json = URL_SAFE_NO_PAD.decode(self.0.trim()).map_err(|_| bad())?;
        serde_json::from_slice(&json).map_err(|_| bad())
    }

    /// The text sent to clients.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ReplayCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a replay failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    /// The cursor is not one this source gave out.
    #[error("malformed cursor: {0}")]
    BadCursor(String),
    /// The source cannot select events this way.
    #[error("{0}")]
    Unsupported(String),
    /// The store cannot be reached or keeps failing.
    #[error("{0}")]
    Unavailable(String),
}

/// A store that can replay what eventstash wrote to it.
#[async_trait]
pub trait ReplaySource: Send + Sync {
    /// Starts a replay, after `cursor` if given. Fails at once on a bad
    /// cursor or a selector the source does not index.
    async fn open(
        &self,
        query: ReplayQuery,
        cursor: Option<ReplayCursor>,
    ) -> Result<Box<dyn ReplayReader>, ReplayError>;
}

/// An open replay: pages of events in order.
#[async_trait]
pub trait ReplayReader: Send {
    /// The next events in order; empty once the replay is complete.
    async fn next_page(&mut self) -> Result<Vec<ReplayedEvent>, ReplayError>;

    /// Releases what the store holds for the replay (a point in time).
    /// Readers dropped without it let the store expire it.
    async fn close(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_a_bad_cursor() {
        let cursor = ReplayCursor::encode(&serde_json::json!({"after": [1, "x"]}));
        let back: serde_json::Value = cursor.decode().unwrap();
        assert_eq!(back, serde_json::json!({"after": [1, "x"]}));
        for garbage in ["", "%%%", "bm90IGpzb24", &"A".repeat(10_000)] {
            let result = ReplayCursor::from_client(garbage).decode::<serde_json::Value>();
            assert!(matches!(result, Err(ReplayError::BadCursor(_))), "{garbage:.20}");
        }
    }
}
