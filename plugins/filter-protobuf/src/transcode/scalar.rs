//! Scalar values of the transcoder: decoded from their wire bits as prost
//! decodes them, checked for defaults, and written with the calls
//! prost-reflect makes for them — or, in protobufjs' shape, as JavaScript
//! prints numbers.

use base64::display::Base64Display;
use base64::prelude::BASE64_STANDARD;
use serde::ser::{Error as _, Serialize, Serializer};

use super::{Transcoder, WireValue};
use crate::transcode_schema::{EnumIndex, Fallback, ScalarKind, TranscodeSchema};
use crate::wire::WireType;

/// The wire type a scalar's values are sent with (unpacked).
pub(super) fn scalar_wire_type(kind: ScalarKind) -> WireType {
    match kind {
        ScalarKind::Double | ScalarKind::Fixed64 | ScalarKind::Sfixed64 => WireType::Fixed64,
        ScalarKind::Float | ScalarKind::Fixed32 | ScalarKind::Sfixed32 => WireType::Fixed32,
        ScalarKind::String | ScalarKind::Bytes => WireType::LengthDelimited,
        _ => WireType::Varint,
    }
}

/// A decoded scalar value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scalar<'b> {
    Bool(bool),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    Str(&'b str),
    Bytes(&'b [u8]),
    /// A number of the enum type at this index.
    Enum(i32, EnumIndex),
}

impl<'b> Scalar<'b> {
    /// Decodes a value as prost does, rejecting a wire type the kind does
    /// not allow and strings that are not UTF-8.
    pub(super) fn decode(kind: ScalarKind, value: WireValue, bytes: &'b [u8]) -> Result<Scalar<'b>, Fallback> {
        if value.wire != scalar_wire_type(kind) {
            return Err(Fallback::Malformed);
        }
        let bits = value.bits;
        Ok(match kind {
            ScalarKind::Bool => Scalar::Bool(bits != 0),
            ScalarKind::Int32 => Scalar::I32(bits as i32),
            ScalarKind::Int64 => Scalar::I64(bits as i64),
            ScalarKind::Uint32 => Scalar::U32(bits as u32),
            ScalarKind::Uint64 => Scalar::U64(bits),
            ScalarKind::Sint32 => {
                let n = bits as u32;
                Scalar::I32(((n >> 1) as i32) ^ -((n & 1) as i32))
            }
            ScalarKind::Sint64 => Scalar::I64(((bits >> 1) as i64) ^ -((bits & 1) as i64)),
            ScalarKind::Fixed32 => Scalar::U32(bits as u32),
            ScalarKind::Sfixed32 => Scalar::I32(bits as u32 as i32),
            ScalarKind::Float => Scalar::F32(f32::from_bits(bits as u32)),
            ScalarKind::Fixed64 => Scalar::U64(bits),
            ScalarKind::Sfixed64 => Scalar::I64(bits as i64),
            ScalarKind::Double => Scalar::F64(f64::from_bits(bits)),
            ScalarKind::String => {
                Scalar::Str(std::str::from_utf8(&bytes[value.range()]).map_err(|_| Fallback::Malformed)?)
            }
            ScalarKind::Bytes => Scalar::Bytes(&bytes[value.range()]),
            ScalarKind::Enum(index) => Scalar::Enum(bits as i32, index),
        })
    }

    /// The value of a field not sent.
    pub(super) fn default_of(kind: ScalarKind, schema: &TranscodeSchema) -> Scalar<'static> {
        match kind {
            ScalarKind::Bool => Scalar::Bool(false),
            ScalarKind::Int32 | ScalarKind::Sint32 | ScalarKind::Sfixed32 => Scalar::I32(0),
            ScalarKind::Int64 | ScalarKind::Sint64 | ScalarKind::Sfixed64 => Scalar::I64(0),
            ScalarKind::Uint32 | ScalarKind::Fixed32 => Scalar::U32(0),
            ScalarKind::Uint64 | ScalarKind::Fixed64 => Scalar::U64(0),
            ScalarKind::Float => Scalar::F32(0.0),
            ScalarKind::Double => Scalar::F64(0.0),
            ScalarKind::String => Scalar::Str(""),
            ScalarKind::Bytes => Scalar::Bytes(&[]),
            ScalarKind::Enum(index) => Scalar::Enum(schema.enumeration(index).default, index),
        }
    }

    /// Whether an implicit-presence field holding this is left out
    /// (prost-reflect compares with `==`, so `-0.0` is a default and `NaN`
    /// is not).
    pub(super) fn is_default(&self, schema: &TranscodeSchema) -> bool {
        match *self {
            Scalar::Bool(value) => !value,
            Scalar::I32(value) => value == 0,
            Scalar::I64(value) => value == 0,
            Scalar::U32(value) => value == 0,
            Scalar::U64(value) => value == 0,
            Scalar::F32(value) => value == 0.0,
            Scalar::F64(value) => value == 0.0,
            Scalar::Str(value) => value.is_empty(),
            Scalar::Bytes(value) => value.is_empty(),
            Scalar::Enum(value, index) => value == schema.enumeration(index).default,
        }
    }
}

/// A scalar, serialised with the calls prost-reflect makes for it.
pub(super) struct ScalarView<'t, 's, 'b> {
    pub(super) transcoder: &'t Transcoder<'s>,
    pub(super) scalar: Scalar<'b>,
}

impl Serialize for ScalarView<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.scalar {
            Scalar::Bool(value) => serializer.serialize_bool(value),
            Scalar::I32(value) => serializer.serialize_i32(value),
            Scalar::I64(value) => serializer.collect_str(&value),
            Scalar::U32(value) => serializer.serialize_u32(value),
            Scalar::U64(value) => serializer.collect_str(&value),
            Scalar::F32(value) if self.transcoder.protobufjs.is_some() => js_number(f64::from(value), serializer),
            Scalar::F64(value) if self.transcoder.protobufjs.is_some() => js_number(value, serializer),
            Scalar::F32(value) if value.is_finite() => serializer.serialize_f32(value),
            Scalar::F64(value) if value.is_finite() => serializer.serialize_f64(value),
            Scalar::F32(value) => serializer.serialize_str(non_finite(f64::from(value))),
            Scalar::F64(value) => serializer.serialize_str(non_finite(value)),
            Scalar::Str(value) => serializer.serialize_str(value),
            Scalar::Bytes(value) => serializer.collect_str(&Base64Display::new(value, &BASE64_STANDARD)),
            Scalar::Enum(number, index) => {
                let plan = self.transcoder.schema.enumeration(index);
                if plan.is_null_value && self.transcoder.protobufjs.is_none() {
                    serializer.serialize_none()
                } else if let Some(name) = plan.name(number) {
                    serializer.serialize_str(name)
                } else {
                    serializer.serialize_i32(number)
                }
            }
        }
    }
}

/// A double as JavaScript's `JSON.stringify` writes it: integral values
/// without a fraction (`2`, and `-0` as `0`), `NaN` and the infinities as
/// the strings protobufjs puts there. Other values are printed by ryu, as
/// serde_json prints them: the same shortest digits JavaScript picks, the
/// exponent spelled `1e21` where JavaScript writes `1e+21` (the same
/// number).
pub(crate) fn js_number<S: Serializer>(value: f64, serializer: S) -> Result<S::Ok, S::Error> {
    /// 2^63: below it an integral double converts to `i64` exactly.
    const EXACT_I64: f64 = 9_223_372_036_854_775_808.0;
    if !value.is_finite() {
        serializer.serialize_str(non_finite(value))
    } else if value.trunc() == value && value.abs() < EXACT_I64 {
        serializer.serialize_i64(value as i64)
    } else {
        serializer.serialize_f64(value)
    }
}

fn non_finite(value: f64) -> &'static str {
    if value == f64::INFINITY {
        "Infinity"
    } else if value == f64::NEG_INFINITY {
        "-Infinity"
    } else {
        "NaN"
    }
}

/// A map key, written as prost-reflect writes map keys: always a string.
pub(super) struct MapKeyView<'b>(pub(super) Scalar<'b>);

impl Serialize for MapKeyView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Scalar::Bool(value) => serializer.collect_str(&value),
            Scalar::I32(value) => serializer.collect_str(&value),
            Scalar::I64(value) => serializer.collect_str(&value),
            Scalar::U32(value) => serializer.collect_str(&value),
            Scalar::U64(value) => serializer.collect_str(&value),
            Scalar::Str(value) => serializer.serialize_str(value),
            _ => Err(S::Error::custom("a map key of a type maps cannot have")),
        }
    }
}
