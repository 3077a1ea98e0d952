//! `eventstash read` and `eventstash replay`: the event store and the
//! replay sources of a pipeline file, read straight from the stores (no
//! agent needed), written as JSON lines for operators and scripts.
//!
//! `read` writes one line per change set: `aggregate_id`, `aggregate_type`,
//! `version`, `change_set_id`, `timestamp` and `events`, the stored
//! documents. `replay` writes one line per event: `cursor`, `event` (the
//! stored document) and, from the event store, `aggregate_id`, `version`
//! and `change_set_id`. A page is written (and flushed) as soon as it is
//! read, so a replay of millions of events holds one page.

use std::io::Write;
use std::sync::Arc;

use eventstash_plugin_api::{
    EventStore, EventStoreError, MAX_REPLAY_PAGE, MAX_VERSION, ReplayCursor, ReplayError, ReplayQuery, ReplaySelector,
    ReplaySource, parse_timestamp,
};
use serde_json::json;

/// Change sets read per request.
const READ_PAGE: usize = 100;

/// Why a read or replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum StoreCliError {
    /// The arguments cannot be used (a bad time, a bad cursor).
    #[error("{0}")]
    Usage(String),
    /// The store failed.
    #[error("{0}")]
    Store(String),
    /// Standard output is gone (a closed pipe) or failing.
    #[error("cannot write: {0}")]
    Output(#[from] std::io::Error),
}

/// What `replay` is asked for.
#[derive(Debug)]
pub struct ReplayArgs {
    /// Which events.
    pub selector: ReplaySelector,
    /// RFC 3339, inclusive.
    pub from: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// Resume after this cursor.
    pub cursor: Option<String>,
    /// Events per request to the store.
    pub page_size: usize,
    /// Stop after this many events.
    pub limit: Option<u64>,
}

/// Where a replay stopped.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Events written.
    pub events: u64,
    /// The cursor of the last event written.
    pub last_cursor: Option<String>,
    /// True when the replay reached the end (not the limit).
    pub complete: bool,
}

/// Writes an aggregate's change sets from `from_version` on; returns how
/// many.
pub async fn read(
    store: Arc<dyn EventStore>,
    aggregate_id: &str,
    from_version: u64,
    out: &mut impl Write,
) -> Result<u64, StoreCliError> {
    let store_error = |error: EventStoreError| StoreCliError::Store(error.to_string());
    if from_version > MAX_VERSION {
        return Err(StoreCliError::Usage(format!(
            "--from-version must be at most {MAX_VERSION}"
        )));
    }
    if store.aggregate(aggregate_id).await.map_err(store_error)?.is_none() {
        return Err(store_error(EventStoreError::NotFound(aggregate_id.to_owned())));
    }
    let mut written = 0;
    let mut next = Some(from_version.max(1));
    while let Some(version) = next {
        let page = store
            .read_page(aggregate_id, version, READ_PAGE)
            .await
            .map_err(store_error)?;
        for change_set in &page.change_sets {
            let line = json!({
                "aggregate_id": change_set.aggregate_id,
                "aggregate_type": change_set.aggregate_type,
                "version": change_set.version,
                "change_set_id": change_set.change_set_id,
                "timestamp": change_set.stored_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "events": change_set.events,
            });
            serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        out.flush()?;
        next = page.next_version;
    }
    Ok(written)
}

/// Writes the replayed events; returns where it stopped.
pub async fn replay(
    source: Arc<dyn ReplaySource>,
    args: ReplayArgs,
    out: &mut impl Write,
) -> Result<ReplaySummary, StoreCliError> {
    let time = |name: &str, text: Option<&String>| {
        text.map(|text| parse_timestamp(text))
            .transpose()
            .map_err(|_| StoreCliError::Usage(format!("--{name} is not an RFC 3339 time")))
    };
    let query = ReplayQuery {
        selector: args.selector,
        from: time("from", args.from.as_ref())?,
        until: time("until", args.until.as_ref())?,
        page_size: args.page_size.clamp(1, MAX_REPLAY_PAGE),
    };
    let replay_error = |error: ReplayError| match error {
        ReplayError::Unavailable(reason) => StoreCliError::Store(reason),
        other => StoreCliError::Usage(other.to_string()),
    };
    let cursor = args.cursor.map(ReplayCursor::from_client);
    let mut reader = source.open(query, cursor).await.map_err(replay_error)?;
    let mut summary = ReplaySummary::default();
    let outcome = loop {
        let events = match reader.next_page().await {
            Ok(events) => events,
            Err(error) => break Err(replay_error(error)),
        };
        if events.is_empty() {
            summary.complete = true;
            break Ok(());
        }
        let reached_limit = match write_events(events, &mut summary, args.limit, out) {
            Ok(reached_limit) => reached_limit,
            Err(error) => break Err(error.into()),
        };
        if reached_limit {
            break Ok(());
        }
    };
    reader.close().await;
    outcome.map(|()| summary)
}

/// Writes one page of events; true once `limit` events are written.
fn write_events(
    events: Vec<eventstash_plugin_api::ReplayedEvent>,
    summary: &mut ReplaySummary,
    limit: Option<u64>,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    for replayed in events {
        let mut line = json!({"cursor": replayed.cursor.as_str(), "event": replayed.event});
        if let Some(change_set) = replayed.change_set {
            line["aggregate_id"] = json!(change_set.aggregate_id);
            line["aggregate_type"] = json!(change_set.aggregate_type);
            line["version"] = json!(change_set.version);
            line["change_set_id"] = json!(change_set.change_set_id);
        }
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        summary.events += 1;
        summary.last_cursor = Some(replayed.cursor.as_str().to_owned());
        if limit.is_some_and(|limit| summary.events >= limit) {
            out.flush()?;
            return Ok(true);
        }
    }
    out.flush()?;
    Ok(false)
}
