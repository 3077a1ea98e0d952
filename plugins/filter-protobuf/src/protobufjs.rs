//! protobufjs' `toJSON()` shape for a message prost-reflect decoded: the
//! fallback of `json = "protobufjs"` for what the transcoder leaves to
//! prost-reflect (groups, extensions, large payloads).
//!
//! The rules are the transcoder's (see `transcode`): well-known types are
//! objects of their fields but `Any`, which is its message's fields and
//! `"@type"`; 64-bit integers as strings, enum names (numbers when
//! unknown), bytes as base64, numbers as JavaScript prints doubles. An
//! extension is written under protobufjs' name for it, `.package.fieldName`.
//! prost-reflect's message has merged what the wire held, so here a field
//! of proto3's implicit presence sent with its default value is left out,
//! where protobufjs writes it: the one difference, and only for payloads
//! the transcoder does not write.

use std::borrow::Cow;

use base64::display::Base64Display;
use base64::prelude::BASE64_STANDARD;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, ReflectMessage, Value};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::transcode::js_number;

const ANY: &str = "google.protobuf.Any";

/// protobufjs' name for a field (its `util.camelCase`, applied when it
/// parses a `.proto` file): an underscore before a lowercase letter is
/// dropped and the letter capitalised, but not at the start. Unlike
/// protoc's `json_name` (which protobufjs ignores), `foo_1bar`, `foo__bar`
/// and `x_Y` keep their underscores.
pub(crate) fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    if let Some(first) = chars.next() {
        out.push(first);
    }
    while let Some(c) = chars.next() {
        match chars.peek() {
            Some(next) if c == '_' && next.is_ascii_lowercase() => {
                out.push(next.to_ascii_uppercase());
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// A message, serialised in protobufjs' shape.
pub(crate) struct ProtobufjsMessage<'a> {
    pub(crate) message: &'a DynamicMessage,
    pub(crate) pool: &'a DescriptorPool,
    pub(crate) proto_names: bool,
}

impl Serialize for ProtobufjsMessage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if self.message.descriptor().full_name() == ANY {
            self.write_any(&mut map)?;
        } else {
            self.write_fields(&mut map, false)?;
        }
        map.end()
    }
}

impl<'a> ProtobufjsMessage<'a> {
    fn nested(&self, message: &'a DynamicMessage) -> ProtobufjsMessage<'a> {
        ProtobufjsMessage { message, ..*self }
    }

    /// The declared fields that are set, then the extensions.
    fn write_fields<M: SerializeMap>(&self, map: &mut M, plain_any: bool) -> Result<(), M::Error> {
        for (field, value) in self.message.fields() {
            // protobufjs' own `Any` (common.js) names its field `type_url`.
            let name = if self.proto_names || plain_any {
                Cow::Borrowed(field.name())
            } else {
                Cow::Owned(camel_case(field.name()))
            };
            let view = ValueView {
                owner: self,
                value,
                kind: field.kind(),
                map_value: field.is_map(),
            };
            map.serialize_entry(&name, &view)?;
        }
        for (extension, value) in self.message.extensions() {
            let scope = extension.full_name().rsplit_once('.').map_or("", |(scope, _)| scope);
            let name = format!(".{scope}.{}", camel_case(extension.name()));
            let view = ValueView {
                owner: self,
                value,
                kind: extension.kind(),
                map_value: extension.is_map(),
            };
            map.serialize_entry(&name, &view)?;
        }
        Ok(())
    }

    /// As `transcode::MessageView::serialize_any`.
    fn write_any<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let text = |number| match self.message.get_field_by_number(number).as_deref() {
            Some(Value::String(url)) => url.clone(),
            _ => String::new(),
        };
        let type_url = text(1);
        let name = type_url.rsplit('/').next().unwrap_or_default();
        let descriptor = (!type_url.is_empty())
            .then(|| self.pool.get_message_by_name(name))
            .flatten();
        let Some(descriptor) = descriptor else {
            return self.write_fields(map, true);
        };
        let value = match self.message.get_field_by_number(2).as_deref() {
            Some(Value::Bytes(bytes)) => bytes.clone(),
            _ => Default::default(),
        };
        let inner = DynamicMessage::decode(descriptor.clone(), value).map_err(M::Error::custom)?;
        if descriptor.full_name() == ANY {
            return self.nested(&inner).write_fields(map, true);
        }
        self.nested(&inner).write_fields(map, false)?;
        let prefix = match type_url.rfind('/') {
            Some(slash) => &type_url[..=slash],
            None => "type.googleapis.com/",
        };
        map.serialize_entry("@type", &format!("{prefix}{name}"))
    }
}

/// A field's value: `kind` is its element's kind (a list's, or a map entry
/// message's when `map_value`).
struct ValueView<'v, 'a> {
    owner: &'v ProtobufjsMessage<'a>,
    value: &'v Value,
    kind: Kind,
    map_value: bool,
}

impl Serialize for ValueView<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Bool(value) => serializer.serialize_bool(*value),
            Value::I32(value) => serializer.serialize_i32(*value),
            Value::U32(value) => serializer.serialize_u32(*value),
            Value::I64(value) => serializer.collect_str(value),
            Value::U64(value) => serializer.collect_str(value),
            Value::F32(value) => js_number(f64::from(*value), serializer),
            Value::F64(value) => js_number(*value, serializer),
            Value::String(value) => serializer.serialize_str(value),
            Value::Bytes(value) => serializer.collect_str(&Base64Display::new(value, &BASE64_STANDARD)),
            Value::EnumNumber(number) => match self.kind.as_enum().and_then(|e| e.get_value(*number)) {
                Some(value) => serializer.serialize_str(value.name()),
                None => serializer.serialize_i32(*number),
            },
            Value::Message(message) => self.owner.nested(message).serialize(serializer),
            Value::List(values) => {
                let mut list = serializer.serialize_seq(Some(values.len()))?;
                for value in values {
                    list.serialize_element(&ValueView {
                        value,
                        kind: self.kind.clone(),
                        map_value: false,
                        ..*self
                    })?;
                }
                list.end()
            }
            Value::Map(entries) => {
                let value_kind = match (&self.kind, self.map_value) {
                    (Kind::Message(entry), true) => entry.map_entry_value_field().kind(),
                    _ => return Err(S::Error::custom("a map field without a map entry type")),
                };
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    let view = ValueView {
                        value,
                        kind: value_kind.clone(),
                        map_value: false,
                        ..*self
                    };
                    map.serialize_entry(&MapKeyView(key), &view)?;
                }
                map.end()
            }
        }
    }
}

/// A map key as a string (protobufjs writes 64-bit keys as the bytes of
/// its internal hash; eventstash writes their decimal value, see README).
struct MapKeyView<'k>(&'k MapKey);

impl Serialize for MapKeyView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            MapKey::Bool(key) => serializer.collect_str(key),
            MapKey::I32(key) => serializer.collect_str(key),
            MapKey::I64(key) => serializer.collect_str(key),
            MapKey::U32(key) => serializer.collect_str(key),
            MapKey::U64(key) => serializer.collect_str(key),
            MapKey::String(key) => serializer.serialize_str(key),
        }
    }
}

#[cfg(test)]
mod tests;
