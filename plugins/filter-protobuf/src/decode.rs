//! Decoding one payload into its JSON text (canonical or protobufjs'
//! shape): by the direct transcoder when it covers the payload, by
//! prost-reflect otherwise.

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::nesting::{NestingError, NestingWalker};
use crate::proto_set::ProtoSet;
use crate::protobufjs::ProtobufjsMessage;
use crate::transcode::Transcoder;
use crate::transcode_schema::Fallback;
use crate::wire_schema::MessageIndex;

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

/// How prost-reflect's message is written: with its canonical serialiser
/// and these options, or in protobufjs' shape.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FallbackJson<'a> {
    Canonical(&'a SerializeOptions),
    Protobufjs { proto_names: bool },
}

/// The decoders of one batch, with the buffers they keep between payloads.
pub(crate) struct BatchDecoder<'a> {
    set: &'a ProtoSet,
    json: FallbackJson<'a>,
    transcoder: Transcoder<'a>,
    nesting: NestingWalker,
    /// The last kind looked up: a batch mostly repeats a few kinds.
    last_kind: Option<(String, MessageIndex)>,
    /// Payloads left to prost-reflect in this batch, by reason.
    pub(crate) fallbacks: [u64; Fallback::ALL.len()],
}

impl<'a> BatchDecoder<'a> {
    pub(crate) fn new(
        set: &'a ProtoSet,
        json: FallbackJson<'a>,
        transcoder: Transcoder<'a>,
        nesting: NestingWalker,
    ) -> BatchDecoder<'a> {
        BatchDecoder {
            set,
            json,
            transcoder,
            nesting,
            last_kind: None,
            fallbacks: [0; Fallback::ALL.len()],
        }
    }

    /// Decodes `bytes` as the message `kind` and writes its JSON.
    pub(crate) fn decode_to_json(&mut self, kind: &str, bytes: &[u8]) -> Result<Box<RawValue>, DecodeError> {
        let message = match &self.last_kind {
            Some((last, message)) if last == kind => *message,
            _ => {
                let message = self
                    .set
                    .schema
                    .message(kind)
                    .ok_or_else(|| DecodeError::UnknownKind { kind: kind.to_owned() })?;
                self.last_kind = Some((kind.to_owned(), message));
                message
            }
        };
        match self.transcoder.transcode(message, bytes) {
            Ok(json) => Ok(json),
            Err(reason) => {
                let counted = Fallback::ALL.iter().position(|known| *known == reason);
                if let Some(counted) = counted {
                    self.fallbacks[counted] += 1;
                }
                decode_with_prost_reflect(self.set, kind, bytes, self.json, &mut self.nesting)
            }
        }
    }
}

/// The general path: the depth check, then prost-reflect's decoder and
/// serialiser.
fn decode_with_prost_reflect(
    set: &ProtoSet,
    kind: &str,
    bytes: &[u8],
    json: FallbackJson<'_>,
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
    match json {
        FallbackJson::Canonical(options) => serde_json::value::to_raw_value(&WithOptions {
            message: &message,
            options,
        }),
        FallbackJson::Protobufjs { proto_names } => serde_json::value::to_raw_value(&ProtobufjsMessage {
            message: &message,
            pool: &set.pool,
            proto_names,
        }),
    }
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
