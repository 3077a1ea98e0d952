//! The direct transcoder: protobuf wire bytes straight to the JSON text
//! prost-reflect would write for them, with no `DynamicMessage` between.
//!
//! Each message is read in two passes over its bytes. The first records
//! where every known field's values are (unknown fields are checked and
//! skipped); the second writes the fields in field-number order — the order
//! prost-reflect writes them in — through serde_json's serializer, with the
//! same calls prost-reflect makes, so numbers, strings, base64 and escapes
//! come out byte for byte the same. Nested messages are written the same
//! way, one level deeper. Both passes share one scratch list, kept from one
//! payload to the next.
//!
//! Where protobuf's rules get intricate or prost-reflect has a JSON form of
//! its own, the transcoder stops with a [`Fallback`] and the event is
//! decoded by prost-reflect instead: well-known types, groups, extensions,
//! a singular message sent twice (merged), two members of one oneof, a map
//! key sent twice, nesting past `max_depth`, and any bytes that do not
//! decode — so that a malformed payload is rejected with prost-reflect's
//! own error. The property tests (`tests/transcoder.rs`) hold the two
//! paths to the same output.
//!
//! The one difference allowed: prost-reflect keeps a map in a hash map and
//! writes its entries in no fixed order; the transcoder writes them in wire
//! order. The JSON objects are the same.
//!
//! With `json = "protobufjs"` ([`Transcoder::with_protobufjs`]) it writes
//! what protobufjs' `toJSON()` gave HFXEventStash instead, held to
//! protobufjs' own output by `tests/decoding.rs`: well-known types
//! are plain messages but `Any` (its message's fields and `"@type"`, see
//! [`AnyContents`]); every field on the wire is written, default or not;
//! the last of a singular message sent twice replaces the others, as the
//! last value of a map key does; every member of a oneof sent is written;
//! numbers are printed as JavaScript's doubles (`float` widened, `2` not
//! `2.0`, `-0` as `0`). Only groups, extensions, nesting past `max_depth`,
//! large and malformed payloads are left to prost-reflect then.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

use crate::transcode_schema::{Fallback, FieldPlan, ScalarKind, Shape, TranscodeSchema, ValueKind};
use crate::wire::{WireReader, WireType};
use crate::wire_schema::{MessageIndex, WireSchema};

/// A value as it sits on the wire: its wire type, and its bits (varint and
/// fixed values) or the range of its bytes (length-delimited ones). Offsets
/// are `u32` (payloads past 4 GiB are left to prost-reflect): the scratch
/// list stays small and is written fast.
#[derive(Debug, Clone, Copy)]
struct WireValue {
    bits: u64,
    start: u32,
    end: u32,
    wire: WireType,
}

impl WireValue {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Most field values the transcoder records at once (32 bytes each, 2 MiB
/// in all): a payload of millions of one-byte fields is left to
/// prost-reflect rather than grow the scratch list to many times its size.
const MAX_OCCURRENCES: usize = 1 << 16;

/// One occurrence of a known field in a message's bytes.
#[derive(Debug, Clone, Copy)]
struct Occurrence {
    value: WireValue,
    /// The field's position in its `MessagePlan`.
    slot: u32,
}

/// One entry of a map, decoded (a part not sent holds its default).
#[derive(Debug, Clone, Copy)]
struct MapEntry<'b> {
    key: Scalar<'b>,
    value: EntryValue<'b>,
}

/// A map entry's value: a scalar, or the bytes of a message of a type.
#[derive(Debug, Clone, Copy)]
enum EntryValue<'b> {
    Scalar(Scalar<'b>),
    Message(MessageIndex, WireValue),
}

/// The bytes of a message not sent: the empty message.
const EMPTY_MESSAGE: WireValue = WireValue {
    bits: 0,
    start: 0,
    end: 0,
    wire: WireType::LengthDelimited,
};

/// Transcodes payloads of one proto set; keeps its scratch lists between
/// payloads (one transcoder per batch).
pub(crate) struct Transcoder<'s> {
    schema: &'s TranscodeSchema,
    proto_names: bool,
    max_depth: u32,
    /// Set for protobufjs' shape: the message names `Any`'s type URLs are
    /// looked up in.
    protobufjs: Option<&'s WireSchema>,
    occurrences: RefCell<Vec<Occurrence>>,
    /// Why the last payload was left to prost-reflect: serde's errors
    /// carry only text, so the reason waits here.
    fallback: Cell<Option<Fallback>>,
}

impl<'s> Transcoder<'s> {
    pub(crate) fn new(schema: &'s TranscodeSchema, proto_names: bool, max_depth: u32) -> Transcoder<'s> {
        Transcoder {
            schema,
            proto_names,
            max_depth,
            protobufjs: None,
            occurrences: RefCell::new(Vec::new()),
            fallback: Cell::new(None),
        }
    }

    /// Writes protobufjs' `toJSON()` shape instead of the canonical one;
    /// `names` resolves `Any`'s type URLs.
    pub(crate) fn with_protobufjs(mut self, names: &'s WireSchema) -> Transcoder<'s> {
        self.protobufjs = Some(names);
        self
    }

    /// The JSON of `bytes` as the message `message`, or why prost-reflect
    /// must decode it instead.
    pub(crate) fn transcode(&self, message: MessageIndex, bytes: &[u8]) -> Result<Box<RawValue>, Fallback> {
        if u32::try_from(bytes.len()).is_err() {
            return Err(Fallback::Malformed);
        }
        self.occurrences.borrow_mut().clear();
        self.fallback.set(None);
        let view = MessageView {
            transcoder: self,
            bytes,
            message,
            start: 0,
            end: bytes.len(),
            depth: 0,
            plain: false,
        };
        serde_json::value::to_raw_value(&view).map_err(|_| self.fallback.take().unwrap_or(Fallback::Malformed))
    }

    /// Records why transcoding stops, as a serializer error.
    fn stop<E: serde::ser::Error>(&self, reason: Fallback) -> E {
        self.fallback.set(Some(reason));
        E::custom(reason.label())
    }

    fn field_name<'f>(&self, field: &'f FieldPlan, plain_any: bool) -> &'f str {
        // protobufjs' own `Any` (common.js) names its field `type_url`.
        if self.proto_names || plain_any {
            &field.proto_name
        } else if self.protobufjs.is_some() {
            &field.protobufjs_name
        } else {
            &field.json_name
        }
    }
}

/// A message's bytes, serialised as its JSON object.
struct MessageView<'t, 's, 'b> {
    transcoder: &'t Transcoder<'s>,
    bytes: &'b [u8],
    message: MessageIndex,
    start: usize,
    end: usize,
    /// How deep this message is: the payload is 0.
    depth: u32,
    /// protobufjs' shape: an `Any` written as a plain message of its two
    /// fields (its type is unknown, or is `Any` itself).
    plain: bool,
}

impl Serialize for MessageView<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self.transcoder;
        if let Some(names) = t.protobufjs
            && !self.plain
            && names.is_any(self.message)
        {
            return self.serialize_any(names, serializer);
        }
        let mut map = serializer.serialize_map(None)?;
        self.write_fields(&mut map)?;
        map.end()
    }
}

impl<'t, 's, 'b> MessageView<'t, 's, 'b> {
    /// Writes the message's fields into `map`.
    fn write_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let t = self.transcoder;
        let plan = t.schema.message(self.message);
        if let Some(reason) = plan.unsupported
            && (t.protobufjs.is_none() || reason != Fallback::WellKnownType)
        {
            return Err(t.stop(reason));
        }
        let base = t.occurrences.borrow().len();
        self.scan(&mut t.occurrences.borrow_mut())
            .map_err(|reason| t.stop(reason))?;
        let end = t.occurrences.borrow().len();
        {
            let mut occurrences = t.occurrences.borrow_mut();
            let found = &mut occurrences[base..end];
            if !found.is_sorted_by_key(|occurrence| occurrence.slot) {
                // Stable: a field's values keep their wire order.
                found.sort_by_key(|occurrence| occurrence.slot);
            }
        }
        let mut oneofs_seen = Vec::new();
        let mut first = base;
        while first < end {
            let slot = t.occurrences.borrow()[first].slot;
            let mut last = first + 1;
            while last < end && t.occurrences.borrow()[last].slot == slot {
                last += 1;
            }
            let field = &plan.fields[slot as usize];
            // protobufjs keeps every member of a oneof that was sent.
            if let Some(oneof) = field.oneof
                && t.protobufjs.is_none()
            {
                if oneofs_seen.contains(&oneof) {
                    return Err(t.stop(Fallback::Merge));
                }
                oneofs_seen.push(oneof);
            }
            self.write_field(map, field, first, last)?;
            first = last;
        }
        t.occurrences.borrow_mut().truncate(base);
        Ok(())
    }

    /// protobufjs' `Any`: the fields of the message its type URL names and
    /// `"@type"`; a plain message of `type_url` and `value` if the URL is
    /// empty or names no message, or names `Any` itself.
    fn serialize_any<S: Serializer>(&self, names: &WireSchema, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self.transcoder;
        let contents = AnyContents::read(self.bytes, self.start, self.end).map_err(|reason| t.stop(reason))?;
        let resolved = contents
            .type_name()
            .and_then(|name| names.message(name).map(|message| (name, message)));
        let mut map = serializer.serialize_map(None)?;
        match resolved {
            Some((name, message)) => {
                let mut inner = self.child(message, contents.value).map_err(|reason| t.stop(reason))?;
                inner.plain = names.is_any(message);
                inner.write_fields(&mut map)?;
                if !inner.plain {
                    map.serialize_entry("@type", &contents.type_url_for(name))?;
                }
            }
            None => {
                let plain = MessageView { plain: true, ..*self };
                plain.write_fields(&mut map)?;
            }
        }
        map.end()
    }

    /// First pass: where each known field's values are.
    fn scan(&self, occurrences: &mut Vec<Occurrence>) -> Result<(), Fallback> {
        let plan = self.transcoder.schema.message(self.message);
        let mut reader = WireReader::new(self.bytes);
        reader.seek(self.start);
        while reader.pos() < self.end {
            let (number, wire) = reader.read_key(self.end).map_err(|_| Fallback::Malformed)?;
            let Some(slot) = plan.slot(number) else {
                if plan.is_extension(number) {
                    return Err(Fallback::Extension);
                }
                read_value(&mut reader, wire, self.end)?;
                continue;
            };
            if let Some(reason) = plan.fields[slot].unsupported {
                return Err(reason);
            }
            let value = read_value(&mut reader, wire, self.end)?;
            if occurrences.len() == MAX_OCCURRENCES {
                return Err(Fallback::Large);
            }
            occurrences.push(Occurrence {
                value,
                slot: slot as u32,
            });
        }
        Ok(())
    }

    /// Second pass, for one field: its values are occurrences
    /// `first..last`.
    fn write_field<M: SerializeMap>(
        &self,
        map: &mut M,
        field: &FieldPlan,
        first: usize,
        last: usize,
    ) -> Result<(), M::Error> {
        let t = self.transcoder;
        let name = t.field_name(field, self.plain);
        let values = |index: usize| t.occurrences.borrow()[index].value;
        match (field.cardinality, field.value) {
            (Shape::Singular { .. }, ValueKind::Message(message)) => {
                // protobufjs replaces a message sent twice; protobuf merges.
                if last - first > 1 && t.protobufjs.is_none() {
                    return Err(t.stop(Fallback::Merge));
                }
                if (first..last).any(|index| values(index).wire != WireType::LengthDelimited) {
                    return Err(t.stop(Fallback::Malformed));
                }
                let child = self.child(message, values(last - 1)).map_err(|reason| t.stop(reason))?;
                map.serialize_entry(name, &child)
            }
            (Shape::Singular { presence }, ValueKind::Scalar(kind)) => {
                // Every value is checked; the last one is kept.
                let mut kept = None;
                for index in first..last {
                    kept = Some(Scalar::decode(kind, values(index), self.bytes).map_err(|reason| t.stop(reason))?);
                }
                match kept {
                    // protobufjs writes every field that was on the wire.
                    Some(scalar) if presence || t.protobufjs.is_some() || !scalar.is_default(t.schema) => {
                        map.serialize_entry(name, &ScalarView { transcoder: t, scalar })
                    }
                    _ => Ok(()),
                }
            }
            (Shape::Repeated, value) => {
                let list = ListView {
                    parent: self,
                    value,
                    first,
                    last,
                };
                if list.is_empty() {
                    return Ok(());
                }
                map.serialize_entry(name, &list)
            }
            (Shape::Map { key }, value) => {
                let view = MapView {
                    parent: self,
                    key,
                    value,
                    first,
                    last,
                };
                map.serialize_entry(name, &view)
            }
        }
    }

    /// The message held in `value`, one level deeper.
    fn child(&self, message: MessageIndex, value: WireValue) -> Result<MessageView<'t, 's, 'b>, Fallback> {
        if value.wire != WireType::LengthDelimited {
            return Err(Fallback::Malformed);
        }
        if self.depth >= self.transcoder.max_depth {
            return Err(Fallback::TooDeep);
        }
        Ok(MessageView {
            transcoder: self.transcoder,
            bytes: self.bytes,
            message,
            start: value.start as usize,
            end: value.end as usize,
            depth: self.depth + 1,
            plain: false,
        })
    }
}

/// Reads the value after a key; groups are left to prost-reflect.
/// Always inlined: returned through memory, its result was read back
/// before the store had landed (a store-forwarding stall that was a third
/// of `scan`'s time).
#[inline(always)]
fn read_value(reader: &mut WireReader<'_>, wire: WireType, end: usize) -> Result<WireValue, Fallback> {
    let malformed = |_| Fallback::Malformed;
    let (bits, start, stop) = match wire {
        WireType::Varint => (reader.read_varint(end).map_err(malformed)?, 0, 0),
        WireType::Fixed32 => (reader.read_fixed(4, end).map_err(malformed)?, 0, 0),
        WireType::Fixed64 => (reader.read_fixed(8, end).map_err(malformed)?, 0, 0),
        WireType::LengthDelimited => {
            let range = reader.read_length_delimited(end).map_err(malformed)?;
            // The payload's length fits in `u32` (checked first).
            (0, range.start as u32, range.end as u32)
        }
        WireType::StartGroup | WireType::EndGroup => return Err(Fallback::Group),
    };
    Ok(WireValue {
        bits,
        start,
        end: stop,
        wire,
    })
}

/// A repeated field's values, in wire order, packed or not.
struct ListView<'p, 't, 's, 'b> {
    parent: &'p MessageView<'t, 's, 'b>,
    value: ValueKind,
    first: usize,
    last: usize,
}

impl ListView<'_, '_, '_, '_> {
    fn value(&self, index: usize) -> WireValue {
        self.parent.transcoder.occurrences.borrow()[index].value
    }

    /// Only empty packed runs: prost-reflect has an empty list, left out.
    fn is_empty(&self) -> bool {
        let ValueKind::Scalar(kind) = self.value else {
            return false;
        };
        kind.packable()
            && (self.first..self.last).all(|index| {
                let value = self.value(index);
                value.wire == WireType::LengthDelimited && value.start == value.end
            })
    }
}

impl Serialize for ListView<'_, '_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self.parent.transcoder;
        let mut list = serializer.serialize_seq(None)?;
        for index in self.first..self.last {
            let value = self.value(index);
            match self.value {
                ValueKind::Message(message) => {
                    let child = self.parent.child(message, value).map_err(|reason| t.stop(reason))?;
                    list.serialize_element(&child)?;
                }
                ValueKind::Scalar(kind) if kind.packable() && value.wire == WireType::LengthDelimited => {
                    let mut reader = WireReader::new(self.parent.bytes);
                    let end = value.end as usize;
                    reader.seek(value.start as usize);
                    while reader.pos() < end {
                        let element = read_packed(&mut reader, kind, end).map_err(|reason| t.stop(reason))?;
                        let scalar =
                            Scalar::decode(kind, element, self.parent.bytes).map_err(|reason| t.stop(reason))?;
                        list.serialize_element(&ScalarView { transcoder: t, scalar })?;
                    }
                }
                ValueKind::Scalar(kind) => {
                    let scalar = Scalar::decode(kind, value, self.parent.bytes).map_err(|reason| t.stop(reason))?;
                    list.serialize_element(&ScalarView { transcoder: t, scalar })?;
                }
            }
        }
        list.end()
    }
}

/// Reads one element of a packed run.
fn read_packed(reader: &mut WireReader<'_>, kind: ScalarKind, end: usize) -> Result<WireValue, Fallback> {
    let wire = scalar_wire_type(kind);
    read_value(reader, wire, end).map_err(|_| Fallback::Malformed)
}

/// A map field: its entries, in wire order.
struct MapView<'p, 't, 's, 'b> {
    parent: &'p MessageView<'t, 's, 'b>,
    key: ScalarKind,
    value: ValueKind,
    first: usize,
    last: usize,
}

/// A decoded map key, to find keys sent twice.
#[derive(Debug, PartialEq, Eq, Hash)]
enum KeyIdentity<'b> {
    Bool(bool),
    Signed(i64),
    Unsigned(u64),
    Text(&'b str),
}

/// Past this many entries, keys sent twice are found with a hash set.
const PAIRWISE_KEYS: usize = 16;

impl<'b> MapView<'_, '_, '_, 'b> {
    /// Reads and decodes every entry of the map, in wire order.
    fn read_entries(&self) -> Result<Vec<MapEntry<'b>>, Fallback> {
        let t = self.parent.transcoder;
        (self.first..self.last)
            .map(|index| {
                let entry = t.occurrences.borrow()[index].value;
                if entry.wire != WireType::LengthDelimited {
                    return Err(Fallback::Malformed);
                }
                self.read_entry(entry)
            })
            .collect()
    }

    fn read_entry(&self, entry: WireValue) -> Result<MapEntry<'b>, Fallback> {
        let bytes = self.parent.bytes;
        let mut reader = WireReader::new(bytes);
        let end = entry.end as usize;
        reader.seek(entry.start as usize);
        let (mut key, mut value) = (None, None);
        while reader.pos() < end {
            let (number, wire) = reader.read_key(end).map_err(|_| Fallback::Malformed)?;
            let read = read_value(&mut reader, wire, end)?;
            match (number, self.value) {
                (1, _) => key = Some(Scalar::decode(self.key, read, bytes)?),
                // protobufjs replaces a value message sent twice.
                (2, ValueKind::Message(_)) if value.is_some() && self.parent.transcoder.protobufjs.is_none() => {
                    return Err(Fallback::Merge);
                }
                (2, ValueKind::Message(_)) if read.wire != WireType::LengthDelimited => {
                    return Err(Fallback::Malformed);
                }
                (2, ValueKind::Message(message)) => value = Some(EntryValue::Message(message, read)),
                (2, ValueKind::Scalar(kind)) => value = Some(EntryValue::Scalar(Scalar::decode(kind, read, bytes)?)),
                _ => {}
            }
        }
        let schema = self.parent.transcoder.schema;
        Ok(MapEntry {
            key: key.unwrap_or_else(|| Scalar::default_of(self.key, schema)),
            value: value.unwrap_or(match self.value {
                ValueKind::Message(message) => EntryValue::Message(message, EMPTY_MESSAGE),
                ValueKind::Scalar(kind) => EntryValue::Scalar(Scalar::default_of(kind, schema)),
            }),
        })
    }

    /// prost-reflect keeps the last value of a key sent twice, in a hash
    /// map: left to it.
    fn check_unique_keys(entries: &[MapEntry<'b>]) -> Result<(), Fallback> {
        let keys = entries.iter().map(|entry| KeyIdentity::of(entry.key));
        let unique = if entries.len() <= PAIRWISE_KEYS {
            let keys: Vec<KeyIdentity<'b>> = keys.collect();
            keys.iter().enumerate().all(|(index, key)| !keys[..index].contains(key))
        } else {
            let mut seen = HashSet::with_capacity(entries.len());
            keys.into_iter().all(|key| seen.insert(key))
        };
        if unique { Ok(()) } else { Err(Fallback::DuplicateMapKey) }
    }
}

impl<'b> KeyIdentity<'b> {
    /// The identity of a decoded key (map keys are never floats, bytes or
    /// enums).
    fn of(key: Scalar<'b>) -> KeyIdentity<'b> {
        match key {
            Scalar::Bool(value) => KeyIdentity::Bool(value),
            Scalar::I32(value) | Scalar::Enum(value, _) => KeyIdentity::Signed(i64::from(value)),
            Scalar::I64(value) => KeyIdentity::Signed(value),
            Scalar::U32(value) => KeyIdentity::Unsigned(u64::from(value)),
            Scalar::U64(value) => KeyIdentity::Unsigned(value),
            Scalar::Str(value) => KeyIdentity::Text(value),
            Scalar::F32(_) | Scalar::F64(_) | Scalar::Bytes(_) => KeyIdentity::Bool(false),
        }
    }
}

/// The entries of a map whose keys were sent more than once, each key with
/// its last value.
fn keep_last_of_each_key(entries: Vec<MapEntry<'_>>) -> Vec<MapEntry<'_>> {
    let mut last = std::collections::HashMap::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        last.insert(KeyIdentity::of(entry.key), index);
    }
    let keep: Vec<bool> = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| last[&KeyIdentity::of(entry.key)] == index)
        .collect();
    entries
        .into_iter()
        .zip(keep)
        .filter_map(|(entry, kept)| kept.then_some(entry))
        .collect()
}

impl Serialize for MapView<'_, '_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = self.parent.transcoder;
        let mut entries = self.read_entries().map_err(|reason| t.stop(reason))?;
        if let Err(reason) = Self::check_unique_keys(&entries) {
            if t.protobufjs.is_none() {
                return Err(t.stop(reason));
            }
            // protobufjs: a key's last value replaces the earlier ones.
            entries = keep_last_of_each_key(entries);
        }
        let mut map = serializer.serialize_map(Some(entries.len()))?;
        for entry in &entries {
            let key = MapKeyView(entry.key);
            match entry.value {
                EntryValue::Message(message, value) => {
                    let child = self.parent.child(message, value).map_err(|reason| t.stop(reason))?;
                    map.serialize_entry(&key, &child)?;
                }
                EntryValue::Scalar(scalar) => {
                    map.serialize_entry(&key, &ScalarView { transcoder: t, scalar })?;
                }
            }
        }
        map.end()
    }
}

/// What an `Any` holds: its type URL and the bytes of its message (the last
/// of each sent; an empty message if none was).
#[derive(Debug, Clone, Copy)]
struct AnyContents<'b> {
    type_url: &'b str,
    value: WireValue,
}

impl<'b> AnyContents<'b> {
    fn read(bytes: &'b [u8], start: usize, end: usize) -> Result<AnyContents<'b>, Fallback> {
        let mut reader = WireReader::new(bytes);
        reader.seek(start);
        let mut contents = AnyContents {
            type_url: "",
            value: EMPTY_MESSAGE,
        };
        while reader.pos() < end {
            let (number, wire) = reader.read_key(end).map_err(|_| Fallback::Malformed)?;
            let value = read_value(&mut reader, wire, end)?;
            match number {
                1 => match Scalar::decode(ScalarKind::String, value, bytes)? {
                    Scalar::Str(url) => contents.type_url = url,
                    _ => return Err(Fallback::Malformed),
                },
                2 if value.wire != WireType::LengthDelimited => return Err(Fallback::Malformed),
                2 => contents.value = value,
                _ => {}
            }
        }
        Ok(contents)
    }

    /// The message name after the URL's last `/`, if the URL is not empty.
    fn type_name(&self) -> Option<&'b str> {
        if self.type_url.is_empty() {
            return None;
        }
        Some(self.type_url.rsplit('/').next().unwrap_or(self.type_url))
    }

    /// The `"@type"` protobufjs writes: the URL's prefix (through its last
    /// `/`, `type.googleapis.com/` if it has none) and the message's name.
    fn type_url_for(&self, name: &str) -> String {
        match self.type_url.rfind('/') {
            Some(slash) => format!("{}{name}", &self.type_url[..=slash]),
            None => format!("type.googleapis.com/{name}"),
        }
    }
}

mod scalar;

pub(crate) use scalar::js_number;
use scalar::{MapKeyView, Scalar, ScalarView, scalar_wire_type};

#[cfg(test)]
mod tests;
