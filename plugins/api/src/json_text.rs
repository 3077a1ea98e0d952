//! JSON payloads as text: validated, checked against what other readers
//! accept, and kept on one line — without building a tree.
//!
//! serde_json checks the syntax, but skipping a value through `RawValue`
//! has no nesting limit and lets a lone UTF-16 surrogate escape
//! (`"\ud800"`) through. Documents holding either break the tools that read
//! the stores afterwards (jq, Python, Elasticsearch), and a deep enough
//! array overflows the stack of any recursive reader. So one more pass over
//! the text enforces a nesting limit and strict Unicode escapes; a payload
//! failing it is kept as `plain` text and flagged, like unparseable JSON.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::event::Payload;

/// The default deepest nesting of arrays and objects a JSON payload may
/// have to be stored as `data`. Deep enough for any real document, shallow
/// enough for every recursive reader's stack.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 256;

/// Interprets JSON text: valid, strict and within `max_depth` it becomes
/// [`Payload::Json`] (compacted to one line if it spans several); anything
/// else [`Payload::InvalidJson`].
pub(crate) fn parse_json(data: Bytes, max_depth: usize) -> Payload {
    let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(&data) else {
        return invalid_json(data);
    };
    let text = raw.get();
    if !is_strict(text, max_depth) {
        return invalid_json(data);
    }
    // memchr, not `str::contains`: a char-set pattern walks the text one
    // code point at a time, which was half of this function's time.
    if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_none() {
        return Payload::Json(raw);
    }
    match compact_json(text) {
        Some(compact) => Payload::Json(compact),
        None => invalid_json(data),
    }
}

/// Whether syntactically valid JSON `text` nests at most `max_depth` deep
/// and every `\u` escape is a scalar value or a proper surrogate pair.
fn is_strict(text: &str, max_depth: usize) -> bool {
    let bytes = text.as_bytes();
    // The common case in two vectorised passes: too few brackets to nest too
    // deep (even counting those inside strings; a text shorter than the
    // limit cannot hold more), and no `\u` escape at all.
    let shallow = bytes.len() <= max_depth
        || bytes
            .iter()
            .map(|&b| usize::from(b == b'[' || b == b'{'))
            .sum::<usize>()
            <= max_depth;
    // A backslash is rare in payloads: looking for one is cheaper than
    // setting up the search for `\u`.
    let no_unicode_escape = || memchr::memchr(b'\\', bytes).is_none() || memchr::memmem::find(bytes, b"\\u").is_none();
    if shallow && no_unicode_escape() {
        return true;
    }
    scan_strict(bytes, max_depth)
}

/// [`is_strict`] the long way: a walk that knows what is inside strings.
fn scan_strict(bytes: &[u8], max_depth: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            // Jump to the next quote or backslash: string bodies are most
            // of a document.
            match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                Some(offset) => i += offset,
                None => return true,
            }
            match bytes[i] {
                b'"' => in_string = false,
                b'\\' if bytes.get(i + 1) == Some(&b'u') => match unicode_escape(bytes, i) {
                    Some(next) => {
                        i = next;
                        continue;
                    }
                    None => return false,
                },
                // Any other escape is one character long.
                b'\\' => i += 1,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max_depth {
                        return false;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    true
}

/// Checks the `\uXXXX` escape at `at` (and its low surrogate, if it is a
/// high one); returns where scanning resumes, or `None` if it encodes no
/// Unicode scalar value.
fn unicode_escape(bytes: &[u8], at: usize) -> Option<usize> {
    let unit = hex4(bytes, at + 2)?;
    match unit {
        0xD800..=0xDBFF => {
            let low_at = at + 6;
            if bytes.get(low_at..low_at + 2) != Some(b"\\u") {
                return None;
            }
            matches!(hex4(bytes, low_at + 2)?, 0xDC00..=0xDFFF).then_some(low_at + 6)
        }
        0xDC00..=0xDFFF => None,
        _ => Some(at + 6),
    }
}

fn hex4(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u16::from_str_radix(digits, 16).ok()
}

/// Rewrites valid JSON without the whitespace between tokens, so it fits on
/// one line. It works on the text, not through a parser's numbers, so every
/// number stays exactly as the producer wrote it.
fn compact_json(text: &str) -> Option<Box<RawValue>> {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    RawValue::from_string(out).ok()
}

pub(crate) fn invalid_json(data: Bytes) -> Payload {
    match std::str::from_utf8(&data) {
        Ok(text) => Payload::InvalidJson {
            plain: text.to_owned(),
            raw: None,
        },
        Err(_) => Payload::InvalidJson {
            plain: String::from_utf8_lossy(&data).into_owned(),
            raw: Some(data),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(text: &str, max_depth: usize) -> bool {
        matches!(parse_json(Bytes::from(text.to_owned()), max_depth), Payload::Json(_))
    }

    #[test]
    fn nesting_up_to_the_limit_is_data_beyond_it_is_flagged() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(accepted(&nested(256), 256));
        assert!(!accepted(&nested(257), 256));
        assert!(!accepted(&nested(100_000), DEFAULT_MAX_JSON_DEPTH));
        assert!(accepted(r#"{"a":{"b":[1,{"c":2}]}}"#, 4));
        assert!(!accepted(r#"{"a":{"b":[1,{"c":2}]}}"#, 3));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        assert!(accepted(r#"["[[[[[[", "\"{{{{"]"#, 1));
    }

    #[test]
    fn lone_surrogates_are_flagged_pairs_and_scalars_are_not() {
        assert!(!accepted(r#""\ud800""#, 8));
        assert!(!accepted(r#""\uDC00""#, 8));
        assert!(!accepted(r#"{"a":"x\ud83dy"}"#, 8));
        assert!(!accepted(r#""\ud83d\u0041""#, 8));
        assert!(accepted(r#""\ud83d\ude00 \u00e9 \u0000 \\ud800""#, 8));
        assert!(accepted("\"\u{1f600}\"", 8));
    }

    /// Every document the payload path writes is one line of strict JSON,
    /// whatever the bytes: a reader that accepts it once accepts it always.
    fn assert_document_is_strict_json(data: Vec<u8>) {
        use crate::event::{Event, Format};
        let event = Event::new(
            Format::Json,
            Bytes::from(data),
            "k".into(),
            "1".into(),
            chrono::Utc::now(),
        );
        let document = serde_json::to_string(&event).unwrap();
        assert!(!document.contains('\n'));
        let raw: Box<RawValue> = serde_json::from_str(&document).unwrap();
        assert!(is_strict(raw.get(), DEFAULT_MAX_JSON_DEPTH + 2), "{document}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_make_a_strict_document(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            assert_document_is_strict_json(data);
        }

        #[test]
        fn json_like_text_makes_a_strict_document(text in r#"[\[\]{}":,\\u0-9a-fdD ]{0,300}"#) {
            assert_document_is_strict_json(text.into_bytes());
        }
    }

    #[test]
    fn flagged_payloads_keep_their_text() {
        let Payload::InvalidJson { plain, raw } = parse_json(Bytes::from_static(br#"["\ud800"]"#), 8) else {
            panic!("a lone surrogate must be flagged");
        };
        assert_eq!(plain, r#"["\ud800"]"#);
        assert!(raw.is_none());
    }
}
