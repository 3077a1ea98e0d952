//! A received message as an event. Three shapes are told apart:
//!
//! - **A document of the SQS output** (`{"index","kind","format","data",
//!   "id","@timestamp"}`, the JSON line the file output writes): the same
//!   event again, with its id, kind, index, format, payload and
//!   `@timestamp`, so a store agent writes exactly what a front agent
//!   received. Undecoded protobuf (`raw`) stays undecoded, for a protobuf
//!   filter on this side; `invalidJson` and `invalidProto` stay flagged.
//! - **A gateway message** of the SQS → Lambda → DynamoDB design
//!   (`{"requestId","timestamp","id","type","source","data"}`): an event
//!   with the message's `id`, `kind` = `type`, `@timestamp` = `timestamp`,
//!   and the whole message as its JSON data, so that templates reach every
//!   field (`%{[data][requestId]}`, `%{[data][timestamp]}`,
//!   `%{[data][source]}`). A gateway that sends the same JSON over gRPC
//!   (kind = type, id = id) makes the same event.
//! - **Anything else**: kept, never dropped, as an event flagged
//!   `invalidJson` whose `plain` is the body, with the `kind` and `id`
//!   message attributes if present, else `event` and the SQS message id.
//!
//! Wherever the message does not carry the time, `@timestamp` is the time
//! SQS received it (`SentTimestamp`), not the time this agent did: a message
//! handed out twice becomes the same event twice, with the same keys, so
//! the stores overwrite instead of duplicating.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use eventstash_plugin_api::{Event, Format, Payload, kebab_case};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The kind of events whose message names none.
const DEFAULT_KIND: &str = "event";

/// What decoding needs of a received message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received<'a> {
    /// The message body.
    pub(crate) body: &'a str,
    /// The SQS message id, the id of last resort.
    pub(crate) message_id: &'a str,
    /// The `kind` message attribute, if any.
    pub(crate) kind: Option<&'a str>,
    /// The `id` message attribute, if any.
    pub(crate) id: Option<&'a str>,
    /// When SQS received the message.
    pub(crate) sent_at: DateTime<Utc>,
}

/// The document the SQS output writes: `serde_json` of an [`Event`].
#[derive(Deserialize)]
struct StoredDocument<'a> {
    #[serde(default)]
    index: Option<String>,
    kind: String,
    format: &'a str,
    id: String,
    #[serde(rename = "@timestamp")]
    timestamp: &'a str,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    plain: Option<String>,
    #[serde(default)]
    raw: Option<&'a str>,
    #[serde(rename = "invalidJson", default)]
    invalid_json: bool,
    #[serde(rename = "invalidProto", default)]
    invalid_proto: bool,
    /// The producer that sent it to the first agent, when that agent knew.
    #[serde(default)]
    source: Option<String>,
}

/// The message a gateway publishes in the SQS → Lambda → DynamoDB design.
/// Only the fields that name the event are read here; the whole message
/// becomes the event's data.
#[derive(Deserialize)]
struct GatewayMessage {
    #[serde(rename = "requestId")]
    _request_id: String,
    timestamp: String,
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The event a message carries; see the module documentation.
pub(crate) fn decode(message: Received<'_>) -> Event {
    if let Some(event) = stored_document(message.body) {
        return event;
    }
    if let Some(event) = gateway_message(message) {
        return event;
    }
    unknown(message)
}

fn stored_document(body: &str) -> Option<Event> {
    let document: StoredDocument<'_> = serde_json::from_str(body).ok()?;
    let received_at = parse_time(document.timestamp)?;
    let raw = match document.raw {
        Some(text) => Some(Bytes::from(BASE64.decode(text).ok()?)),
        None => None,
    };
    let (format, payload) = match (document.format, raw, document.data) {
        ("JSON", raw, _) if document.invalid_json => (
            Format::Json,
            Payload::InvalidJson {
                plain: document.plain.unwrap_or_default(),
                raw,
            },
        ),
        ("JSON", None, data) => (Format::Json, json_payload(data)),
        ("PROTOBUF", Some(bytes), None) if document.invalid_proto => (Format::Protobuf, Payload::InvalidProto(bytes)),
        ("PROTOBUF", Some(bytes), None) => (Format::Protobuf, Payload::Protobuf(bytes)),
        // Decoded by a protobuf filter before it was sent.
        ("PROTOBUF", None, Some(data)) => (Format::Protobuf, json_payload(Some(data))),
        _ => return None,
    };
    Some(Event {
        index: document.index.unwrap_or_else(|| kebab_case(&document.kind)),
        id: document.id,
        kind: document.kind,
        format,
        payload,
        received_at,
        source: document.source,
    })
}

/// JSON data as read from a document: kept as text when it is on one line
/// (as the output writes it), else validated and compacted again.
fn json_payload(data: Option<&RawValue>) -> Payload {
    match data {
        Some(data) if !data.get().contains(['\n', '\r']) => Payload::Json(data.to_owned()),
        Some(data) => Payload::decode(Format::Json, Bytes::copy_from_slice(data.get().as_bytes())),
        // `"data": null` is the JSON payload `null`.
        None => Payload::decode(Format::Json, Bytes::from_static(b"null")),
    }
}

fn gateway_message(message: Received<'_>) -> Option<Event> {
    let gateway: GatewayMessage = serde_json::from_str(message.body).ok()?;
    let kind = non_empty(gateway.kind).unwrap_or_else(|| DEFAULT_KIND.to_owned());
    Some(Event {
        index: kebab_case(&kind),
        id: non_empty(gateway.id).unwrap_or_else(|| message.message_id.to_owned()),
        kind,
        format: Format::Json,
        payload: Payload::decode(Format::Json, Bytes::copy_from_slice(message.body.as_bytes())),
        received_at: parse_time(&gateway.timestamp).unwrap_or(message.sent_at),
        source: None,
    })
}

fn unknown(message: Received<'_>) -> Event {
    let kind = message
        .kind
        .filter(|kind| !kind.is_empty())
        .unwrap_or(DEFAULT_KIND)
        .to_owned();
    let id = message.id.filter(|id| !id.is_empty()).unwrap_or(message.message_id);
    Event {
        index: kebab_case(&kind),
        id: id.to_owned(),
        kind,
        format: Format::Json,
        payload: Payload::InvalidJson {
            plain: message.body.to_owned(),
            raw: None,
        },
        received_at: message.sent_at,
        source: None,
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sent_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    fn received(body: &str) -> Received<'_> {
        Received {
            body,
            message_id: "msg-1",
            kind: None,
            id: None,
            sent_at: sent_at(),
        }
    }

    fn document(event: &Event) -> String {
        serde_json::to_string(event).unwrap()
    }

    fn round_trip(event: &Event) -> Event {
        let body = document(event);
        decode(received(&body))
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 1, 40).unwrap() + chrono::Duration::milliseconds(123)
    }

    #[test]
    fn a_document_of_the_sqs_output_becomes_the_same_event() {
        let cases = [
            Event::new(
                Format::Json,
                Bytes::from_static(br#"{"n":12345678901234567890123,"s":"x\ny"}"#),
                "contact.AddressBook".into(),
                "e-1".into(),
                at(),
            ),
            Event::new(
                Format::Json,
                Bytes::from_static(b"null"),
                "k".into(),
                "e-2".into(),
                at(),
            ),
            Event::new(
                Format::Json,
                Bytes::from_static(b"{oops"),
                "k".into(),
                "e-3".into(),
                at(),
            ),
            Event::new(
                Format::Json,
                Bytes::from_static(b"\xff{"),
                "k".into(),
                "e-4".into(),
                at(),
            ),
            Event::new(
                Format::Protobuf,
                Bytes::from_static(&[10, 1, 97]),
                "k".into(),
                "e-5".into(),
                at(),
            ),
            {
                let mut event = Event::new(Format::Protobuf, Bytes::new(), "k".into(), "e-6".into(), at());
                event.payload = Payload::InvalidProto(Bytes::from_static(&[0xff]));
                event
            },
            {
                let mut event = Event::new(Format::Protobuf, Bytes::new(), "k.Msg".into(), "e-7".into(), at());
                event.payload = Payload::Value(serde_json::json!({"decoded": true}));
                event
            },
            {
                let mut event = Event::new(Format::Json, Bytes::from_static(b"{}"), "k".into(), "e-8".into(), at());
                event.source = Some("billing".into());
                event
            },
        ];
        for event in cases {
            let again = round_trip(&event);
            assert_eq!(document(&again), document(&event));
            assert_eq!(again.received_at, event.received_at);
            assert_eq!(again.format, event.format);
            assert_eq!(again.index, event.index);
            assert_eq!(again.source, event.source);
        }
    }

    #[test]
    fn undecoded_protobuf_stays_bytes_for_a_filter_here() {
        let event = Event::new(
            Format::Protobuf,
            Bytes::from_static(&[10, 1, 97]),
            "k".into(),
            "e".into(),
            at(),
        );
        assert!(matches!(round_trip(&event).payload, Payload::Protobuf(bytes) if bytes[..] == [10, 1, 97]));
    }

    #[test]
    fn a_document_written_on_several_lines_is_compacted() {
        let body = "{\"kind\":\"k\",\"format\":\"JSON\",\"id\":\"e\",\"@timestamp\":\"2026-11-23T09:01:40.000Z\",\n\"data\": {\n \"a\": 1\n}}";
        let event = decode(received(body));
        assert!(document(&event).contains(r#""data":{"a":1}"#), "{}", document(&event));
        assert_eq!(event.index, "k");
    }

    #[test]
    fn a_gateway_message_keeps_every_field_as_data() {
        let body = r#"{"requestId":"r-1","timestamp":"2020-05-01T20:00:00Z","id":"e-9","type":"MICROSERVICE_REQUEST","source":"Gateway","data":{"Name":"Microservice A"}}"#;
        let event = decode(received(body));
        assert_eq!(event.id, "e-9");
        assert_eq!(event.kind, "MICROSERVICE_REQUEST");
        assert_eq!(event.format, Format::Json);
        assert_eq!(event.received_at, Utc.with_ymd_and_hms(2020, 5, 1, 20, 0, 0).unwrap());
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(event.field(&path(&["data", "requestId"])).as_deref(), Some("r-1"));
        assert_eq!(
            event.field(&path(&["data", "timestamp"])).as_deref(),
            Some("2020-05-01T20:00:00Z")
        );
        assert_eq!(event.field(&path(&["data", "source"])).as_deref(), Some("Gateway"));
        assert_eq!(
            event.field(&path(&["data", "data", "Name"])).as_deref(),
            Some("Microservice A")
        );
    }

    #[test]
    fn a_gateway_message_without_a_usable_time_or_id_falls_back_to_sqs() {
        let body = r#"{"requestId":"r","timestamp":"yesterday","id":"","type":"","data":{}}"#;
        let event = decode(received(body));
        assert_eq!(event.received_at, sent_at());
        assert_eq!(event.id, "msg-1");
        assert_eq!(event.kind, "event");
    }

    #[test]
    fn anything_else_is_kept_and_flagged() {
        for body in ["not json", r#"{"hello":"world"}"#, "[1,2]", ""] {
            let event = decode(received(body));
            let doc: serde_json::Value = serde_json::from_str(&document(&event)).unwrap();
            assert_eq!(doc["invalidJson"], true, "{body}");
            assert_eq!(doc["plain"], body);
            assert_eq!(doc["id"], "msg-1");
            assert_eq!(doc["kind"], "event");
            assert_eq!(event.received_at, sent_at());
        }
        let mut message = received("<xml/>");
        message.kind = Some("legacy.Xml");
        message.id = Some("x-1");
        let event = decode(message);
        assert_eq!(
            (event.kind.as_str(), event.id.as_str(), event.index.as_str()),
            ("legacy.Xml", "x-1", "legacy-xml")
        );
    }

    #[test]
    fn a_damaged_document_is_kept_not_trusted() {
        let body = r#"{"kind":"k","format":"PROTOBUF","id":"e","@timestamp":"2026-11-23T09:01:40.000Z","raw":"!!"}"#;
        let event = decode(received(body));
        assert!(matches!(event.payload, Payload::InvalidJson { .. }));
        assert_eq!(event.id, "msg-1");
    }
}
