//! Decoding one payload into its canonical JSON text.

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::nesting::{NestingError, NestingWalker};
use crate::proto_set::ProtoSet;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// `kind` names no message of the loaded files.
    #[error("no message type {kind:?} in the loaded .proto files")]
    UnknownKind { kind: String },
    /// The bytes are not a valid encoding of the message.
    #[error("bytes do not decode as {kind}: {reason}")]
    Malformed { kind: String, reason: String },
    /// Messages nest deeper than `max_depth` (through `Any`, `Struct`,
    /// recursive messages or groups), or `Any` contents would expand past
    /// their budget: decoding would exhaust the stack or the memory.
    #[error("bytes of {kind} exceed the nesting limits: {reason}")]
    TooDeep { kind: String, reason: NestingError },
}

/// Decodes `bytes` as the message `kind` and writes its JSON, unless
/// `nesting` finds messages in it nested deeper than its limit.
pub(crate) fn decode_to_json(
    set: &ProtoSet,
    kind: &str,
    bytes: &[u8],
    options: &SerializeOptions,
    nesting: &mut NestingWalker,
) -> Result<Box<RawValue>, DecodeError> {
    let unknown_kind = || DecodeError::UnknownKind { kind: kind.to_owned() };
    let descriptor = set.pool.get_message_by_name(kind).ok_or_else(unknown_kind)?;
    let walked_as = set.schema.message(kind).ok_or_else(unknown_kind)?;
    let malformed = |reason: String| DecodeError::Malformed {
        kind: kind.to_owned(),
        reason,
    };
    // prost-reflect's serialiser recurses into `Any` contents without a
    // limit: check the whole depth first, in one pass over the bytes.
    nesting
        .check(&set.schema, walked_as, bytes)
        .map_err(|reason| match reason {
            NestingError::TooDeep { .. } | NestingError::AnyTooLarge { .. } => DecodeError::TooDeep {
                kind: kind.to_owned(),
                reason,
            },
            NestingError::Malformed(error) => malformed(error.to_string()),
        })?;
    let message = DynamicMessage::decode(descriptor, bytes).map_err(|e| malformed(e.to_string()))?;
    // Straight to text: no intermediate JSON tree, and `to_raw_value` does
    // not parse the text it has just written.
    serde_json::value::to_raw_value(&WithOptions {
        message: &message,
        options,
    })
    .map_err(|e| malformed(e.to_string()))
}

/// Serializes a message with options, for `to_raw_value`.
struct WithOptions<'a> {
    message: &'a DynamicMessage,
    options: &'a SerializeOptions,
}

impl Serialize for WithOptions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.message.serialize_with_options(serializer, self.options)
    }
}
