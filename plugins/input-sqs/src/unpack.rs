//! A packed message (see `eventstash_support_aws::sqs::packed`) as the
//! events it holds.
//!
//! Each line is read as a message of its own would be (see `decode.rs`): a
//! document of the SQS output becomes the same event again, a gateway
//! message the gateway's event, anything else an event flagged
//! `invalidJson`. A line that names no id gets the SQS message id and its
//! line number (`<message id>-<n>`, counting from 0), which stays the same
//! however often the message is handed out, so a redelivery overwrites
//! instead of duplicating. A body that cannot be unpacked at all (not
//! base64, not gzip, over [`MAX_UNPACKED_BYTES`]) is not dropped: it
//! becomes one flagged event holding the body, as an unknown message does.

use eventstash_plugin_api::Event;
use eventstash_support_aws::sqs::packed::{MAX_UNPACKED_BYTES, PackedCodec, lines};
use tracing::warn;

use crate::decode::{Received, decode};

/// The events of a packed message; see the module documentation.
pub(crate) fn unpack(message: Received<'_>, codec: PackedCodec, plugin: &str, events: &mut Vec<Event>) {
    let text = match codec.decode(message.body, MAX_UNPACKED_BYTES) {
        Ok(text) => text,
        Err(problem) => {
            warn!(
                input = plugin, message_id = message.message_id, codec = codec.attribute(), %problem,
                "a packed message cannot be unpacked; it is kept as one event flagged invalidJson"
            );
            events.push(decode(Received {
                kind: None,
                id: None,
                ..message
            }));
            return;
        }
    };
    for (n, line) in lines(&text).enumerate() {
        let line_id = format!("{}-{n}", message.message_id);
        events.push(decode(Received {
            body: line,
            message_id: &line_id,
            kind: None,
            id: None,
            sent_at: message.sent_at,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::{TimeZone, Utc};
    use eventstash_plugin_api::{Format, Payload};
    use eventstash_support_aws::sqs::packed::push_line;

    fn received(body: &str) -> Received<'_> {
        Received {
            body,
            message_id: "msg-1",
            kind: Some("ignored"),
            id: Some("ignored"),
            sent_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        }
    }

    fn document(n: usize) -> String {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 1, 40).unwrap();
        let event = Event::new(
            Format::Json,
            Bytes::from(format!(r#"{{"n":{n}}}"#)),
            "k.Kind".into(),
            format!("e-{n}"),
            at,
        );
        serde_json::to_string(&event).unwrap()
    }

    #[test]
    fn every_line_becomes_its_event_and_a_bad_line_is_kept_flagged_on_its_own() {
        let mut text = String::new();
        push_line(&mut text, &document(0));
        push_line(&mut text, "{not an event");
        push_line(&mut text, &document(2));
        push_line(
            &mut text,
            r#"{"requestId":"r","timestamp":"2020-05-01T20:00:00Z","id":"g-1","type":"T","data":{}}"#,
        );
        for codec in [PackedCodec::Jsonl, PackedCodec::JsonlGzipBase64] {
            let body = codec.encode(&text);
            let mut events = Vec::new();
            unpack(received(&body), codec, "sqs#0", &mut events);
            let ids: Vec<&str> = events.iter().map(|event| event.id.as_str()).collect();
            assert_eq!(ids, ["e-0", "msg-1-1", "e-2", "g-1"], "{codec:?}");
            assert!(matches!(&events[1].payload, Payload::InvalidJson { plain, .. } if plain == "{not an event"));
            assert_eq!(events[1].kind, "event");
            assert_eq!(serde_json::to_string(&events[2]).unwrap(), document(2));
            assert_eq!(events[3].kind, "T");
        }
    }

    #[test]
    fn a_body_that_cannot_be_unpacked_is_kept_whole() {
        let mut events = Vec::new();
        unpack(
            received("not base64 !"),
            PackedCodec::JsonlGzipBase64,
            "sqs#0",
            &mut events,
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, "msg-1");
        assert!(matches!(&events[0].payload, Payload::InvalidJson { plain, .. } if plain == "not base64 !"));
    }
}
