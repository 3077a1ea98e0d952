//! Decoding one payload into its canonical JSON text.

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// `kind` names no message of the loaded files.
    #[error("no message type {kind:?} in the loaded .proto files")]
    UnknownKind { kind: String },
    /// The bytes are not a valid encoding of the message.
    #[error("bytes do not decode as {kind}: {reason}")]
    Malformed { kind: String, reason: String },
}

/// Decodes `bytes` as the message `kind` and writes its JSON.
pub(crate) fn decode_to_json(
    pool: &DescriptorPool,
    kind: &str,
    bytes: &[u8],
    options: &SerializeOptions,
) -> Result<Box<RawValue>, DecodeError> {
    let descriptor = pool
        .get_message_by_name(kind)
        .ok_or_else(|| DecodeError::UnknownKind { kind: kind.to_owned() })?;
    let malformed = |reason: String| DecodeError::Malformed {
        kind: kind.to_owned(),
        reason,
    };
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
