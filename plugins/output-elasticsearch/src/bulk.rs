//! The bulk request body: for each event an action line naming its index
//! and id, then its document.
//!
//! A batch is encoded once. Each event's two lines are a span of one
//! buffer, so a retry of the few items Elasticsearch throttled sends just
//! their spans again, without rendering or serializing anything twice.
//!
//! An event whose `_id` Elasticsearch would refuse (empty, or over 512
//! bytes) is set aside here with the reason instead: Elasticsearch checks
//! ids before indexing anything and fails the whole bulk request for one bad
//! id, so sending it would fail every event of its batch, again and again.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use eventstash_plugin_api::{DocumentWriter, Event, FieldTemplate};
use serde::Deserialize;

use crate::error::ElasticsearchOutputError;

/// Bytes an action line adds to a document, besides index name and id;
/// used to size the buffer once per batch.
const ACTION_OVERHEAD: usize = 40;
/// The longest `_id` Elasticsearch takes, in bytes.
const MAX_ID_BYTES: usize = 512;

/// The bulk action each event is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    /// Create the document or replace the one with the same id.
    Index,
    /// Create the document; one with the same id is left as it is.
    Create,
}

impl BulkAction {
    fn as_str(self) -> &'static str {
        match self {
            BulkAction::Index => "index",
            BulkAction::Create => "create",
        }
    }
}

/// Turns events into bulk lines.
#[derive(Debug)]
pub(crate) struct BulkEncoder {
    action: BulkAction,
    index: FieldTemplate,
    document_id: FieldTemplate,
}

/// A batch's bulk lines, ready to send in whole or in part.
#[derive(Debug)]
pub(crate) struct EncodedBatch {
    /// Every sendable event's action line and document.
    lines: Bytes,
    /// Where each event's lines are in `lines`, in batch order (empty for
    /// a refused event).
    spans: Vec<Range<usize>>,
    /// The batch positions of the events that must not be sent, with why.
    refused: Vec<(usize, String)>,
}

impl BulkEncoder {
    pub(crate) fn new(action: BulkAction, index: FieldTemplate, document_id: FieldTemplate) -> BulkEncoder {
        BulkEncoder {
            action,
            index,
            document_id,
        }
    }

    /// The action every event is sent with.
    pub(crate) fn action(&self) -> BulkAction {
        self.action
    }

    /// Encodes `events` in order.
    pub(crate) fn encode(&self, events: &[&Event]) -> Result<EncodedBatch, ElasticsearchOutputError> {
        let capacity = events
            .iter()
            .map(|event| event.size_estimate() + ACTION_OVERHEAD + 2 * event.id.len())
            .sum();
        let mut lines = Vec::with_capacity(capacity);
        let mut spans = Vec::with_capacity(events.len());
        let mut refused = Vec::new();
        // Rendered into in place, so names and ids cost no allocation per event.
        let (mut index, mut id) = (String::new(), String::new());
        // Documents byte for byte as serde writes them, with what repeats
        // from event to event (a kind's escaped fields, a timestamp) kept.
        let mut documents = DocumentWriter::default();
        for (position, event) in events.iter().enumerate() {
            let start = lines.len();
            self.document_id.render_into(event, &mut id, push_str);
            if let Some(reason) = self.id_problem(&id) {
                refused.push((position, reason));
                spans.push(start..start);
                continue;
            }
            self.index.render_into(event, &mut index, push_str);
            self.push_event(&mut lines, &mut documents, event, &index, &id)
                .map_err(|error| ElasticsearchOutputError::Encode {
                    id: event.id.clone(),
                    error,
                })?;
            spans.push(start..lines.len());
        }
        Ok(EncodedBatch {
            lines: Bytes::from(lines),
            spans,
            refused,
        })
    }

    /// Why Elasticsearch would refuse `id` (and with it the whole request).
    fn id_problem(&self, id: &str) -> Option<String> {
        let template = self.document_id.as_str();
        if id.is_empty() {
            return Some(format!(
                "the document id (`document_id` = `{template}`) is empty, which Elasticsearch refuses"
            ));
        }
        (id.len() > MAX_ID_BYTES).then(|| {
            format!(
                "the document id (`document_id` = `{template}`) is {} bytes, over Elasticsearch's \
                 {MAX_ID_BYTES}-byte limit",
                id.len()
            )
        })
    }

    fn push_event(
        &self,
        lines: &mut Vec<u8>,
        documents: &mut DocumentWriter,
        event: &Event,
        index: &str,
        id: &str,
    ) -> Result<(), serde_json::Error> {
        lines.extend_from_slice(b"{\"");
        lines.extend_from_slice(self.action.as_str().as_bytes());
        lines.extend_from_slice(b"\":{\"_index\":");
        serde_json::to_writer(&mut *lines, index)?;
        lines.extend_from_slice(b",\"_id\":");
        serde_json::to_writer(&mut *lines, id)?;
        lines.extend_from_slice(b"}}\n");
        documents.write(event, lines)?;
        lines.push(b'\n');
        Ok(())
    }
}

/// Field values go into names and ids as they are: Logstash does not
/// escape them either, and Elasticsearch rejects (per item) what it cannot use.
fn push_str(value: &str, out: &mut String) {
    out.push_str(value);
}

impl EncodedBatch {
    /// The batch positions of the events to send, ascending.
    pub(crate) fn sendable(&self) -> Vec<usize> {
        let mut refused = self.refused.iter().map(|(position, _)| *position).peekable();
        (0..self.spans.len())
            .filter(|&position| refused.next_if_eq(&position).is_none())
            .collect()
    }

    /// The events that must not be sent, by batch position, with why.
    pub(crate) fn refused(&self) -> &[(usize, String)] {
        &self.refused
    }

    /// The size of the request body for the events at `positions`.
    pub(crate) fn size(&self, positions: &[usize]) -> usize {
        positions.iter().map(|&i| self.spans[i].len()).sum()
    }

    /// The request body for the events at `positions` (ascending sendable
    /// positions): the whole buffer, shared, when that is all of them.
    pub(crate) fn body(&self, positions: &[usize]) -> Bytes {
        if positions.len() + self.refused.len() == self.spans.len() {
            return self.lines.clone();
        }
        let mut body = BytesMut::with_capacity(self.size(positions));
        for &i in positions {
            body.extend_from_slice(&self.lines[self.spans[i].clone()]);
        }
        body.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::TimeZone;
    use eventstash_plugin_api::Format;
    use serde_json::Value;

    fn event(kind: &str, id: &str) -> Event {
        let at = chrono::Utc.with_ymd_and_hms(2021, 1, 1, 10, 0, 0).unwrap();
        let data = Bytes::from_static(br#"{"n":1}"#);
        Event::new(Format::Json, data, kind.into(), id.into(), at)
    }

    fn encoder(action: BulkAction) -> BulkEncoder {
        BulkEncoder::new(
            action,
            FieldTemplate::parse("evt-%{index}-%{+xxxx-MM-ww}").unwrap(),
            FieldTemplate::parse("%{id}").unwrap(),
        )
    }

    fn lines(body: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'), "bulk body must end with a newline");
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn each_event_is_an_action_line_and_its_document() {
        let (a, b) = (event("contact.AddressBook", "e-1"), event("x", "e\"2"));
        let batch = encoder(BulkAction::Index).encode(&[&a, &b]).unwrap();
        assert_eq!(batch.sendable(), [0, 1]);
        let lines = lines(&batch.body(&[0, 1]));
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            serde_json::json!({"index": {"_index": "evt-contact-address-book-2020-01-53", "_id": "e-1"}})
        );
        assert_eq!(lines[1]["kind"], "contact.AddressBook");
        assert_eq!(lines[1]["data"]["n"], 1);
        assert_eq!(lines[1]["@timestamp"], "2021-01-01T10:00:00.000Z");
        // Ids are JSON-escaped, not trusted.
        assert_eq!(lines[2]["index"]["_id"], "e\"2");
        assert_eq!(lines[3]["id"], "e\"2");
    }

    #[test]
    fn documents_are_the_events_serialized_byte_for_byte() {
        let (a, b, c) = (event("k", "1"), event("k", "2"), event("other.Kind", "3"));
        let batch = encoder(BulkAction::Index).encode(&[&a, &b, &c]).unwrap();
        let body = batch.body(&[0, 1, 2]);
        let text = std::str::from_utf8(&body).unwrap();
        let documents: Vec<&str> = text.lines().skip(1).step_by(2).collect();
        let expected: Vec<String> = [&a, &b, &c].iter().map(|e| serde_json::to_string(e).unwrap()).collect();
        assert_eq!(documents, expected);
    }

    #[test]
    fn create_uses_the_create_action() {
        let a = event("k", "1");
        let batch = encoder(BulkAction::Create).encode(&[&a]).unwrap();
        let lines = lines(&batch.body(&[0]));
        assert_eq!(lines[0]["create"]["_id"], "1");
    }

    #[test]
    fn a_partial_body_holds_only_the_chosen_events_in_order() {
        let events: Vec<Event> = (0..4).map(|i| event("k", &i.to_string())).collect();
        let refs: Vec<&Event> = events.iter().collect();
        let batch = encoder(BulkAction::Index).encode(&refs).unwrap();
        let lines = lines(&batch.body(&[1, 3]));
        let ids: Vec<&Value> = lines.iter().step_by(2).map(|l| &l["index"]["_id"]).collect();
        assert_eq!(ids, ["1", "3"]);
        assert_eq!(lines[1]["id"], "1");
        assert_eq!(lines[3]["id"], "3");
    }

    #[test]
    fn ids_elasticsearch_would_fail_the_request_for_are_set_aside() {
        let longest = "x".repeat(MAX_ID_BYTES);
        let too_long = "x".repeat(MAX_ID_BYTES + 1);
        let events = [event("k", "1"), event("k", &too_long), event("k", &longest)];
        let refs: Vec<&Event> = events.iter().collect();
        let batch = encoder(BulkAction::Index).encode(&refs).unwrap();
        assert_eq!(batch.sendable(), [0, 2]);
        let [(position, reason)] = batch.refused() else {
            panic!("{:?}", batch.refused())
        };
        assert_eq!(*position, 1);
        assert!(
            reason.contains("513 bytes, over Elasticsearch's 512-byte limit"),
            "{reason}"
        );
        let lines = lines(&batch.body(&batch.sendable()));
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2]["index"]["_id"], longest.as_str());

        let empty_id = BulkEncoder::new(
            BulkAction::Index,
            FieldTemplate::parse("i").unwrap(),
            FieldTemplate::parse("%{[data][empty]}").unwrap(),
        );
        let data = Bytes::from_static(br#"{"empty":""}"#);
        let event = Event::new(Format::Json, data, "k".into(), "1".into(), chrono::Utc::now());
        let batch = empty_id.encode(&[&event]).unwrap();
        assert!(batch.sendable().is_empty());
        assert!(batch.refused()[0].1.contains("is empty"), "{:?}", batch.refused());
    }

    #[test]
    fn the_whole_batch_body_is_shared_not_copied() {
        let a = event("k", "1");
        let batch = encoder(BulkAction::Index).encode(&[&a]).unwrap();
        assert_eq!(batch.body(&[0]).as_ptr(), batch.lines.as_ptr());
    }
}
