//! An event as an SQS message: the body, the attributes, the FIFO ids, and
//! the size SQS counts against its limit.
//!
//! The body is the event's document, `serde_json` of the [`Event`], the
//! same JSON line the file output writes; `kind`, `format` and `id` ride
//! along as `String` message attributes, so a consumer can route or filter
//! without parsing the body. SQS counts a message's size as its body plus
//! each attribute's name, data type and value, all in UTF-8 bytes.
//!
//! On a FIFO queue, `MessageGroupId` is the `message_group_id` template
//! (default `%{index}`: one ordered stream per kind) and
//! `MessageDeduplicationId` is the event id, so an event sent twice within
//! SQS's five-minute window is stored once. Both ids allow 1 to 128
//! printable ASCII characters; a group id outside that is made to fit, and
//! an event id outside that is replaced by its SHA-256, which stays the same
//! across agents and retries.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use eventstash_plugin_api::{Event, FieldTemplate};
use sha2::{Digest as _, Sha256};

/// The attribute that carries the event's kind.
pub(crate) const KIND_ATTRIBUTE: &str = "kind";
/// The attribute that carries the event's format (`JSON`, `PROTOBUF`).
pub(crate) const FORMAT_ATTRIBUTE: &str = "format";
/// The attribute that carries the event's id.
pub(crate) const ID_ATTRIBUTE: &str = "id";
/// The data type of the text attributes.
pub(crate) const STRING_TYPE: &str = "String";
/// The data type of the numeric attributes.
pub(crate) const NUMBER_TYPE: &str = "Number";
/// The longest FIFO group or deduplication id.
const MAX_FIFO_ID_CHARS: usize = 128;

/// How events become messages: the checked form of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct MessageSchema {
    /// `Some` on a FIFO queue: the `MessageGroupId` template.
    pub(crate) group_id: Option<FieldTemplate>,
}

/// A message ready to send: one event's document, or a packed message of
/// several events (see [`crate::packed`]), with the size SQS counts.
#[derive(Debug)]
pub(crate) struct Message<'a> {
    /// The events it carries: dead-lettered together if SQS refuses it.
    pub(crate) events: Vec<&'a Event>,
    /// What SQS stores and hands out.
    pub(crate) body: String,
    /// `(name, data type, value)` of each message attribute.
    pub(crate) attributes: Vec<(&'static str, &'static str, String)>,
    /// FIFO queues only.
    pub(crate) group_id: Option<String>,
    /// FIFO queues only.
    pub(crate) deduplication_id: Option<String>,
    /// The size SQS counts: body and attributes.
    pub(crate) size: usize,
}

impl MessageSchema {
    /// The message of `event`.
    pub(crate) fn message<'a>(&self, event: &'a Event) -> Message<'a> {
        let body = serde_json::to_string(event).expect("an event's document always serializes");
        let attributes = vec![
            (KIND_ATTRIBUTE, STRING_TYPE, event.kind.clone()),
            (FORMAT_ATTRIBUTE, STRING_TYPE, event.format.as_str().to_owned()),
            (ID_ATTRIBUTE, STRING_TYPE, event.id.clone()),
        ];
        Message::new(
            vec![event],
            body,
            attributes,
            self.group_id(event),
            self.group_id.as_ref().map(|_| fifo_deduplication_id(&event.id)),
        )
    }

    /// The FIFO group of `event`; `None` on a standard queue.
    pub(crate) fn group_id(&self, event: &Event) -> Option<String> {
        self.group_id
            .as_ref()
            .map(|template| fifo_group_id(&template.render(event)))
    }
}

impl<'a> Message<'a> {
    /// A message of `events` with the size SQS counts worked out.
    pub(crate) fn new(
        events: Vec<&'a Event>,
        body: String,
        attributes: Vec<(&'static str, &'static str, String)>,
        group_id: Option<String>,
        deduplication_id: Option<String>,
    ) -> Message<'a> {
        let size = body.len() + attributes_size(&attributes);
        Message {
            events,
            body,
            attributes,
            group_id,
            deduplication_id,
            size,
        }
    }
}

/// What SQS counts of the attributes: each one's name, data type and value.
pub(crate) fn attributes_size(attributes: &[(&str, &str, String)]) -> usize {
    attributes
        .iter()
        .map(|(name, data_type, value)| name.len() + data_type.len() + value.len())
        .sum()
}

impl Message<'_> {
    /// The batch entry, named `id` within its request.
    pub(crate) fn entry(&self, id: usize) -> SendMessageBatchRequestEntry {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(id.to_string())
            .message_body(self.body.clone());
        for (name, data_type, value) in &self.attributes {
            let attribute = MessageAttributeValue::builder()
                .data_type(*data_type)
                .string_value(value)
                .build()
                .expect("the data type, the one required field, is set");
            entry = entry.message_attributes(*name, attribute);
        }
        entry
            .set_message_group_id(self.group_id.clone())
            .set_message_deduplication_id(self.deduplication_id.clone())
            .build()
            .expect("the id and the body, the required fields, are set")
    }
}

/// The deduplication id of a packed message: the SHA-256 of its body. SQS
/// drops a message as a duplicate only when this matches one it took in the
/// last five minutes, that is only when the very same events were already
/// sent together, so deduplication can never drop an event that is not in
/// the queue.
pub(crate) fn content_deduplication_id(body: &str) -> String {
    hex_sha256(body.as_bytes())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A FIFO id character: printable ASCII, no space.
fn fifo_char(c: char) -> bool {
    c.is_ascii_graphic()
}

/// A group id SQS accepts: other characters become `_`, and it is cut to
/// 128. Events whose group ids collide that way are merely ordered together.
fn fifo_group_id(rendered: &str) -> String {
    if rendered.is_empty() {
        return "_".to_owned();
    }
    rendered
        .chars()
        .take(MAX_FIFO_ID_CHARS)
        .map(|c| if fifo_char(c) { c } else { '_' })
        .collect()
}

/// The event id, or its SHA-256 in hex when SQS would not take it.
fn fifo_deduplication_id(id: &str) -> String {
    if (1..=MAX_FIFO_ID_CHARS).contains(&id.len()) && id.chars().all(fifo_char) {
        return id.to_owned();
    }
    hex_sha256(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::TimeZone;
    use eventstash_plugin_api::Format;

    fn event(id: &str) -> Event {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 9, 1, 40).unwrap();
        Event::new(
            Format::Json,
            Bytes::from_static(br#"{"n":1}"#),
            "contact.AddressBook".into(),
            id.into(),
            at,
        )
    }

    #[test]
    fn the_body_is_the_document_and_the_attributes_name_the_event() {
        let event = event("e-1");
        let message = MessageSchema { group_id: None }.message(&event);
        let entry = message.entry(3);
        assert_eq!(entry.id(), "3");
        assert_eq!(entry.message_body(), serde_json::to_string(&event).unwrap());
        let attributes = entry.message_attributes().unwrap();
        assert_eq!(attributes["kind"].string_value(), Some("contact.AddressBook"));
        assert_eq!(attributes["format"].string_value(), Some("JSON"));
        assert_eq!(attributes["id"].string_value(), Some("e-1"));
        assert_eq!(entry.message_group_id(), None);
        assert_eq!(entry.message_deduplication_id(), None);
        let expected = entry.message_body().len()
            + ("kind".len() + 6 + "contact.AddressBook".len())
            + ("format".len() + 6 + 4)
            + ("id".len() + 6 + 3);
        assert_eq!(message.size, expected);
    }

    #[test]
    fn fifo_messages_get_a_group_from_the_template_and_the_id_for_deduplication() {
        let schema = MessageSchema {
            group_id: Some(FieldTemplate::parse("%{index}").unwrap()),
        };
        let event = event("e-1");
        let entry = schema.message(&event).entry(0);
        assert_eq!(entry.message_group_id(), Some("contact-address-book"));
        assert_eq!(entry.message_deduplication_id(), Some("e-1"));
    }

    #[test]
    fn ids_sqs_would_refuse_are_made_to_fit() {
        assert_eq!(fifo_group_id("a b\u{e9}"), "a_b_");
        assert_eq!(fifo_group_id(""), "_");
        assert_eq!(fifo_group_id(&"g".repeat(200)).len(), 128);
        let hashed = fifo_deduplication_id("id with spaces");
        assert_eq!(hashed.len(), 64);
        assert_eq!(hashed, fifo_deduplication_id("id with spaces"));
        assert_eq!(fifo_deduplication_id(&"x".repeat(129)).len(), 64);
        assert_eq!(fifo_deduplication_id("uuid-like-0001"), "uuid-like-0001");
    }
}
