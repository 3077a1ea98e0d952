//! The framing of packed messages: many events in one SQS message, the
//! contract between the SQS output (which writes it) and the SQS input
//! (which reads it), kept here so the two cannot drift apart.
//!
//! A packed message's body is the events' documents as JSON lines (each
//! the line the file output writes, joined by `\n`), either as they are
//! ([`PACKED_JSONL`]) or gzip-compressed and then base64-encoded
//! ([`PACKED_JSONL_GZIP_BASE64`]), because an SQS body must be XML
//! characters and gzip output is bytes. The message attribute
//! [`CODEC_ATTRIBUTE`] names the framing, so a reader never guesses: a
//! message without it is one event (or a gateway message), as before.
//!
//! JSON lines escape every control character, so the only text that SQS
//! would refuse in a plain JSON line is the two non-characters U+FFFE and
//! U+FFFF, which can appear only inside JSON strings: [`push_line`] writes
//! them as `\ufffe` / `\uffff`, which JSON reads back as the same text.

use std::io::{Read as _, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// The message attribute that names a packed message's framing.
pub const CODEC_ATTRIBUTE: &str = "codec";
/// The message attribute that says how many events a packed message holds
/// (for people looking at the queue; readers count the lines).
pub const EVENTS_ATTRIBUTE: &str = "events";
/// Documents as JSON lines.
pub const PACKED_JSONL: &str = "eventstash-packed-jsonl";
/// Documents as JSON lines, gzip-compressed, base64-encoded.
pub const PACKED_JSONL_GZIP_BASE64: &str = "eventstash-packed-jsonl-gzip-base64";
/// The most text a packed message may unpack to. The output never packs
/// more; the input refuses more, so a small compressed body cannot unpack
/// into gigabytes.
pub const MAX_UNPACKED_BYTES: usize = 8 * 1024 * 1024;
/// The gzip level: 1 (the fastest) gives nearly the ratio of 6 on event
/// documents at several times the speed (see the README's figures).
const GZIP_LEVEL: u32 = 1;

/// The framings of packed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedCodec {
    /// [`PACKED_JSONL`].
    Jsonl,
    /// [`PACKED_JSONL_GZIP_BASE64`].
    JsonlGzipBase64,
}

/// Why a packed body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    /// Not base64.
    #[error("the body is not base64: {0}")]
    Base64(String),
    /// Not gzip, or cut short.
    #[error("the body is not gzip: {0}")]
    Gzip(String),
    /// Unpacks to more than the bound.
    #[error("the body unpacks to more than {0} bytes")]
    TooLarge(usize),
    /// Unpacks to bytes that are not UTF-8.
    #[error("the unpacked body is not UTF-8")]
    NotUtf8,
}

impl PackedCodec {
    /// The codec an attribute value names; `None`: not a packed message.
    pub fn from_attribute(value: &str) -> Option<PackedCodec> {
        match value {
            PACKED_JSONL => Some(PackedCodec::Jsonl),
            PACKED_JSONL_GZIP_BASE64 => Some(PackedCodec::JsonlGzipBase64),
            _ => None,
        }
    }

    /// The value of [`CODEC_ATTRIBUTE`].
    pub fn attribute(self) -> &'static str {
        match self {
            PackedCodec::Jsonl => PACKED_JSONL,
            PackedCodec::JsonlGzipBase64 => PACKED_JSONL_GZIP_BASE64,
        }
    }

    /// The body of a message holding `text` (JSON lines built with
    /// [`push_line`]).
    pub fn encode(self, text: &str) -> String {
        match self {
            PackedCodec::Jsonl => text.to_owned(),
            PackedCodec::JsonlGzipBase64 => {
                let mut gzip = GzEncoder::new(Vec::with_capacity(text.len() / 4), Compression::new(GZIP_LEVEL));
                gzip.write_all(text.as_bytes()).expect("writing into a Vec cannot fail");
                let compressed = gzip.finish().expect("writing into a Vec cannot fail");
                BASE64.encode(compressed)
            }
        }
    }

    /// The JSON lines of a body, at most `max_bytes` of them.
    pub fn decode(self, body: &str, max_bytes: usize) -> Result<String, UnpackError> {
        match self {
            PackedCodec::Jsonl if body.len() > max_bytes => Err(UnpackError::TooLarge(max_bytes)),
            PackedCodec::Jsonl => Ok(body.to_owned()),
            PackedCodec::JsonlGzipBase64 => {
                let compressed = BASE64
                    .decode(body.trim())
                    .map_err(|error| UnpackError::Base64(error.to_string()))?;
                // Read one byte past the bound, to tell "exactly the bound"
                // from "more": a small body must not unpack into gigabytes.
                let mut text = Vec::new();
                GzDecoder::new(&compressed[..])
                    .take(max_bytes as u64 + 1)
                    .read_to_end(&mut text)
                    .map_err(|error| UnpackError::Gzip(error.to_string()))?;
                if text.len() > max_bytes {
                    return Err(UnpackError::TooLarge(max_bytes));
                }
                String::from_utf8(text).map_err(|_| UnpackError::NotUtf8)
            }
        }
    }
}

/// Appends one document (a JSON text on one line) to packed `text`, with
/// the separator, and the two characters SQS refuses escaped.
pub fn push_line(text: &mut String, document: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    if document.contains(['\u{fffe}', '\u{ffff}']) {
        for c in document.chars() {
            match c {
                '\u{fffe}' => text.push_str("\\ufffe"),
                '\u{ffff}' => text.push_str("\\uffff"),
                c => text.push(c),
            }
        }
    } else {
        text.push_str(document);
    }
}

/// The documents of unpacked text: its non-empty lines.
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').filter(|line| !line.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_framings_give_back_the_lines() {
        let mut text = String::new();
        for n in 0..100 {
            push_line(&mut text, &format!(r#"{{"id":"e-{n}","data":{{"n":{n}}}}}"#));
        }
        for codec in [PackedCodec::Jsonl, PackedCodec::JsonlGzipBase64] {
            let body = codec.encode(&text);
            assert_eq!(PackedCodec::from_attribute(codec.attribute()), Some(codec));
            let back = codec.decode(&body, 1 << 20).unwrap();
            assert_eq!(lines(&back).count(), 100);
            assert_eq!(back, text);
        }
        let gzip = PackedCodec::JsonlGzipBase64.encode(&text);
        assert!(gzip.len() * 3 < text.len(), "{} vs {}", gzip.len(), text.len());
        assert!(gzip.bytes().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn characters_sqs_refuses_are_escaped_and_read_back_the_same() {
        let mut text = String::new();
        let document = serde_json::json!({"s": "a\u{ffff}b\u{fffe}"}).to_string();
        push_line(&mut text, &document);
        assert!(!text.contains(['\u{fffe}', '\u{ffff}']));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["s"], "a\u{ffff}b\u{fffe}");
    }

    #[test]
    fn a_body_that_unpacks_past_the_bound_or_is_damaged_is_refused() {
        let text = "x".repeat(100_000);
        let body = PackedCodec::JsonlGzipBase64.encode(&text);
        assert!(body.len() < 1_000);
        assert_eq!(
            PackedCodec::JsonlGzipBase64.decode(&body, 99_999),
            Err(UnpackError::TooLarge(99_999))
        );
        assert!(PackedCodec::JsonlGzipBase64.decode(&body, 100_000).is_ok());
        assert!(matches!(
            PackedCodec::JsonlGzipBase64.decode("!!!", 10),
            Err(UnpackError::Base64(_))
        ));
        assert!(matches!(
            PackedCodec::JsonlGzipBase64.decode("aGVsbG8=", 10),
            Err(UnpackError::Gzip(_))
        ));
        assert_eq!(PackedCodec::Jsonl.decode("abc", 2), Err(UnpackError::TooLarge(2)));
    }
}
