//! Packing events into as few messages as fit: the `codec = "packed"`
//! output, for queues whose readers are eventstash store agents.
//!
//! SQS bills every request, and every 64 KiB of a request's payload counts
//! as one more, so small messages are expensive: one 200-byte event per
//! message costs a send, a receive and a delete share each. A packed
//! message holds as many event documents as fit under `packed_bytes`
//! (default 64 KiB, the billing unit), in the framing of
//! [`eventstash_support_aws::sqs::packed`], gzip-compressed and base64-encoded
//! unless `packed_compression = "none"`.
//!
//! The compressed size is known only after compressing, so the packer
//! guesses how many documents fit from the ratio of the message before,
//! compresses, and corrects: fewer documents when the body came out over
//! the target, more (once or twice) when it came out well under. A
//! document too large to share a message travels alone, and one too large
//! for any message (after compression) is refused for the dead-letter file.
//!
//! On a FIFO queue each group's events are packed apart, in order, so that
//! a message belongs to one group and order within it holds; its
//! deduplication id is the SHA-256 of its body (see
//! [`crate::message::content_deduplication_id`]).

use std::sync::atomic::{AtomicU32, Ordering};

use eventstash_plugin_api::Event;
use eventstash_support_aws::sqs::packed::{
    CODEC_ATTRIBUTE, EVENTS_ATTRIBUTE, MAX_UNPACKED_BYTES, PackedCodec, push_line,
};

use crate::message::{Message, NUMBER_TYPE, STRING_TYPE, content_deduplication_id};

/// Events SQS cannot take, with the reasons for the dead-letter file.
type Refused<'a> = Vec<(&'a Event, String)>;

/// A body this much under its budget is worth trying again with more
/// documents (in tenths of the budget).
const REFILL_BELOW_TENTHS: usize = 9;
/// How many times a body under its budget is tried again with more.
const MAX_REFILLS: usize = 2;

/// Packs documents into messages; see the module documentation.
#[derive(Debug)]
pub(crate) struct Packer {
    /// The framing.
    codec: PackedCodec,
    /// The size a message aims at (body and attributes).
    target_bytes: usize,
    /// Body bytes per document byte in the last message (an `f32`'s bits),
    /// the first guess for the next one.
    ratio: AtomicU32,
}

impl Packer {
    pub(crate) fn new(codec: PackedCodec, target_bytes: usize) -> Packer {
        let first_guess: f32 = match codec {
            PackedCodec::Jsonl => 1.0,
            // Event documents compress about 4 to 10 times; base64 adds a third.
            PackedCodec::JsonlGzipBase64 => 0.3,
        };
        Packer {
            codec,
            target_bytes,
            ratio: AtomicU32::new(first_guess.to_bits()),
        }
    }

    /// Packs `events` (one FIFO group, or all of a standard queue's) into
    /// messages of at most `limit` bytes, aiming at the target; the events
    /// too large for any message are returned with the reason.
    pub(crate) fn pack<'a>(
        &self,
        events: &[&'a Event],
        group_id: Option<String>,
        limit: usize,
        messages: &mut Vec<Message<'a>>,
        refused: &mut Refused<'a>,
    ) {
        let documents: Vec<String> = events
            .iter()
            .map(|event| serde_json::to_string(event).expect("an event's document always serializes"))
            .collect();
        let target = self.target_bytes.min(limit);
        let mut first = 0;
        while first < events.len() {
            if documents[first].len() > MAX_UNPACKED_BYTES {
                let reason = format!(
                    "the event's document is {} bytes, over the {MAX_UNPACKED_BYTES}-byte bound of a packed message",
                    documents[first].len()
                );
                refused.push((events[first], reason));
                first += 1;
                continue;
            }
            let (count, body) = self.fit(&documents[first..], target);
            let packed = &events[first..first + count];
            first += count;
            let message = self.message(packed, body, group_id.clone());
            if message.size > limit {
                let reason = format!(
                    "the event's packed message is {} bytes, over the {limit}-byte limit of an SQS message \
                     (`max_message_bytes`, or the queue's MaximumMessageSize if lower)",
                    message.size
                );
                refused.push((packed[0], reason));
                continue;
            }
            messages.push(message);
        }
    }

    /// How many of `documents` (at least one) to pack into the next
    /// message, and its body.
    fn fit(&self, documents: &[String], target: usize) -> (usize, String) {
        let budget = target.saturating_sub(attributes_bound(documents.len()));
        let mut count = self.guess(documents, budget);
        let mut body = self.encode(&documents[..count]);
        // Over the budget: fewer, in proportion, until it fits or is one.
        while body.len() > budget && count > 1 {
            let scaled = count * budget / body.len() * 19 / 20;
            count = scaled.clamp(1, count - 1);
            body = self.encode(&documents[..count]);
        }
        // Well under it, with more to pack: more, in proportion, keeping
        // the fuller body only if it still fits.
        for _ in 0..MAX_REFILLS {
            if count == documents.len() || body.len() * 10 >= budget * REFILL_BELOW_TENTHS || body.len() > budget {
                break;
            }
            let scaled = count * budget / body.len().max(1) * 19 / 20;
            let mut more = scaled.clamp(count + 1, documents.len());
            while more > count + 1 && text_len(&documents[..more]) > MAX_UNPACKED_BYTES {
                more = count + (more - count) / 2;
            }
            if text_len(&documents[..more]) > MAX_UNPACKED_BYTES {
                break;
            }
            let fuller = self.encode(&documents[..more]);
            if fuller.len() > budget {
                break;
            }
            (count, body) = (more, fuller);
        }
        (count, body)
    }

    /// The documents that fit the budget at the last ratio, and whose text
    /// stays within [`MAX_UNPACKED_BYTES`]; at least one.
    fn guess(&self, documents: &[String], budget: usize) -> usize {
        let ratio = f32::from_bits(self.ratio.load(Ordering::Relaxed)) as f64;
        let mut raw = 0usize;
        let fitting = documents
            .iter()
            .take_while(|document| {
                raw += document.len() + 1;
                (raw as f64 * ratio) as usize <= budget && raw <= MAX_UNPACKED_BYTES
            })
            .count();
        fitting.max(1)
    }

    /// The body of a message of `documents`; learns the ratio.
    fn encode(&self, documents: &[String]) -> String {
        let raw: usize = documents.iter().map(|document| document.len() + 1).sum();
        let mut text = String::with_capacity(raw);
        for document in documents {
            push_line(&mut text, document);
        }
        let body = self.codec.encode(&text);
        let ratio = body.len() as f32 / text.len().max(1) as f32;
        self.ratio.store(ratio.to_bits(), Ordering::Relaxed);
        body
    }

    fn message<'a>(&self, events: &[&'a Event], body: String, group_id: Option<String>) -> Message<'a> {
        let attributes = vec![
            (CODEC_ATTRIBUTE, STRING_TYPE, self.codec.attribute().to_owned()),
            (EVENTS_ATTRIBUTE, NUMBER_TYPE, events.len().to_string()),
        ];
        let deduplication_id = group_id.as_ref().map(|_| content_deduplication_id(&body));
        Message::new(events.to_vec(), body, attributes, group_id, deduplication_id)
    }
}

/// The length of the packed text of `documents`, escapes aside.
fn text_len(documents: &[String]) -> usize {
    documents.iter().map(|document| document.len() + 1).sum::<usize>() - 1
}

/// The most a packed message's attributes can count, with at most
/// `documents` events.
fn attributes_bound(documents: usize) -> usize {
    CODEC_ATTRIBUTE.len()
        + STRING_TYPE.len()
        + PackedCodec::JsonlGzipBase64.attribute().len()
        + EVENTS_ATTRIBUTE.len()
        + NUMBER_TYPE.len()
        + documents.to_string().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::TimeZone;
    use eventstash_plugin_api::Format;
    use eventstash_support_aws::sqs::packed::lines;

    fn events(count: usize, pad: usize) -> Vec<Event> {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 9, 1, 40).unwrap();
        (0..count)
            .map(|n| {
                let data = format!(
                    r#"{{"n":{n},"user":"user-{}","pad":"{}"}}"#,
                    n * 7919 % 1000,
                    "x".repeat(pad)
                );
                Event::new(
                    Format::Json,
                    Bytes::from(data),
                    "contact.AddressBook".into(),
                    format!("e-{n}"),
                    at,
                )
            })
            .collect()
    }

    fn pack(codec: PackedCodec, target: usize, limit: usize, events: &[Event]) -> (Vec<Message<'_>>, Refused<'_>) {
        let packer = Packer::new(codec, target);
        let refs: Vec<&Event> = events.iter().collect();
        let (mut messages, mut refused) = (Vec::new(), Vec::new());
        packer.pack(&refs, None, limit, &mut messages, &mut refused);
        (messages, refused)
    }

    /// Every event, once, in order, across the messages.
    fn unpacked_ids(codec: PackedCodec, messages: &[Message<'_>]) -> Vec<String> {
        messages
            .iter()
            .flat_map(|message| {
                let text = codec.decode(&message.body, 16 << 20).unwrap();
                lines(&text)
                    .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn messages_come_close_to_the_target_and_never_pass_it() {
        let events = events(5_000, 0);
        let expected: Vec<String> = events.iter().map(|event| format!("\"{}\"", event.id)).collect();
        for codec in [PackedCodec::Jsonl, PackedCodec::JsonlGzipBase64] {
            let (messages, refused) = pack(codec, 64 * 1024, 256 * 1024, &events);
            assert!(refused.is_empty());
            assert_eq!(unpacked_ids(codec, &messages), expected, "{codec:?}");
            println!(
                "{codec:?}: 5,000 events of {} bytes in {} messages of at most 64 KiB",
                serde_json::to_string(&events[0]).unwrap().len(),
                messages.len()
            );
            for message in &messages[..messages.len() - 1] {
                assert!(message.size <= 64 * 1024, "{codec:?}: {}", message.size);
                assert!(message.size > 64 * 1024 * 8 / 10, "{codec:?}: only {}", message.size);
                assert_eq!(message.events.len(), message.attributes[1].2.parse::<usize>().unwrap());
            }
        }
    }

    #[test]
    fn a_large_event_travels_alone_and_one_too_large_for_any_message_is_refused() {
        let mut events = events(3, 0);
        events.extend(self::events(1, 100_000).into_iter().map(|mut event| {
            event.id = "big".into();
            event
        }));
        let (messages, refused) = pack(PackedCodec::Jsonl, 64 * 1024, 256 * 1024, &events);
        assert!(refused.is_empty());
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].events[0].id, "big");
        let (messages, refused) = pack(PackedCodec::Jsonl, 64 * 1024, 64 * 1024, &events);
        assert_eq!(messages.len(), 1);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].1.contains("over the 65536-byte limit"), "{}", refused[0].1);
        // Compressed, the same padding fits easily.
        let (messages, refused) = pack(PackedCodec::JsonlGzipBase64, 64 * 1024, 64 * 1024, &events);
        assert!(refused.is_empty());
        assert_eq!(messages.len(), 1);
    }

    #[test]
    fn a_fifo_message_is_deduplicated_by_its_content() {
        let events = events(10, 0);
        let refs: Vec<&Event> = events.iter().collect();
        let packer = Packer::new(PackedCodec::JsonlGzipBase64, 64 * 1024);
        let (mut messages, mut refused) = (Vec::new(), Vec::new());
        packer.pack(&refs, Some("g".into()), 256 * 1024, &mut messages, &mut refused);
        packer.pack(&refs[..9], Some("g".into()), 256 * 1024, &mut messages, &mut refused);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].group_id.as_deref(), Some("g"));
        let ids: Vec<_> = messages.iter().map(|m| m.deduplication_id.clone().unwrap()).collect();
        assert_eq!(ids[0].len(), 64);
        assert_ne!(ids[0], ids[1], "other events, another id");
    }
}
