//! The messages of a descriptor pool as the transcoder needs them: each
//! field's number, JSON names, type, cardinality and oneof, and each enum's
//! value names — built once per proto set in plain indexed tables, so that
//! transcoding a payload never touches prost-reflect's reference-counted
//! descriptors.
//!
//! Message types are indexed as in [`WireSchema`](crate::wire_schema): in
//! the pool's `all_messages()` order. What the transcoder does not cover
//! (the well-known types prost-reflect writes in a form of their own,
//! groups, extensions) is marked here, and an event that reaches it is
//! decoded by prost-reflect instead.

use std::collections::HashMap;

use prost_reflect::{Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};

use crate::wire_schema::MessageIndex;

/// The well-known types prost-reflect serialises in a JSON form of their
/// own (not as an object of their fields).
const SPECIAL_JSON: &[&str] = &[
    "google.protobuf.Any",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.FieldMask",
    "google.protobuf.Empty",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
];

/// An enum type's position in a `TranscodeSchema`.
pub(crate) type EnumIndex = u32;

/// The type of a scalar value (everything but a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarKind {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    Enum(EnumIndex),
}

impl ScalarKind {
    /// Whether repeated values of this type may come packed.
    pub(crate) fn packable(self) -> bool {
        !matches!(self, ScalarKind::String | ScalarKind::Bytes)
    }
}

/// The type of a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
    Scalar(ScalarKind),
    Message(MessageIndex),
}

/// How many values a field holds, and how absence shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One value. With `presence`, a value on the wire is written even if
    /// it is the default; without (proto3's implicit presence), a default
    /// value is left out.
    Singular { presence: bool },
    /// A list, written in wire order; left out when empty.
    Repeated,
    /// A map of `key` to the field's value kind.
    Map { key: ScalarKind },
}

/// What the transcoder leaves to prost-reflect, and the label it is counted
/// under in `eventstash_protobuf_fallbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// A well-known type with a JSON form of its own (`Timestamp`, `Any`…).
    WellKnownType,
    /// A proto2 group, declared or unknown.
    Group,
    /// An extension field.
    Extension,
    /// A singular message sent more than once (merged), or two members of
    /// one oneof: protobuf's merge rules.
    Merge,
    /// A map key sent twice.
    DuplicateMapKey,
    /// Nesting past `max_depth`: the depth check reports it.
    TooDeep,
    /// More field values than the transcoder keeps track of at once
    /// (`MAX_OCCURRENCES`): its scratch memory stays bounded.
    Large,
    /// Bytes that do not decode: prost-reflect's error is the one reported.
    Malformed,
}

impl Fallback {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Fallback::WellKnownType => "well_known_type",
            Fallback::Group => "group",
            Fallback::Extension => "extension",
            Fallback::Merge => "merge",
            Fallback::DuplicateMapKey => "duplicate_map_key",
            Fallback::TooDeep => "too_deep",
            Fallback::Large => "large",
            Fallback::Malformed => "malformed",
        }
    }

    /// Every reason, for counting per batch.
    pub(crate) const ALL: [Fallback; 8] = [
        Fallback::WellKnownType,
        Fallback::Group,
        Fallback::Extension,
        Fallback::Merge,
        Fallback::DuplicateMapKey,
        Fallback::TooDeep,
        Fallback::Large,
        Fallback::Malformed,
    ];
}

/// One declared field.
#[derive(Debug, Clone)]
pub(crate) struct FieldPlan {
    pub(crate) number: u32,
    /// lowerCamelCase (`json_name`).
    pub(crate) json_name: Box<str>,
    /// As written in the `.proto` file.
    pub(crate) proto_name: Box<str>,
    /// protobufjs' name for it (`protobufjs::camel_case`).
    pub(crate) protobufjs_name: Box<str>,
    pub(crate) value: ValueKind,
    pub(crate) cardinality: Shape,
    /// Its oneof's index within the message (real and synthetic oneofs).
    pub(crate) oneof: Option<u32>,
    /// Set when the field is one the transcoder leaves to prost-reflect.
    pub(crate) unsupported: Option<Fallback>,
}

/// One message type.
#[derive(Debug, Clone, Default)]
pub(crate) struct MessagePlan {
    /// Its fields, by number.
    pub(crate) fields: Box<[FieldPlan]>,
    /// Field numbers of extensions of this message in the pool.
    extensions: Box<[u32]>,
    /// Set for the well-known types with a JSON form of their own.
    pub(crate) unsupported: Option<Fallback>,
}

impl MessagePlan {
    /// The position of field `number` in `fields`.
    pub(crate) fn slot(&self, number: u32) -> Option<usize> {
        self.fields.binary_search_by_key(&number, |field| field.number).ok()
    }

    /// Whether `number` is an extension of this message.
    pub(crate) fn is_extension(&self, number: u32) -> bool {
        self.extensions.contains(&number)
    }
}

/// One enum type: its value names by number, and its default.
#[derive(Debug, Clone)]
pub(crate) struct EnumPlan {
    /// The name prost-reflect writes for each number (the first declared
    /// of aliases), sorted by number.
    names: Box<[(i32, Box<str>)]>,
    /// `google.protobuf.NullValue`, written as `null`.
    pub(crate) is_null_value: bool,
    /// The number of its first value: an implicit-presence field holding it
    /// is left out.
    pub(crate) default: i32,
}

impl EnumPlan {
    /// The name of value `number`, if it has one.
    pub(crate) fn name(&self, number: i32) -> Option<&str> {
        self.names
            .binary_search_by_key(&number, |(known, _)| *known)
            .ok()
            .map(|found| &*self.names[found].1)
    }
}

/// Every message and enum type of a pool, by index.
#[derive(Debug, Clone, Default)]
pub(crate) struct TranscodeSchema {
    messages: Vec<MessagePlan>,
    enums: Vec<EnumPlan>,
}

impl TranscodeSchema {
    pub(crate) fn new(pool: &DescriptorPool) -> TranscodeSchema {
        let index = Indexes::new(pool);
        let mut messages: Vec<MessagePlan> = pool
            .all_messages()
            .map(|message| index.message_plan(&message))
            .collect();
        for extension in pool.all_extensions() {
            let extended = index.message(&extension.containing_message()) as usize;
            let mut numbers = messages[extended].extensions.to_vec();
            numbers.push(extension.number());
            messages[extended].extensions = numbers.into();
        }
        let enums = pool.all_enums().map(|descriptor| enum_plan(&descriptor)).collect();
        TranscodeSchema { messages, enums }
    }

    pub(crate) fn message(&self, index: MessageIndex) -> &MessagePlan {
        &self.messages[index as usize]
    }

    pub(crate) fn enumeration(&self, index: EnumIndex) -> &EnumPlan {
        &self.enums[index as usize]
    }
}

/// Names to indexes, while the tables are built.
struct Indexes {
    messages: HashMap<String, MessageIndex>,
    enums: HashMap<String, EnumIndex>,
}

impl Indexes {
    fn new(pool: &DescriptorPool) -> Indexes {
        Indexes {
            messages: pool.all_messages().map(|m| m.full_name().to_owned()).zip(0..).collect(),
            enums: pool.all_enums().map(|e| e.full_name().to_owned()).zip(0..).collect(),
        }
    }

    /// Every message a pool's descriptors refer to is in the pool.
    fn message(&self, message: &MessageDescriptor) -> MessageIndex {
        self.messages[message.full_name()]
    }

    fn message_plan(&self, message: &MessageDescriptor) -> MessagePlan {
        let oneofs: Vec<String> = message.oneofs().map(|oneof| oneof.full_name().to_owned()).collect();
        let mut fields: Vec<FieldPlan> = message.fields().map(|field| self.field_plan(&field, &oneofs)).collect();
        fields.sort_unstable_by_key(|field| field.number);
        MessagePlan {
            fields: fields.into(),
            extensions: Box::default(),
            unsupported: SPECIAL_JSON
                .contains(&message.full_name())
                .then_some(Fallback::WellKnownType),
        }
    }

    fn field_plan(&self, field: &FieldDescriptor, oneofs: &[String]) -> FieldPlan {
        let mut unsupported = field.is_group().then_some(Fallback::Group);
        let (value, cardinality) = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("a map field's kind is its entry message")
            };
            let key = self.scalar(&entry.map_entry_key_field().kind());
            let value = self.value(&entry.map_entry_value_field().kind());
            match key {
                Some(key) => (value, Shape::Map { key }),
                None => {
                    // Map keys are never messages; keep the field readable.
                    unsupported = Some(Fallback::Malformed);
                    (value, Shape::Repeated)
                }
            }
        } else {
            let cardinality = match field.cardinality() {
                Cardinality::Repeated => Shape::Repeated,
                _ => Shape::Singular {
                    presence: field.supports_presence(),
                },
            };
            (self.value(&field.kind()), cardinality)
        };
        FieldPlan {
            number: field.number(),
            json_name: field.json_name().into(),
            proto_name: field.name().into(),
            protobufjs_name: crate::protobufjs::camel_case(field.name()).into(),
            value,
            cardinality,
            oneof: field
                .containing_oneof()
                .and_then(|oneof| oneofs.iter().position(|name| name == oneof.full_name()))
                .map(|index| index as u32),
            unsupported,
        }
    }

    fn value(&self, kind: &Kind) -> ValueKind {
        match kind {
            Kind::Message(message) => ValueKind::Message(self.message(message)),
            other => ValueKind::Scalar(self.scalar(other).unwrap_or(ScalarKind::Bytes)),
        }
    }

    fn scalar(&self, kind: &Kind) -> Option<ScalarKind> {
        Some(match kind {
            Kind::Double => ScalarKind::Double,
            Kind::Float => ScalarKind::Float,
            Kind::Int32 => ScalarKind::Int32,
            Kind::Int64 => ScalarKind::Int64,
            Kind::Uint32 => ScalarKind::Uint32,
            Kind::Uint64 => ScalarKind::Uint64,
            Kind::Sint32 => ScalarKind::Sint32,
            Kind::Sint64 => ScalarKind::Sint64,
            Kind::Fixed32 => ScalarKind::Fixed32,
            Kind::Fixed64 => ScalarKind::Fixed64,
            Kind::Sfixed32 => ScalarKind::Sfixed32,
            Kind::Sfixed64 => ScalarKind::Sfixed64,
            Kind::Bool => ScalarKind::Bool,
            Kind::String => ScalarKind::String,
            Kind::Bytes => ScalarKind::Bytes,
            Kind::Enum(descriptor) => ScalarKind::Enum(self.enums[descriptor.full_name()]),
            Kind::Message(_) => return None,
        })
    }
}

fn enum_plan(descriptor: &EnumDescriptor) -> EnumPlan {
    let mut names: Vec<(i32, Box<str>)> = descriptor
        .values()
        .filter_map(|value| {
            // The name prost-reflect's serialiser looks up for this number.
            let named = descriptor.get_value(value.number())?;
            Some((value.number(), named.name().into()))
        })
        .collect();
    names.sort_unstable_by_key(|(number, _)| *number);
    names.dedup_by_key(|(number, _)| *number);
    EnumPlan {
        names: names.into(),
        is_null_value: descriptor.full_name() == "google.protobuf.NullValue",
        default: descriptor.default_value().number(),
    }
}
