//! The document of an event as JSON text, byte for byte what its
//! [`Serialize`](serde::Serialize) impl writes, for outputs that write many
//! documents in a row (the file output's lines).
//!
//! The fields that repeat from event to event are escaped once and kept: the
//! `index` and `kind` of the last few kinds, as the start of the document,
//! and the text of the last `@timestamp` (a received batch shares one). The
//! payloads eventstash decodes (`data` as JSON text) take this path; the
//! others (invalid or undecoded payloads, trees built by a filter) are
//! written by the `Serialize` impl. The two are held to the same bytes by a
//! property test.

use std::io::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize as _;

use crate::event::{Event, Payload, Rfc3339Millis};

/// Kinds whose document start is kept; a stream repeats a few.
const KEPT_KINDS: usize = 16;

/// Longer kinds are escaped every time rather than kept.
const KEPT_KIND_BYTES: usize = 256;

/// Writes documents; keep one per writer, from batch to batch.
#[derive(Debug, Default)]
pub struct DocumentWriter {
    /// `{"index":…,"kind":…,"format":` by kind and index, most recent last.
    starts: Vec<KindStart>,
    /// The last `@timestamp` written, and its text with quotes.
    timestamp: Option<(DateTime<Utc>, Vec<u8>)>,
}

#[derive(Debug)]
struct KindStart {
    kind: String,
    index: String,
    text: Vec<u8>,
}

impl DocumentWriter {
    /// Appends `event`'s document to `out`, exactly as
    /// `serde_json::to_writer(out, event)` would.
    pub fn write(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let Payload::Json(data) = &event.payload else {
            return serde_json::to_writer(out, event);
        };
        self.write_start(event, out)?;
        out.push(b'"');
        out.extend_from_slice(event.format.as_str().as_bytes());
        out.extend_from_slice(b"\",\"data\":");
        out.extend_from_slice(data.get().as_bytes());
        out.extend_from_slice(b",\"id\":");
        write_str(&event.id, out)?;
        if let Some(source) = &event.source {
            out.extend_from_slice(b",\"source\":");
            write_str(source, out)?;
        }
        out.extend_from_slice(b",\"@timestamp\":");
        self.write_timestamp(&event.received_at, out);
        out.push(b'}');
        Ok(())
    }

    /// `{"index":…,"kind":…,"format":`, kept for the kinds seen last.
    fn write_start(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let found = self
            .starts
            .iter()
            .rposition(|start| start.kind == event.kind && start.index == event.index);
        if let Some(at) = found {
            out.extend_from_slice(&self.starts[at].text);
            return Ok(());
        }
        let mut text = Vec::with_capacity(event.index.len() + event.kind.len() + 32);
        text.extend_from_slice(b"{\"index\":");
        write_str(&event.index, &mut text)?;
        text.extend_from_slice(b",\"kind\":");
        write_str(&event.kind, &mut text)?;
        text.extend_from_slice(b",\"format\":");
        out.extend_from_slice(&text);
        if event.kind.len() <= KEPT_KIND_BYTES {
            if self.starts.len() == KEPT_KINDS {
                self.starts.remove(0);
            }
            self.starts.push(KindStart {
                kind: event.kind.clone(),
                index: event.index.clone(),
                text,
            });
        }
        Ok(())
    }

    fn write_timestamp(&mut self, at: &DateTime<Utc>, out: &mut Vec<u8>) {
        if let Some((last, text)) = &self.timestamp
            && last == at
        {
            out.extend_from_slice(text);
            return;
        }
        let mut text = Vec::with_capacity(26);
        // Writing into a Vec cannot fail.
        let _ = write!(text, "\"{}\"", Rfc3339Millis(at));
        out.extend_from_slice(&text);
        self.timestamp = Some((*at, text));
    }
}

/// A JSON string as serde_json writes it: plain text as it is, escaping
/// left to serde_json for the rare string that needs it.
fn write_str(text: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        return text.serialize(&mut serde_json::Serializer::new(out));
    }
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use chrono::TimeZone as _;
    use proptest::prelude::*;

    use super::*;
    use crate::event::Format;

    fn event(kind: &str, id: &str, data: &[u8], format: Format, millis: i64, source: Option<&str>) -> Event {
        let at = Utc.timestamp_millis_opt(millis).unwrap();
        let mut event = Event::new(format, Bytes::copy_from_slice(data), kind.into(), id.into(), at);
        event.source = source.map(str::to_owned);
        event
    }

    fn written(writer: &mut DocumentWriter, event: &Event) -> String {
        let mut out = Vec::new();
        writer.write(event, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_json_event_is_written_as_its_serialize_impl_writes_it() {
        let mut writer = DocumentWriter::default();
        let event = event(
            "contact.AddressBook",
            "e-1",
            br#"{"a":[1,"x"]}"#,
            Format::Json,
            1_764_000_000_123,
            None,
        );
        assert_eq!(written(&mut writer, &event), serde_json::to_string(&event).unwrap());
        // Again, from what the writer kept.
        assert_eq!(written(&mut writer, &event), serde_json::to_string(&event).unwrap());
    }

    #[test]
    fn kinds_and_timestamps_that_change_are_not_taken_from_the_last_event() {
        let mut writer = DocumentWriter::default();
        for n in 0..40 {
            let kind = format!("k.Kind{}", n % 20);
            let event = event(&kind, "id", b"1", Format::Json, 1_000 + n / 3, Some("svc"));
            assert_eq!(written(&mut writer, &event), serde_json::to_string(&event).unwrap());
        }
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9._-]{0,12}",
            any::<String>(),
            Just("quote\" back\\slash \u{1} tab\t é 😀".to_owned()),
        ]
    }

    fn any_payload() -> impl Strategy<Value = (Vec<u8>, Format)> {
        prop_oneof![
            Just((br#"{"n":1,"s":"x\"y"}"#.to_vec(), Format::Json)),
            any::<Vec<u8>>().prop_map(|bytes| (bytes, Format::Json)),
            "[0-9]{1,4}".prop_map(|text| (text.into_bytes(), Format::Json)),
            any::<Vec<u8>>().prop_map(|bytes| (bytes, Format::Protobuf)),
        ]
    }

    proptest! {
        #[test]
        fn every_event_is_written_as_its_serialize_impl_writes_it(
            events in prop::collection::vec(
                (any_text(), any_text(), any_payload(), 0i64..4_000_000_000_000, prop::option::of(any_text())),
                1..20,
            )
        ) {
            let mut writer = DocumentWriter::default();
            for (kind, id, (data, format), millis, source) in events {
                let event = event(&kind, &id, &data, format, millis, source.as_deref());
                let mut out = Vec::new();
                writer.write(&event, &mut out).unwrap();
                prop_assert_eq!(out, serde_json::to_vec(&event).unwrap());
            }
        }
    }
}
