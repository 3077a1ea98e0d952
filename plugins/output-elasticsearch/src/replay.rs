//! Replay from Elasticsearch: the documents of one kind the output wrote,
//! in `@timestamp` order, page by page with `search_after` inside a point
//! in time, resumable by cursor.
//!
//! The source is built from the same `[[outputs]] type = "elasticsearch"`
//! table as the output, so it searches the indices the output writes: the
//! `index` template with `%{index}` rendered for the kind and every other
//! reference (dates) as `*` (`evt-contact-address-book-*`). Documents are
//! selected by the `index` field (the kebab-case of `kind`, as `keyword`
//! or as the `.keyword` sub-field dynamic mapping gives it) and checked
//! against `kind` exactly, since HFXEventStash's template maps `kind` as
//! analysed text.
//!
//! The sort is `@timestamp` then a unique keyword tie-breaker, the event
//! id: `id.keyword` under HFXEventStash's template and dynamic mapping, or
//! `id` where it is mapped as `keyword`; which one is read from the
//! mapping when a replay opens. A point in time (Elasticsearch's `_pit`, or
//! OpenSearch's `_search/point_in_time`, chosen by the cluster's answer to
//! `GET /`) keeps the pages consistent; it is kept alive two minutes
//! between pages and deleted when the replay ends. The cursor is the sort
//! values of an event, so a resumed replay opens a new point in time and
//! continues right after that event.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use elasticsearch::http::Method;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use eventstash_plugin_api::{
    Backoff, Event, PluginContext, ReplayCursor, ReplayError, ReplayQuery, ReplayReader, ReplaySelector, ReplaySource,
    ReplayedEvent, kebab_case, path_segment_escape,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tracing::debug;

use crate::cluster::{Cluster, status_failure};
use crate::config::{ElasticsearchOutputConfig, field_template};
use crate::error::ElasticsearchOutputError;
use crate::retry::{FailureKind, RequestFailure};

/// How long a point in time lives between two pages.
const KEEP_ALIVE: &str = "2m";
/// How long a replay request keeps retrying before the client is told.
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);
/// Tie-breaker fields, in order of preference.
const TIE_BREAKERS: [&str; 2] = ["id.keyword", "id"];

/// Replays the indices an Elasticsearch output writes.
#[derive(Debug)]
pub struct ElasticsearchReplay {
    /// The cluster, with the output's hosts, credentials and TLS.
    cluster: Arc<Cluster>,
    /// The output's `index` template, as written.
    index: String,
    /// Which point-in-time API the cluster speaks, asked once.
    api: OnceCell<PitApi>,
}

/// The point-in-time API of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PitApi {
    /// `POST /<index>/_pit`, `DELETE /_pit`.
    Elasticsearch,
    /// `POST /<index>/_search/point_in_time`, `DELETE /_search/point_in_time`.
    OpenSearch,
}

impl ElasticsearchOutputConfig {
    /// Builds the replay source of the indices this output writes; contacts
    /// nothing.
    pub fn build_replay(self, _ctx: &PluginContext) -> Result<ElasticsearchReplay, ElasticsearchOutputError> {
        let config = self.normalized();
        field_template("index", &config.index)?;
        let cluster = Cluster::new(config.cluster_settings()?)?;
        Ok(ElasticsearchReplay {
            cluster: Arc::new(cluster),
            index: config.index,
            api: OnceCell::new(),
        })
    }
}

/// The index pattern holding a kind's documents: `%{index}` rendered, any
/// other reference a wildcard.
fn index_pattern(template: &str, kind: &str) -> String {
    let mut index = String::new();
    path_segment_escape(&kebab_case(kind), &mut index);
    let mut pattern = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("%{") {
        pattern.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            pattern.push('*');
            return pattern;
        };
        let reference = &rest[start + 2..start + end];
        if reference == "index" {
            pattern.push_str(&index);
        } else if !pattern.ends_with('*') {
            pattern.push('*');
        }
        rest = &rest[start + end + 1..];
    }
    pattern.push_str(rest);
    pattern
}

/// Where a replay resumes: the sort values of the last event sent, and the
/// kind replayed, so that a cursor cannot position another kind's replay.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Position {
    after: Vec<Value>,
    /// Absent in cursors of earlier versions, which are taken as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
}

#[async_trait]
impl ReplaySource for ElasticsearchReplay {
    async fn open(
        &self,
        query: ReplayQuery,
        cursor: Option<ReplayCursor>,
    ) -> Result<Box<dyn ReplayReader>, ReplayError> {
        let ReplaySelector::Kind(kind) = &query.selector else {
            return Err(ReplayError::Unsupported(format!(
                "Elasticsearch replays by kind, not by {}",
                query.selector.describe()
            )));
        };
        if kind.is_empty() {
            return Err(ReplayError::Unsupported(
                "the kind to replay must not be empty".to_owned(),
            ));
        }
        let after = match cursor {
            Some(cursor) => {
                let position: Position = cursor.decode()?;
                if position.after.len() != 2 {
                    return Err(ReplayError::BadCursor("not a cursor of this store".to_owned()));
                }
                if position.kind.as_ref().is_some_and(|replayed| replayed != kind) {
                    return Err(ReplayError::BadCursor(
                        "a cursor of a replay of another kind".to_owned(),
                    ));
                }
                Some(position.after)
            }
            None => None,
        };
        let pattern = index_pattern(&self.index, kind);
        let Some(tie_breaker) = self.tie_breaker(&pattern).await? else {
            debug!(%pattern, "no index to replay");
            return Ok(Box::new(Finished));
        };
        let api = *self.api.get_or_try_init(|| self.pit_api()).await?;
        let pit = self.open_pit(&pattern, api).await?;
        Ok(Box::new(ElasticsearchReader {
            cluster: self.cluster.clone(),
            api,
            pit: Some(pit),
            kind: kind.clone(),
            search: search_body(kind, &query, tie_breaker),
            after,
            done: false,
        }))
    }
}

impl ElasticsearchReplay {
    /// The tie-breaker every index of the pattern maps as `keyword`;
    /// `None` when no index matches.
    async fn tie_breaker(&self, pattern: &str) -> Result<Option<&'static str>, ReplayError> {
        let path = format!("{pattern}/_mapping/field/{}", TIE_BREAKERS.join(","));
        let mapping: Value = request(&self.cluster, Method::Get, &path, None).await?;
        let indices = mapping
            .as_object()
            .map(|o| o.values().collect::<Vec<_>>())
            .unwrap_or_default();
        if indices.is_empty() {
            return Ok(None);
        }
        let is_keyword = |index: &Value, field: &str| {
            let leaf = field.rsplit('.').next().unwrap_or(field);
            index["mappings"][field]["mapping"][leaf]["type"] == "keyword"
        };
        TIE_BREAKERS
            .into_iter()
            .find(|field| indices.iter().all(|index| is_keyword(index, field)))
            .map(Some)
            .ok_or_else(|| {
                ReplayError::Unavailable(format!(
                    "indices `{pattern}` have no `keyword` field `id.keyword` or `id` to order events with \
                     equal @timestamp; map `id` as keyword (or keep dynamic mapping's `.keyword`)"
                ))
            })
    }

    async fn pit_api(&self) -> Result<PitApi, ReplayError> {
        let info: Value = request(&self.cluster, Method::Get, "", None).await?;
        Ok(if info["version"]["distribution"] == "opensearch" {
            PitApi::OpenSearch
        } else {
            PitApi::Elasticsearch
        })
    }

    async fn open_pit(&self, pattern: &str, api: PitApi) -> Result<String, ReplayError> {
        let (path, field) = match api {
            PitApi::Elasticsearch => (format!("{pattern}/_pit?keep_alive={KEEP_ALIVE}"), "id"),
            PitApi::OpenSearch => (
                format!("{pattern}/_search/point_in_time?keep_alive={KEEP_ALIVE}"),
                "pit_id",
            ),
        };
        let opened: Value = request(&self.cluster, Method::Post, &path, None).await?;
        opened[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ReplayError::Unavailable(format!("opening a point in time on `{pattern}` gave no id")))
    }
}

/// The search body of every page, without `pit` and `search_after`.
fn search_body(kind: &str, query: &ReplayQuery, tie_breaker: &str) -> Value {
    let index = kebab_case(kind);
    let mut filter = vec![json!({"bool": {
        "should": [{"term": {"index": index}}, {"term": {"index.keyword": index}}],
        "minimum_should_match": 1
    }})];
    let mut range = serde_json::Map::new();
    if let Some(from) = query.from {
        range.insert("gte".to_owned(), Value::String(millis(from)));
    }
    if let Some(until) = query.until {
        range.insert("lt".to_owned(), Value::String(millis(until)));
    }
    if !range.is_empty() {
        filter.push(json!({"range": {"@timestamp": range}}));
    }
    json!({
        "size": query.page_size,
        "query": {"bool": {"filter": filter}},
        "sort": [{"@timestamp": {"order": "asc"}}, {tie_breaker: {"order": "asc"}}],
        "track_total_hits": false
    })
}

fn millis(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// An open replay.
struct ElasticsearchReader {
    cluster: Arc<Cluster>,
    api: PitApi,
    /// The point in time, renewed by every page.
    pit: Option<String>,
    /// The kind, checked exactly on every document.
    kind: String,
    /// The search body without `pit` and `search_after`.
    search: Value,
    /// The sort values of the last event handed out.
    after: Option<Vec<Value>>,
    done: bool,
}

/// One search page, borrowing the documents from the response body.
#[derive(Deserialize)]
struct SearchPage<'a> {
    #[serde(default)]
    pit_id: Option<String>,
    #[serde(borrow)]
    hits: Hits<'a>,
}

#[derive(Deserialize)]
struct Hits<'a> {
    #[serde(borrow)]
    hits: Vec<Hit<'a>>,
}

#[derive(Deserialize)]
struct Hit<'a> {
    #[serde(borrow, rename = "_source")]
    source: &'a RawValue,
    sort: Vec<Value>,
}

#[async_trait]
impl ReplayReader for ElasticsearchReader {
    async fn next_page(&mut self) -> Result<Vec<ReplayedEvent>, ReplayError> {
        // A page of documents of a lookalike kind is skipped, not the end.
        while !self.done {
            let mut body = self.search.clone();
            body["pit"] = json!({"id": self.pit, "keep_alive": KEEP_ALIVE});
            if let Some(after) = &self.after {
                body["search_after"] = Value::Array(after.clone());
            }
            let bytes = send(&self.cluster, Method::Post, "_search", Some(body)).await?;
            let page: SearchPage<'_> = serde_json::from_slice(&bytes)
                .map_err(|error| ReplayError::Unavailable(format!("unreadable search response: {error}")))?;
            if let Some(pit) = page.pit_id {
                self.pit = Some(pit);
            }
            let size = self.search["size"].as_u64().unwrap_or(0) as usize;
            self.done = page.hits.hits.len() < size;
            let mut events = Vec::with_capacity(page.hits.hits.len());
            for hit in page.hits.hits {
                let cursor = ReplayCursor::encode(&Position {
                    after: hit.sort.clone(),
                    kind: Some(self.kind.clone()),
                });
                self.after = Some(hit.sort);
                let event = Event::from_document(hit.source.get())
                    .map_err(|error| ReplayError::Unavailable(format!("a stored document: {error}")))?;
                if event.kind == self.kind {
                    events.push(ReplayedEvent {
                        event,
                        cursor,
                        change_set: None,
                    });
                }
            }
            if !events.is_empty() {
                return Ok(events);
            }
        }
        Ok(Vec::new())
    }

    async fn close(mut self: Box<Self>) {
        let Some(pit) = self.pit.take() else { return };
        let (path, body) = match self.api {
            PitApi::Elasticsearch => ("_pit", json!({"id": pit})),
            PitApi::OpenSearch => ("_search/point_in_time", json!({"pit_id": [pit]})),
        };
        // Best effort: an undeleted point in time expires by itself.
        if let Err(error) = send(&self.cluster, Method::Delete, path, Some(body)).await {
            debug!(%error, "could not delete the replay's point in time");
        }
    }
}

/// A replay of nothing (no index matches).
struct Finished;

#[async_trait]
impl ReplayReader for Finished {
    async fn next_page(&mut self) -> Result<Vec<ReplayedEvent>, ReplayError> {
        Ok(Vec::new())
    }
}

/// Sends a request and parses its JSON answer.
async fn request(cluster: &Cluster, method: Method, path: &str, body: Option<Value>) -> Result<Value, ReplayError> {
    let bytes = send(cluster, method, path, body).await?;
    serde_json::from_slice(&bytes)
        .map_err(|error| ReplayError::Unavailable(format!("{path}: unreadable answer: {error}")))
}

/// Sends a request, retrying transient failures for up to
/// [`RETRY_TIMEOUT`]; the answer's body.
async fn send(cluster: &Cluster, method: Method, path: &str, body: Option<Value>) -> Result<Bytes, ReplayError> {
    let body = body.map(|body| Bytes::from(body.to_string()));
    let deadline = tokio::time::Instant::now() + RETRY_TIMEOUT;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let failure = match cluster.send(method, path, headers, None, body.clone()).await {
            Ok(response) if response.status_code().is_success() => {
                return response
                    .bytes()
                    .await
                    .map_err(|error| ReplayError::Unavailable(format!("{path}: reading the answer: {error}")));
            }
            Ok(response) => status_failure(response).await,
            Err(failure) => failure,
        };
        let RequestFailure { kind, message } = failure;
        let delay = backoff.next_delay();
        if kind != FailureKind::Transient || tokio::time::Instant::now() + delay > deadline {
            return Err(ReplayError::Unavailable(message));
        }
        debug!(%message, ?delay, "replay request failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_pattern_renders_the_kind_and_wildcards_the_rest() {
        assert_eq!(
            index_pattern("evt-%{index}-%{+xxxx-MM-ww}", "contact.AddressBook"),
            "evt-contact-address-book-*"
        );
        assert_eq!(index_pattern("events", "k"), "events");
        assert_eq!(index_pattern("%{[data][tenant]}-%{+YYYY}-%{index}", "k"), "*-*-k");
    }

    #[test]
    fn the_search_sorts_by_time_then_the_tie_breaker_and_filters_the_range() {
        let query = ReplayQuery {
            selector: ReplaySelector::Kind("billing.Invoice".into()),
            from: Some(DateTime::from_timestamp(0, 0).unwrap()),
            until: None,
            page_size: 500,
        };
        let body = search_body("billing.Invoice", &query, "id.keyword");
        assert_eq!(body["size"], 500);
        assert_eq!(body["sort"][1]["id.keyword"]["order"], "asc");
        assert_eq!(
            body["query"]["bool"]["filter"][1]["range"]["@timestamp"]["gte"],
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[tokio::test]
    async fn a_cursor_of_another_kinds_replay_is_refused_before_any_request() {
        let config: ElasticsearchOutputConfig = serde_json::from_str(r#"{"hosts": ["http://127.0.0.1:1"]}"#).unwrap();
        let replay = config.build_replay(&PluginContext::new("main", "es")).unwrap();
        let query = |kind: &str| ReplayQuery {
            selector: ReplaySelector::Kind(kind.into()),
            from: None,
            until: None,
            page_size: 10,
        };
        let cursor = ReplayCursor::encode(&Position {
            after: vec![Value::from(1), Value::from("e-1")],
            kind: Some("billing.Invoice".into()),
        });
        let refused = replay.open(query("contact.AddressBook"), Some(cursor)).await;
        assert!(matches!(refused, Err(ReplayError::BadCursor(_))));
    }
}
