//! Reading a bulk response: what became of each item.
//!
//! Elasticsearch answers a bulk request with one item per action, in
//! request order, each with its own status. The request is asked to return
//! only `errors` and each item's `status` and `error`
//! ([`FILTER_PATH`]), which keeps large responses small.

use serde::Deserialize;

use crate::bulk::BulkAction;

/// The `filter_path` query that trims bulk responses to what is read here.
pub(crate) const FILTER_PATH: &str = "errors,items.*.status,items.*.error";

/// A bulk response, trimmed by [`FILTER_PATH`].
#[derive(Debug, Deserialize)]
pub(crate) struct BulkResponse {
    /// False when every item succeeded.
    #[serde(default)]
    pub(crate) errors: bool,
    /// One per action, in request order. Absent when the filter removed
    /// everything (an empty request).
    #[serde(default)]
    pub(crate) items: Vec<BulkItem>,
}

/// One item: the result under its action's name.
#[derive(Debug, Deserialize)]
pub(crate) struct BulkItem {
    #[serde(alias = "create", alias = "update", alias = "delete")]
    index: ItemResult,
}

#[derive(Debug, Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

/// Elasticsearch's description of an item failure.
#[derive(Debug, Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    caused_by: Option<Box<ItemError>>,
}

/// What to do with an event after its item's result.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ItemOutcome {
    /// Stored (or, for `create`, already stored).
    Stored,
    /// Throttled or a transient server failure: send again.
    Retry,
    /// Refused for good: the reason, for the dead-letter file.
    Reject(String),
}

impl BulkItem {
    /// Classifies the item of an event sent with `action`.
    pub(crate) fn outcome(&self, action: BulkAction) -> ItemOutcome {
        let status = self.index.status;
        match status {
            200..=299 => ItemOutcome::Stored,
            // `create` never overwrites: a conflict means the document (this
            // event, sent before) is already there.
            409 if action == BulkAction::Create => ItemOutcome::Stored,
            429 | 500..=599 => ItemOutcome::Retry,
            _ => ItemOutcome::Reject(self.reason()),
        }
    }

    /// `400 mapper_parsing_exception: failed to parse ... (caused by ...)`.
    pub(crate) fn reason(&self) -> String {
        let mut reason = self.index.status.to_string();
        let mut error = self.index.error.as_ref();
        let mut first = true;
        while let Some(current) = error {
            reason.push_str(if first { " " } else { " (caused by " });
            reason.push_str(current.kind.as_deref().unwrap_or("error"));
            if let Some(text) = &current.reason {
                reason.push_str(": ");
                reason.push_str(text);
            }
            if !first {
                reason.push(')');
            }
            first = false;
            error = current.caused_by.as_deref();
        }
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(json: &str) -> Vec<BulkItem> {
        serde_json::from_str::<BulkResponse>(json).unwrap().items
    }

    #[test]
    fn statuses_decide_each_outcome() {
        let items = items(
            r#"{"errors": true, "items": [
                {"index": {"status": 201}},
                {"index": {"status": 200}},
                {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
                {"index": {"status": 503, "error": {"type": "unavailable_shards_exception"}}},
                {"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad"}}},
                {"index": {"status": 404, "error": {"type": "index_not_found_exception", "reason": "no such index"}}},
                {"index": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}}
            ]}"#,
        );
        let outcomes: Vec<ItemOutcome> = items.iter().map(|item| item.outcome(BulkAction::Index)).collect();
        assert_eq!(
            outcomes,
            [
                ItemOutcome::Stored,
                ItemOutcome::Stored,
                ItemOutcome::Retry,
                ItemOutcome::Retry,
                ItemOutcome::Reject("400 mapper_parsing_exception: bad".into()),
                ItemOutcome::Reject("404 index_not_found_exception: no such index".into()),
                ItemOutcome::Reject("409 version_conflict_engine_exception".into()),
            ]
        );
    }

    #[test]
    fn a_conflict_on_create_means_already_stored() {
        let items = items(r#"{"errors": true, "items": [{"create": {"status": 409}}]}"#);
        assert_eq!(items[0].outcome(BulkAction::Create), ItemOutcome::Stored);
    }

    #[test]
    fn the_reason_follows_the_cause_chain() {
        let items = items(
            r#"{"items": [{"index": {"status": 400, "error": {
                "type": "mapper_parsing_exception", "reason": "failed to parse field [data.n] of type [long]",
                "caused_by": {"type": "illegal_argument_exception", "reason": "For input string: \"x\""}}}}]}"#,
        );
        assert_eq!(
            items[0].reason(),
            "400 mapper_parsing_exception: failed to parse field [data.n] of type [long] \
             (caused by illegal_argument_exception: For input string: \"x\")"
        );
    }

    #[test]
    fn a_response_without_errors_or_items_parses() {
        let response: BulkResponse = serde_json::from_str("{}").unwrap();
        assert!(!response.errors);
        assert!(response.items.is_empty());
    }
}
