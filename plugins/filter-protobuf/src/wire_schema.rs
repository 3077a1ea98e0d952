//! The messages of a descriptor pool as a walk over the wire format needs
//! them: which fields hold messages and how those are encoded, and which
//! message is `google.protobuf.Any`. Built once per proto set, in plain
//! indexed tables, so that walking a payload looks its fields up without
//! touching prost-reflect's reference-counted descriptors.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor};

/// A message type's position in a `WireSchema`.
pub(crate) type MessageIndex = u32;

/// The message whose content the JSON serialiser decodes lazily.
const ANY: &str = "google.protobuf.Any";

/// How a field holding a message is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    LengthDelimited,
    /// proto2 groups (and editions' delimited encoding): start and end keys.
    Group,
    /// A map's entry: a length-delimited message of a key and a value.
    MapEntry,
}

/// A declared field (or extension) whose values are messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageField {
    pub(crate) number: u32,
    pub(crate) message: MessageIndex,
    pub(crate) encoding: Encoding,
    /// Each value is a message of its own, never merged with another.
    pub(crate) repeated: bool,
}

/// One message type.
#[derive(Debug, Clone, Default)]
struct MessageShape {
    is_any: bool,
    /// Its fields that hold messages, by number.
    fields: Box<[MessageField]>,
}

/// Every message type of a pool, by index.
#[derive(Debug, Clone, Default)]
pub(crate) struct WireSchema {
    messages: Vec<MessageShape>,
    by_name: HashMap<Box<str>, MessageIndex>,
}

impl WireSchema {
    pub(crate) fn new(pool: &DescriptorPool) -> WireSchema {
        let by_name: HashMap<Box<str>, MessageIndex> = pool
            .all_messages()
            .zip(0..)
            .map(|(message, index)| (message.full_name().into(), index))
            .collect();
        let mut fields: Vec<Vec<MessageField>> = vec![Vec::new(); by_name.len()];
        for message in pool.all_messages() {
            fields[index_of(&by_name, &message) as usize]
                .extend(message.fields().filter_map(|field| message_field(&by_name, &field)));
        }
        // prost-reflect looks a number up among the fields first, then the
        // extensions.
        for extension in pool.all_extensions() {
            let index = index_of(&by_name, &extension.containing_message()) as usize;
            if let Some(field) = extension_field(&by_name, &extension)
                && !fields[index].iter().any(|known| known.number == field.number)
            {
                fields[index].push(field);
            }
        }
        let messages = pool
            .all_messages()
            .zip(fields)
            .map(|(message, mut fields)| {
                fields.sort_unstable_by_key(|field| field.number);
                MessageShape {
                    is_any: message.full_name() == ANY,
                    fields: fields.into(),
                }
            })
            .collect();
        WireSchema { messages, by_name }
    }

    /// The message type named `full_name` (`package.Message`).
    pub(crate) fn message(&self, full_name: &str) -> Option<MessageIndex> {
        self.by_name.get(full_name).copied()
    }

    pub(crate) fn is_any(&self, message: MessageIndex) -> bool {
        self.messages[message as usize].is_any
    }

    /// The field `number` of `message`, if it holds messages.
    pub(crate) fn message_field(&self, message: MessageIndex, number: u32) -> Option<MessageField> {
        let fields = &self.messages[message as usize].fields;
        fields
            .binary_search_by_key(&number, |field| field.number)
            .ok()
            .map(|found| fields[found])
    }
}

fn message_field(by_name: &HashMap<Box<str>, MessageIndex>, field: &FieldDescriptor) -> Option<MessageField> {
    shape(
        by_name,
        field.number(),
        field.kind(),
        field.is_map(),
        field.is_group(),
        field.is_list(),
    )
}

fn extension_field(by_name: &HashMap<Box<str>, MessageIndex>, field: &ExtensionDescriptor) -> Option<MessageField> {
    shape(
        by_name,
        field.number(),
        field.kind(),
        field.is_map(),
        field.is_group(),
        field.is_list(),
    )
}

fn shape(
    by_name: &HashMap<Box<str>, MessageIndex>,
    number: u32,
    kind: Kind,
    is_map: bool,
    is_group: bool,
    is_list: bool,
) -> Option<MessageField> {
    let Kind::Message(message) = kind else {
        return None;
    };
    let encoding = if is_map {
        Encoding::MapEntry
    } else if is_group {
        Encoding::Group
    } else {
        Encoding::LengthDelimited
    };
    Some(MessageField {
        number,
        message: index_of(by_name, &message),
        encoding,
        repeated: is_list,
    })
}

/// Every message a pool's descriptors refer to is in the pool.
fn index_of(by_name: &HashMap<Box<str>, MessageIndex>, message: &MessageDescriptor) -> MessageIndex {
    by_name[message.full_name()]
}
