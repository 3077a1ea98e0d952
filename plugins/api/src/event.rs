//! The event and the JSON document it becomes.
//!
//! Every output stores the same document, in the shape HFXEventStash produced
//! so that existing indices, templates and dashboards keep working:
//! `{"index","kind","format","data","id","@timestamp"}`, with `plain`, `raw`,
//! `invalidJson` and `invalidProto` for payloads that could not be decoded.
//! The document is written by the [`Serialize`] impl here and nowhere else.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::json_text::{DEFAULT_MAX_JSON_DEPTH, invalid_json, parse_json};
use crate::kebab::kebab_case_cached;

/// The `kind` given to events whose producer left it empty.
const DEFAULT_KIND: &str = "event";

/// Bytes a document adds around its fields (keys, quotes, timestamp), used to
/// estimate its size for the queues' byte bounds.
const DOCUMENT_OVERHEAD: usize = 96;

/// How the producer encoded the payload (`StoreEventRequest.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Protocol Buffers bytes of the message named by `kind`.
    Protobuf,
    /// JSON text.
    Json,
}

impl Format {
    /// The name written in the document's `format` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Protobuf => "PROTOBUF",
            Format::Json => "JSON",
        }
    }
}

/// The payload of an event, in whatever state decoding left it.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Valid JSON text, kept as received (minus line breaks) to avoid building
    /// a tree nobody reads. Written as `data`.
    Json(Box<RawValue>),
    /// A JSON tree made by a filter (for example the protobuf decoder).
    /// Written as `data`.
    Value(serde_json::Value),
    /// A JSON payload that does not parse. Written as `plain` (the text, lossy
    /// if it was not UTF-8), `raw` (base64, only if it was not UTF-8) and
    /// `invalidJson: true`.
    InvalidJson {
        /// The payload as text.
        plain: String,
        /// The original bytes, kept when the text had to be made lossy.
        raw: Option<Bytes>,
    },
    /// Protobuf bytes no filter has decoded. Written as base64 `raw`.
    Protobuf(Bytes),
    /// Protobuf bytes a decoder could not decode. Written as base64 `raw` and
    /// `invalidProto: true`.
    InvalidProto(Bytes),
}

impl Payload {
    /// Interprets a payload received in `format`. JSON is validated (and
    /// compacted if it spans lines, so that a document stays on one line);
    /// protobuf is kept as bytes for a decoding filter.
    pub fn decode(format: Format, data: Bytes) -> Payload {
        Payload::decode_limited(format, data, DEFAULT_MAX_JSON_DEPTH)
    }

    /// [`Payload::decode`] with a nesting limit for JSON: deeper arrays and
    /// objects, like lone UTF-16 surrogates, make the payload invalid JSON,
    /// kept as text and flagged.
    pub fn decode_limited(format: Format, data: Bytes, max_json_depth: usize) -> Payload {
        match format {
            Format::Protobuf => Payload::Protobuf(data),
            Format::Json => parse_json(data, max_json_depth),
        }
    }

    /// A JSON payload that was rejected: kept as text (and as the original
    /// bytes if they are not UTF-8), flagged `invalidJson`.
    pub fn invalid_json(data: Bytes) -> Payload {
        invalid_json(data)
    }

    /// The payload's size in bytes, for queue accounting.
    fn len(&self) -> usize {
        match self {
            Payload::Json(raw) => raw.get().len(),
            // A tree's text size is not known without writing it; its
            // source bytes are the best cheap estimate a filter can give.
            Payload::Value(_) => 256,
            Payload::InvalidJson { plain, raw } => plain.len() + raw.as_ref().map_or(0, Bytes::len),
            Payload::Protobuf(bytes) | Payload::InvalidProto(bytes) => bytes.len() * 4 / 3,
        }
    }
}

/// One event, from its arrival to its storage by every output.
#[derive(Debug, Clone)]
pub struct Event {
    /// The producer's id, or a new UUID: the Elasticsearch `_id` and part of
    /// the DynamoDB key, so a retried event overwrites itself.
    pub id: String,
    /// The fully qualified type of the payload, `event` by default.
    pub kind: String,
    /// The kebab-case of `kind`, used in index names and file paths.
    pub index: String,
    /// How the producer encoded the payload.
    pub format: Format,
    /// The payload, decoded as far as the pipeline got.
    pub payload: Payload,
    /// When eventstash received the event; written as `@timestamp`.
    pub received_at: DateTime<Utc>,
    /// The authenticated producer that sent it (its token's or client
    /// certificate's name); written as `source` only when known.
    pub source: Option<String>,
}

impl Event {
    /// Builds an event from a producer's fields, applying the defaults of the
    /// HFXEventStash protocol: an empty `kind` is `event`, an empty `id` a new
    /// UUID.
    pub fn new(format: Format, data: Bytes, kind: String, id: String, received_at: DateTime<Utc>) -> Event {
        Event::with_payload(format, Payload::decode(format, data), kind, id, received_at)
    }

    /// [`Event::new`] for a payload already decoded (with other limits, or
    /// restored from storage).
    pub fn with_payload(
        format: Format,
        payload: Payload,
        kind: String,
        id: String,
        received_at: DateTime<Utc>,
    ) -> Event {
        let kind = if kind.is_empty() { DEFAULT_KIND.to_owned() } else { kind };
        let id = if id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            id
        };
        Event {
            index: kebab_case_cached(&kind),
            id,
            kind,
            format,
            payload,
            received_at,
            source: None,
        }
    }

    /// An estimate of the document's size in bytes, for the queues' bounds.
    pub fn size_estimate(&self) -> usize {
        DOCUMENT_OVERHEAD
            + self.id.len()
            + self.kind.len()
            + self.index.len()
            + self.source.as_ref().map_or(0, String::len)
            + self.payload.len()
    }

    /// The `@timestamp` text: RFC 3339 in UTC with milliseconds, as Logstash writes it.
    pub fn timestamp(&self) -> String {
        Rfc3339Millis(&self.received_at).to_string()
    }

    /// Looks up a field by path, as `%{...}` templates name them: a top-level
    /// name (`index`, `kind`, `format`, `id`, `@timestamp`) or a bracketed path
    /// into the document (`[data][requestId]`). Objects and arrays are
    /// returned as JSON text; a missing field is `None`.
    pub fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        let (first, rest) = path.split_first()?;
        let top = match first.as_str() {
            "index" => Cow::Borrowed(self.index.as_str()),
            "kind" => Cow::Borrowed(self.kind.as_str()),
            "format" => Cow::Borrowed(self.format.as_str()),
            "id" => Cow::Borrowed(self.id.as_str()),
            "source" => Cow::Borrowed(self.source.as_deref()?),
            "@timestamp" => Cow::Owned(self.timestamp()),
            "data" => return self.data_field(rest),
            _ => return None,
        };
        rest.is_empty().then_some(top)
    }

    fn data_field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        let parsed;
        let root = match &self.payload {
            Payload::Value(value) => value,
            Payload::Json(raw) => {
                parsed = serde_json::from_str::<serde_json::Value>(raw.get()).ok()?;
                &parsed
            }
            _ => return None,
        };
        let mut node = root;
        for key in path {
            node = match node {
                serde_json::Value::Object(map) => map.get(key)?,
                serde_json::Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(match node {
            serde_json::Value::String(text) => Cow::Owned(text.clone()),
            serde_json::Value::Null => return None,
            other => Cow::Owned(other.to_string()),
        })
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("index", &self.index)?;
        map.serialize_entry("kind", &self.kind)?;
        map.serialize_entry("format", self.format.as_str())?;
        match &self.payload {
            Payload::Json(raw) => map.serialize_entry("data", raw)?,
            Payload::Value(value) => map.serialize_entry("data", value)?,
            Payload::InvalidJson { plain, raw } => {
                map.serialize_entry("plain", plain)?;
                if let Some(raw) = raw {
                    map.serialize_entry("raw", &Base64(raw))?;
                }
                map.serialize_entry("invalidJson", &true)?;
            }
            Payload::Protobuf(bytes) => map.serialize_entry("raw", &Base64(bytes))?,
            Payload::InvalidProto(bytes) => {
                map.serialize_entry("raw", &Base64(bytes))?;
                map.serialize_entry("invalidProto", &true)?;
            }
        }
        map.serialize_entry("id", &self.id)?;
        if let Some(source) = &self.source {
            map.serialize_entry("source", source)?;
        }
        map.serialize_entry("@timestamp", &Rfc3339Millis(&self.received_at))?;
        map.end()
    }
}

/// Writes bytes as standard base64 without an intermediate `String`.
struct Base64<'a>(&'a Bytes);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&base64::display::Base64Display::new(self.0, &BASE64))
    }
}

/// Writes a time as RFC 3339 with milliseconds without an intermediate `String`.
pub(crate) struct Rfc3339Millis<'a>(pub(crate) &'a DateTime<Utc>);

impl Serialize for Rfc3339Millis<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl std::fmt::Display for Rfc3339Millis<'_> {
    // Written digit by digit into one buffer: this runs for every document,
    // and `write!` with padded integers showed up in profiles.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use chrono::{Datelike as _, Timelike as _};
        let t = self.0;
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for slot in text[at..at + width].iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, t.year().clamp(0, 9999) as u32);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        put(17, 2, t.second());
        put(20, 3, t.timestamp_subsec_millis().min(999));
        f.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 9, 1, 40).unwrap()
    }

    fn document(event: &Event) -> String {
        serde_json::to_string(event).unwrap()
    }

    #[test]
    fn json_event_has_the_hfx_document_shape() {
        let data = Bytes::from_static(br#"{"id":"ab-1","people":[]}"#);
        let event = Event::new(Format::Json, data, "contact.AddressBook".into(), "json-0".into(), at());
        assert_eq!(
            document(&event),
            r#"{"index":"contact-address-book","kind":"contact.AddressBook","format":"JSON","data":{"id":"ab-1","people":[]},"id":"json-0","@timestamp":"2026-11-23T09:01:40.000Z"}"#
        );
    }

    #[test]
    fn timestamps_have_fixed_width_fields_and_milliseconds() {
        let at = Utc.with_ymd_and_hms(987, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(7);
        assert_eq!(Rfc3339Millis(&at).to_string(), "0987-01-02T03:04:05.007Z");
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap() + chrono::Duration::nanoseconds(999_999_999);
        assert_eq!(Rfc3339Millis(&at).to_string(), "2026-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_source_follows_the_id_only_when_known() {
        let data = Bytes::from_static(b"{}");
        let mut event = Event::new(Format::Json, data, "k".into(), "e1".into(), at());
        assert!(!document(&event).contains("source"));
        event.source = Some("billing".into());
        assert!(
            document(&event).ends_with(r#""id":"e1","source":"billing","@timestamp":"2026-11-23T09:01:40.000Z"}"#),
            "{}",
            document(&event)
        );
        assert_eq!(event.field(&["source".to_owned()]).as_deref(), Some("billing"));
    }

    #[test]
    fn empty_kind_and_id_get_defaults() {
        let event = Event::new(
            Format::Json,
            Bytes::from_static(b"1"),
            String::new(),
            String::new(),
            at(),
        );
        assert_eq!(event.kind, "event");
        assert_eq!(event.index, "event");
        assert!(
            uuid::Uuid::parse_str(&event.id).is_ok(),
            "id {} is not a UUID",
            event.id
        );
    }

    #[test]
    fn invalid_json_keeps_the_text_and_is_flagged() {
        let event = Event::new(
            Format::Json,
            Bytes::from_static(b"{not json"),
            "k".into(),
            "1".into(),
            at(),
        );
        let doc: serde_json::Value = serde_json::from_str(&document(&event)).unwrap();
        assert_eq!(doc["plain"], "{not json");
        assert_eq!(doc["invalidJson"], true);
        assert!(doc.get("raw").is_none());
        assert!(doc.get("data").is_none());
    }

    #[test]
    fn invalid_utf8_keeps_lossy_text_and_the_raw_bytes() {
        let event = Event::new(
            Format::Json,
            Bytes::from_static(b"\xff\xfe{"),
            "k".into(),
            "1".into(),
            at(),
        );
        let doc: serde_json::Value = serde_json::from_str(&document(&event)).unwrap();
        assert_eq!(doc["plain"], "\u{fffd}\u{fffd}{");
        assert_eq!(doc["raw"], "//57");
        assert_eq!(doc["invalidJson"], true);
    }

    #[test]
    fn multi_line_json_is_compacted_to_one_line() {
        let data = Bytes::from_static(b"{\n  \"a\": [1,\r\n 2],\n  \"b\": \"x y \\\" z\\\\\",\n \"n\": 12345678901234567890123, \"f\": 1.0000000000000000001\n}\n");
        let event = Event::new(Format::Json, data, "k".into(), "1".into(), at());
        let text = document(&event);
        assert!(!text.contains('\n'));
        assert!(
            text.contains(
                r#""data":{"a":[1,2],"b":"x y \" z\\","n":12345678901234567890123,"f":1.0000000000000000001}"#
            ),
            "{text}"
        );
    }

    #[test]
    fn protobuf_passes_through_as_base64_raw() {
        let event = Event::new(
            Format::Protobuf,
            Bytes::from_static(&[10, 4, 97, 98, 45, 49]),
            "k".into(),
            "1".into(),
            at(),
        );
        let doc: serde_json::Value = serde_json::from_str(&document(&event)).unwrap();
        assert_eq!(doc["format"], "PROTOBUF");
        assert_eq!(doc["raw"], "CgRhYi0x");
        assert!(doc.get("invalidProto").is_none());
    }

    #[test]
    fn fields_are_found_by_path() {
        let data = Bytes::from_static(br#"{"requestId":"r-7","n":3,"deep":{"list":["a","b"]}}"#);
        let event = Event::new(Format::Json, data, "contact.AddressBook".into(), "e1".into(), at());
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(event.field(&path(&["index"])).as_deref(), Some("contact-address-book"));
        assert_eq!(event.field(&path(&["data", "requestId"])).as_deref(), Some("r-7"));
        assert_eq!(event.field(&path(&["data", "n"])).as_deref(), Some("3"));
        assert_eq!(event.field(&path(&["data", "deep", "list", "1"])).as_deref(), Some("b"));
        assert_eq!(event.field(&path(&["data", "missing"])), None);
        assert_eq!(event.field(&path(&["nope"])), None);
        assert_eq!(
            event.field(&path(&["@timestamp"])).as_deref(),
            Some("2026-11-23T09:01:40.000Z")
        );
    }
}
