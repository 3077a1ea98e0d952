//! The items of the event store and the events inside change sets, both
//! ways: built for writing (with DynamoDB's size rules checked first, so an
//! oversized change set is refused with its size, not by a failed
//! transaction) and read back into change sets and events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use eventstash_plugin_api::{ChangeSet, Event, EventStoreError, Format, Payload, StoredPayload, parse_timestamp};
use serde_json::value::RawValue;

use crate::attribute_json::to_json_text;
use crate::attribute_value::{self, Converted};
use crate::item::MAX_ITEM_BYTES;

/// Key and attribute names of both tables.
pub(crate) const AGGREGATE_ID: &str = "AggregateId";
pub(crate) const VERSION: &str = "Version";
pub(crate) const AGGREGATE_TYPE: &str = "AggregateType";
pub(crate) const CHANGE_SET_ID: &str = "ChangeSetId";
pub(crate) const TIMESTAMP: &str = "Timestamp";
pub(crate) const EVENTS: &str = "Events";
pub(crate) const CREATED_AT: &str = "CreatedAt";
pub(crate) const UPDATED_AT: &str = "UpdatedAt";
/// The idempotency marker of a change set id: an item of the change sets
/// table under `AggregateId = MARKER_PREFIX + id` and `Version = 0`. Real
/// change sets start at version 1, so no aggregate id can collide with it,
/// and it has no `AggregateType`, so it stays out of the index.
pub(crate) const MARKER_PREFIX: &str = "change-set-id#";
/// The marker's aggregate and version.
pub(crate) const FOR_AGGREGATE_ID: &str = "ForAggregateId";
pub(crate) const FOR_VERSION: &str = "ForVersion";

/// The longest aggregate id, aggregate type or change set id, in bytes:
/// half of DynamoDB's 2 KB partition key, leaving room for the marker's
/// prefix.
pub(crate) const MAX_ID_BYTES: usize = 1024;
/// Room kept in a change set item for its own attributes besides `Events`.
const CHANGE_SET_OVERHEAD: usize = 3 * MAX_ID_BYTES + 128;

/// A DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// The append time of a change set: microseconds, never earlier than the
/// previous one in this process, so an agent whose clock steps back still
/// stores an aggregate's change sets in time order. (Agents on several
/// machines rely on their clocks agreeing to within the time between two
/// appends to one aggregate.)
pub(crate) fn append_time() -> DateTime<Utc> {
    static LAST_MICROS: AtomicI64 = AtomicI64::new(0);
    let now = Utc::now().timestamp_micros();
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_MICROS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return DateTime::from_timestamp_micros(next).unwrap_or_default(),
            Err(seen) => last = seen,
        }
    }
}

/// The `Timestamp` text: RFC 3339 UTC with microseconds, fixed width, so
/// that text order is time order.
pub(crate) fn timestamp_text(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Checks an id the request names against the key limits.
pub(crate) fn check_id(name: &str, value: &str) -> Result<(), EventStoreError> {
    if value.is_empty() {
        return Err(EventStoreError::Invalid(format!("{name} must not be empty")));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(EventStoreError::Invalid(format!(
            "{name} is {} bytes, over the {MAX_ID_BYTES}-byte limit",
            value.len()
        )));
    }
    Ok(())
}

/// The `Events` attribute of a change set: a list of maps in the document
/// shape. Refused, with its size, if the change set cannot fit one item.
pub(crate) fn events_attribute(events: &[Event]) -> Result<AttributeValue, EventStoreError> {
    let mut size = 3;
    let mut maps = Vec::with_capacity(events.len());
    for (n, event) in events.iter().enumerate() {
        let map = event_map(event)
            .map_err(|reason| EventStoreError::Invalid(format!("event {n} (`{}`): {reason}", event.id)))?;
        size += map.size + 1;
        maps.push(map.value);
    }
    let limit = MAX_ITEM_BYTES - CHANGE_SET_OVERHEAD;
    if size > limit {
        return Err(EventStoreError::Invalid(format!(
            "the change set is {size} bytes as stored, over the {limit} bytes that fit one DynamoDB item \
             (400 KB): split it into several change sets or store large data elsewhere"
        )));
    }
    Ok(AttributeValue::L(maps))
}

/// The levels of lists and maps an event's `data` may use: the `Events`
/// list and the event's map take two of DynamoDB's 32.
const DATA_NESTING: usize = attribute_value::MAX_NESTING - 2;

/// One event as a map in the document shape.
fn event_map(event: &Event) -> Result<Converted, attribute_value::DataError> {
    let mut fields = HashMap::with_capacity(7);
    let mut size = 3;
    let mut put = |name: &str, value: Converted| {
        size += name.len() + value.size + 1;
        fields.insert(name.to_owned(), value.value);
    };
    put("index", attribute_value::string(event.index.clone()));
    put("kind", attribute_value::string(event.kind.clone()));
    put("format", attribute_value::string(event.format.as_str().to_owned()));
    match &event.payload {
        Payload::Json(raw) => put("data", attribute_value::from_json_text(raw.get(), DATA_NESTING)?),
        Payload::Value(value) => put("data", attribute_value::from_json_value(value, DATA_NESTING)?),
        Payload::InvalidJson { plain, raw } => {
            put("plain", attribute_value::string(plain.clone()));
            if let Some(raw) = raw {
                put("raw", binary(raw));
            }
            put("invalidJson", flag());
        }
        Payload::Protobuf(bytes) => put("raw", binary(bytes)),
        Payload::InvalidProto(bytes) => {
            put("raw", binary(bytes));
            put("invalidProto", flag());
        }
    }
    put("id", attribute_value::string(event.id.clone()));
    if let Some(source) = &event.source {
        put("source", attribute_value::string(source.clone()));
    }
    put("@timestamp", attribute_value::string(event.timestamp()));
    Ok(Converted {
        value: AttributeValue::M(fields),
        size,
    })
}

fn binary(bytes: &Bytes) -> Converted {
    Converted {
        value: AttributeValue::B(Blob::new(bytes.to_vec())),
        size: bytes.len(),
    }
}

fn flag() -> Converted {
    Converted {
        value: AttributeValue::Bool(true),
        size: 1,
    }
}

/// A number attribute.
pub(crate) fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A string attribute.
pub(crate) fn string(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// The text of a string attribute, if `item` has one named `name`.
pub(crate) fn text_of<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

/// The value of a number attribute, if `item` has one named `name`.
pub(crate) fn number_of(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// Reads a change set item back.
pub(crate) fn change_set_from_item(item: &Item) -> Result<ChangeSet, EventStoreError> {
    let broken = |what: &str| {
        EventStoreError::Inconsistent(format!(
            "a change set item of aggregate `{}` {what}",
            text_of(item, AGGREGATE_ID).unwrap_or("?")
        ))
    };
    let stored_at = text_of(item, TIMESTAMP)
        .and_then(|text| parse_timestamp(text).ok())
        .ok_or_else(|| broken("has no readable `Timestamp`"))?;
    let events = match item.get(EVENTS) {
        Some(AttributeValue::L(maps)) => maps
            .iter()
            .map(event_from_map)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| broken(&reason))?,
        _ => return Err(broken("has no `Events` list")),
    };
    Ok(ChangeSet {
        aggregate_id: text_of(item, AGGREGATE_ID)
            .ok_or_else(|| broken("has no id"))?
            .to_owned(),
        aggregate_type: text_of(item, AGGREGATE_TYPE).unwrap_or_default().to_owned(),
        version: number_of(item, VERSION).ok_or_else(|| broken("has no `Version`"))?,
        change_set_id: text_of(item, CHANGE_SET_ID).unwrap_or_default().to_owned(),
        stored_at,
        events,
    })
}

/// Reads one event of a change set back.
pub(crate) fn event_from_map(value: &AttributeValue) -> Result<Event, String> {
    let AttributeValue::M(map) = value else {
        return Err("holds an event that is not a map".to_owned());
    };
    let text = |name: &str| map.get(name).and_then(|v| v.as_s().ok()).cloned();
    let flag = |name: &str| matches!(map.get(name), Some(AttributeValue::Bool(true)));
    let timestamp = text("@timestamp").unwrap_or_default();
    let received_at = parse_timestamp(&timestamp).map_err(|error| error.to_string())?;
    let data = match map.get("data") {
        Some(value) => Some(RawValue::from_string(to_json_text(value)).map_err(|error| error.to_string())?),
        None => None,
    };
    let payload = StoredPayload {
        data,
        plain: text("plain"),
        raw: map
            .get("raw")
            .and_then(|v| v.as_b().ok())
            .map(|blob| Bytes::copy_from_slice(blob.as_ref())),
        invalid_json: flag("invalidJson"),
        invalid_proto: flag("invalidProto"),
    }
    .into_payload();
    let format = match text("format").as_deref() {
        Some("PROTOBUF") => Format::Protobuf,
        _ => Format::Json,
    };
    let mut event = Event::with_payload(
        format,
        payload,
        text("kind").unwrap_or_default(),
        text("id").unwrap_or_default(),
        received_at,
    );
    event.source = text("source");
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(format: Format, data: &[u8]) -> Event {
        let at = parse_timestamp("2026-11-23T09:01:40.123Z").unwrap();
        Event::new(
            format,
            Bytes::copy_from_slice(data),
            "contact.AddressBook".into(),
            "e-1".into(),
            at,
        )
    }

    #[test]
    fn events_read_back_as_they_were_stored() {
        let mut producer = event(Format::Json, b"{}");
        producer.source = Some("billing".into());
        let events = vec![
            producer,
            event(Format::Json, br#"{"n":12345678901234567890123,"tags":["a"]}"#),
            event(Format::Json, b"{oops"),
            event(Format::Protobuf, &[10, 1, 97]),
        ];
        let AttributeValue::L(maps) = events_attribute(&events).unwrap() else {
            panic!("not a list")
        };
        for (event, map) in events.iter().zip(&maps) {
            let back = event_from_map(map).unwrap();
            assert_eq!(
                serde_json::to_string(&back).unwrap(),
                serde_json::to_string(event).unwrap()
            );
        }
    }

    #[test]
    fn a_change_set_over_one_item_is_refused_with_its_size() {
        let blob = format!(r#"{{"blob":"{}"}}"#, "x".repeat(100_000));
        let events: Vec<Event> = (0..5).map(|_| event(Format::Json, blob.as_bytes())).collect();
        let error = events_attribute(&events).unwrap_err();
        assert!(error.to_string().contains("400 KB"), "{error}");
        assert!(events_attribute(&events[..3]).is_ok());
    }

    #[test]
    fn append_times_only_move_forward_and_sort_as_text() {
        let first = append_time();
        let second = append_time();
        assert!(second > first);
        assert!(timestamp_text(second) > timestamp_text(first));
        assert_eq!(timestamp_text(first).len(), "2026-11-23T09:01:40.123456Z".len());
    }
}
