//! The way back: a stored document (or its parts, from a store that keeps
//! them as attributes) read into an [`Event`] again, and an event's payload
//! as the bytes a client gets, for replay and for reading change sets.
//!
//! This is the inverse of the [`Serialize`](serde::Serialize) impl in
//! `event.rs`: `data` comes back as JSON text (numbers exactly as stored),
//! `plain`/`raw` and the `invalidJson`/`invalidProto` flags come back as the
//! payload variants that wrote them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{Event, Format, Payload};

/// Why a stored document cannot be read back as an event.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// Not JSON, or not an object of the document's shape.
    #[error("not an eventstash document: {0}")]
    Shape(String),
    /// `@timestamp` is not an RFC 3339 time.
    #[error("`@timestamp` {0:?} is not an RFC 3339 time")]
    Timestamp(String),
    /// `raw` is not base64.
    #[error("`raw` is not base64")]
    Raw,
}

/// The payload fields of a stored event, as a store kept them.
#[derive(Debug, Clone, Default)]
pub struct StoredPayload {
    /// `data`: decoded JSON, as text.
    pub data: Option<Box<RawValue>>,
    /// `plain`: the text of a payload that is not valid JSON.
    pub plain: Option<String>,
    /// `raw`: the original bytes (undecoded protobuf, or JSON that was not
    /// UTF-8).
    pub raw: Option<Bytes>,
    /// `invalidJson: true`.
    pub invalid_json: bool,
    /// `invalidProto: true`.
    pub invalid_proto: bool,
}

impl StoredPayload {
    /// The payload these fields were written from.
    pub fn into_payload(self) -> Payload {
        if self.invalid_json || self.plain.is_some() {
            return Payload::InvalidJson {
                plain: self.plain.unwrap_or_default(),
                raw: self.raw,
            };
        }
        match (self.data, self.raw) {
            (Some(data), _) => Payload::Json(data),
            (None, Some(raw)) if self.invalid_proto => Payload::InvalidProto(raw),
            (None, Some(raw)) => Payload::Protobuf(raw),
            (None, None) => Payload::Json(RawValue::from_string("null".to_owned()).expect("`null` is JSON")),
        }
    }
}

/// The stored document, borrowing `data` from the text.
#[derive(Deserialize)]
struct StoredDocument<'a> {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    plain: Option<String>,
    #[serde(default)]
    raw: Option<String>,
    #[serde(default, rename = "invalidJson")]
    invalid_json: bool,
    #[serde(default, rename = "invalidProto")]
    invalid_proto: bool,
    #[serde(default)]
    id: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(rename = "@timestamp")]
    timestamp: String,
}

impl Event {
    /// Reads a stored document (an Elasticsearch `_source`, a file line)
    /// back into the event that wrote it.
    pub fn from_document(text: &str) -> Result<Event, DocumentError> {
        let document: StoredDocument<'_> =
            serde_json::from_str(text).map_err(|error| DocumentError::Shape(error.to_string()))?;
        let received_at = parse_timestamp(&document.timestamp)?;
        let raw = match document.raw {
            Some(raw) => Some(Bytes::from(BASE64.decode(raw).map_err(|_| DocumentError::Raw)?)),
            None => None,
        };
        let format = match document.format.as_deref() {
            Some("PROTOBUF") => Format::Protobuf,
            Some(_) => Format::Json,
            None if raw.is_some() && !document.invalid_json => Format::Protobuf,
            None => Format::Json,
        };
        let payload = StoredPayload {
            data: document.data.map(RawValue::to_owned),
            plain: document.plain,
            raw,
            invalid_json: document.invalid_json,
            invalid_proto: document.invalid_proto,
        }
        .into_payload();
        let mut event = Event::with_payload(format, payload, document.kind, document.id, received_at);
        event.source = document.source;
        Ok(event)
    }

    /// The payload as a client gets it back: decoded data as JSON text
    /// (format JSON), anything that could not be decoded as its original
    /// bytes in its original format.
    pub fn stored_payload(&self) -> (Format, Bytes) {
        match &self.payload {
            Payload::Json(raw) => (Format::Json, Bytes::copy_from_slice(raw.get().as_bytes())),
            Payload::Value(value) => (Format::Json, Bytes::from(serde_json::to_vec(value).unwrap_or_default())),
            Payload::InvalidJson { plain, raw } => (
                Format::Json,
                raw.clone().unwrap_or_else(|| Bytes::copy_from_slice(plain.as_bytes())),
            ),
            Payload::Protobuf(bytes) | Payload::InvalidProto(bytes) => (Format::Protobuf, bytes.clone()),
        }
    }
}

/// Parses an RFC 3339 time into UTC.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, DocumentError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| DocumentError::Timestamp(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn round_trip(event: &Event) -> Event {
        Event::from_document(&serde_json::to_string(event).unwrap()).unwrap()
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 1, 40).unwrap() + chrono::Duration::milliseconds(123)
    }

    #[test]
    fn every_payload_reads_back_as_written() {
        let cases = [
            (Format::Json, &br#"{"n":12345678901234567890123,"s":"x"}"#[..]),
            (Format::Json, b"{not json"),
            (Format::Json, b"\xff\xfe{"),
            (Format::Protobuf, &[10, 4, 97, 98, 45, 49]),
        ];
        for (format, data) in cases {
            let event = Event::new(
                format,
                Bytes::copy_from_slice(data),
                "contact.AddressBook".into(),
                "e-1".into(),
                at(),
            );
            let back = round_trip(&event);
            assert_eq!(
                serde_json::to_string(&back).unwrap(),
                serde_json::to_string(&event).unwrap()
            );
            assert_eq!(
                back.stored_payload(),
                (format, Bytes::copy_from_slice(data)),
                "{data:?}"
            );
            assert_eq!(back.received_at, event.received_at);
        }
        let mut invalid = Event::new(
            Format::Protobuf,
            Bytes::from_static(&[0xff]),
            "k".into(),
            "1".into(),
            at(),
        );
        invalid.payload = Payload::InvalidProto(Bytes::from_static(&[0xff]));
        assert!(matches!(round_trip(&invalid).payload, Payload::InvalidProto(_)));
    }

    #[test]
    fn decoded_trees_come_back_as_json() {
        let mut event = Event::new(Format::Protobuf, Bytes::from_static(&[1]), "k".into(), "1".into(), at());
        event.payload = Payload::Value(serde_json::json!({"id": "ab-1"}));
        let back = round_trip(&event);
        assert_eq!(
            back.stored_payload(),
            (Format::Json, Bytes::from_static(br#"{"id":"ab-1"}"#))
        );
        assert_eq!(back.format, Format::Protobuf);
    }

    #[test]
    fn documents_of_another_shape_are_refused() {
        assert!(matches!(Event::from_document("[]"), Err(DocumentError::Shape(_))));
        assert!(matches!(
            Event::from_document(r#"{"@timestamp":"yesterday"}"#),
            Err(DocumentError::Timestamp(_))
        ));
    }
}
