//! JSON to native DynamoDB attribute values, and their size as DynamoDB
//! counts it.
//!
//! Objects become `M`, arrays `L`, strings `S`, booleans `BOOL`, null `NULL`
//! and numbers `N`. A number is stored as the text the producer sent, never
//! through `f64`: `12345678901234567890123` stays exactly that. This is why
//! JSON text is walked with [`RawValue`] (serde_json hands a plain visitor
//! only `u64`/`i64`/`f64`, and its `arbitrary_precision` feature would
//! change number handling for the whole workspace). Numbers DynamoDB cannot
//! hold (more than 38 significant digits, magnitude outside 1E-130 to
//! 9.99E+125) are reported instead of rounded, so the event goes to the
//! dead-letter file whole rather than stored altered. Empty strings, lists
//! and maps are valid non-key values in DynamoDB and are kept; JSON has no
//! sets, so none are made.
//!
//! DynamoDB nests attribute values at most 32 levels deep, counted from the
//! item's top-level attributes; the callers say how many levels the data
//! may still use, and deeper data is reported like an unstorable number.
//!
//! The size follows DynamoDB's item-size rules (names and strings in UTF-8
//! bytes, numbers one byte per two significant digits plus one, 3 bytes per
//! list or map plus 1 per element), rounded up where the rules are vague,
//! so an item judged small enough here is not refused for size later.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use serde_json::value::RawValue;

/// DynamoDB's most significant digits in a number.
const MAX_SIGNIFICANT_DIGITS: usize = 38;
/// The decimal exponent of the largest and smallest magnitudes DynamoDB
/// stores (9.99...E+125 and 1E-130).
const EXPONENT_RANGE: std::ops::RangeInclusive<i64> = -130..=125;
/// Bytes a list or map costs before its elements.
const CONTAINER_OVERHEAD: usize = 3;
/// Bytes each element of a list or map adds beside its name and value.
const ELEMENT_OVERHEAD: usize = 1;
/// The deepest DynamoDB nests attribute values (lists and maps), counting a
/// top-level attribute as level 1.
pub(crate) const MAX_NESTING: usize = 32;
/// How much of an offending number an error message quotes.
const QUOTED_NUMBER_CHARS: usize = 48;

/// A converted value and its size in bytes by DynamoDB's rules (without the
/// attribute name).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Converted {
    pub(crate) value: AttributeValue,
    pub(crate) size: usize,
}

/// Why an event's data cannot be stored as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DataError {
    #[error("number {number} has more than 38 significant digits, more than DynamoDB stores")]
    TooPrecise { number: String },
    #[error("number {number} is outside DynamoDB's range (1E-130 to 9.99E+125 in magnitude)")]
    OutOfRange { number: String },
    #[error("data is not valid JSON: {0}")]
    Json(String),
    #[error("data nests arrays and objects deeper than DynamoDB's 32 levels of attribute values")]
    TooDeep,
}

/// Converts JSON text (an event's `data` as received) into an attribute
/// that may use `levels` levels of lists and maps.
pub(crate) fn from_json_text(text: &str, levels: usize) -> Result<Converted, DataError> {
    let text = text.trim_start_matches([' ', '\t', '\n', '\r']);
    let first = text.as_bytes().first();
    if matches!(first, Some(b'{' | b'[')) && levels == 0 {
        return Err(DataError::TooDeep);
    }
    match first {
        Some(b'{') => {
            let fields: HashMap<String, &RawValue> = parse(text)?;
            let mut size = CONTAINER_OVERHEAD;
            let mut map = HashMap::with_capacity(fields.len());
            for (name, raw) in fields {
                let field = from_json_text(raw.get(), levels - 1)?;
                size += name.len() + field.size + ELEMENT_OVERHEAD;
                map.insert(name, field.value);
            }
            Ok(converted(AttributeValue::M(map), size))
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = parse(text)?;
            let mut size = CONTAINER_OVERHEAD;
            let mut list = Vec::with_capacity(items.len());
            for raw in items {
                let item = from_json_text(raw.get(), levels - 1)?;
                size += item.size + ELEMENT_OVERHEAD;
                list.push(item.value);
            }
            Ok(converted(AttributeValue::L(list), size))
        }
        Some(b'"') => Ok(string(parse(text)?)),
        Some(b't') => Ok(converted(AttributeValue::Bool(true), 1)),
        Some(b'f') => Ok(converted(AttributeValue::Bool(false), 1)),
        Some(b'n') => Ok(converted(AttributeValue::Null(true), 1)),
        Some(_) => number(text.trim_end_matches([' ', '\t', '\n', '\r'])),
        None => Err(DataError::Json("no value".to_owned())),
    }
}

/// Converts a JSON tree (data a filter decoded) into an attribute that may
/// use `levels` levels of lists and maps. Its numbers were already `u64`,
/// `i64` or `f64`, and are written as serde_json writes them.
pub(crate) fn from_json_value(value: &Value, levels: usize) -> Result<Converted, DataError> {
    if matches!(value, Value::Object(_) | Value::Array(_)) && levels == 0 {
        return Err(DataError::TooDeep);
    }
    Ok(match value {
        Value::Object(fields) => {
            let mut size = CONTAINER_OVERHEAD;
            let mut map = HashMap::with_capacity(fields.len());
            for (name, value) in fields {
                let field = from_json_value(value, levels - 1)?;
                size += name.len() + field.size + ELEMENT_OVERHEAD;
                map.insert(name.clone(), field.value);
            }
            converted(AttributeValue::M(map), size)
        }
        Value::Array(items) => {
            let mut size = CONTAINER_OVERHEAD;
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                let item = from_json_value(item, levels - 1)?;
                size += item.size + ELEMENT_OVERHEAD;
                list.push(item.value);
            }
            converted(AttributeValue::L(list), size)
        }
        Value::String(text) => string(text.clone()),
        Value::Bool(flag) => converted(AttributeValue::Bool(*flag), 1),
        Value::Null => converted(AttributeValue::Null(true), 1),
        Value::Number(number) => return number_owned(number.to_string()),
    })
}

/// The SQS → Lambda design's `Data`: the members of `members` that
/// JavaScript counts as true, each as the string its `toString()` gives
/// (`null`, `""`, `0` and `false` are left out; an object is
/// `[object Object]`, an array its elements joined by commas).
pub(crate) fn lambda_strings(members: &serde_json::Map<String, Value>) -> Converted {
    let mut size = CONTAINER_OVERHEAD;
    let mut map = HashMap::with_capacity(members.len());
    for (name, value) in members {
        let truthy = match value {
            Value::Null => false,
            Value::Bool(flag) => *flag,
            Value::Number(number) => number.as_f64().is_some_and(|n| n != 0.0 && !n.is_nan()),
            Value::String(text) => !text.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        };
        if truthy {
            let field = string(js_string(value));
            size += name.len() + field.size + ELEMENT_OVERHEAD;
            map.insert(name.clone(), field.value);
        }
    }
    converted(AttributeValue::M(map), size)
}

/// `String(value)` in JavaScript, for JSON values. Numbers are written as
/// JavaScript writes them from 1e-6 to 1e21 (beyond, Rust's notation).
fn js_string(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => match number.as_f64() {
            Some(n) if n.fract() == 0.0 && n.abs() < 1e21 => format!("{n:.0}"),
            Some(n) => n.to_string(),
            None => number.to_string(),
        },
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(js_string).collect::<Vec<_>>().join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// A string attribute and its size.
pub(crate) fn string(text: String) -> Converted {
    let size = text.len();
    converted(AttributeValue::S(text), size)
}

fn converted(value: AttributeValue, size: usize) -> Converted {
    Converted { value, size }
}

fn parse<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, DataError> {
    serde_json::from_str(text).map_err(|error| DataError::Json(error.to_string()))
}

fn number(text: &str) -> Result<Converted, DataError> {
    number_owned(text.to_owned())
}

fn number_owned(text: String) -> Result<Converted, DataError> {
    let size = number_size(&text)?;
    Ok(converted(AttributeValue::N(text), size))
}

/// Checks that DynamoDB can hold the JSON number `text` exactly, and returns
/// its size: one byte per two significant digits, plus one.
fn number_size(text: &str) -> Result<usize, DataError> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, parse_exponent(exponent)),
        None => (unsigned, 0),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = || integer.bytes().chain(fraction.bytes());
    let total = integer.len() + fraction.len();
    let leading_zeros = digits().take_while(|&d| d == b'0').count();
    if leading_zeros == total {
        return Ok(1); // zero
    }
    let trailing_zeros = digits().rev().take_while(|&d| d == b'0').count();
    let significant = total - leading_zeros - trailing_zeros;
    let quoted = || text.chars().take(QUOTED_NUMBER_CHARS).collect::<String>();
    if significant > MAX_SIGNIFICANT_DIGITS {
        return Err(DataError::TooPrecise { number: quoted() });
    }
    // The value is D × 10^(exponent − fraction digits + trailing zeros) with
    // D the significant digits; this is the exponent of D's first digit.
    let leading_exponent = exponent
        .saturating_sub(fraction.len() as i64)
        .saturating_add(trailing_zeros as i64)
        .saturating_add(significant as i64 - 1);
    if !EXPONENT_RANGE.contains(&leading_exponent) {
        return Err(DataError::OutOfRange { number: quoted() });
    }
    Ok(significant.div_ceil(2) + 1)
}

/// A JSON exponent, saturated: `1e99999999999999999999` is simply too large.
fn parse_exponent(text: &str) -> i64 {
    let negative = text.starts_with('-');
    let digits = text.trim_start_matches(['+', '-']);
    let magnitude = digits.parse::<i64>().unwrap_or(i64::MAX / 2);
    if negative { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(text: &str) -> AttributeValue {
        from_json_text(text, MAX_NESTING).unwrap().value
    }

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    fn n(text: &str) -> AttributeValue {
        AttributeValue::N(text.to_owned())
    }

    fn m(fields: &[(&str, AttributeValue)]) -> AttributeValue {
        AttributeValue::M(
            fields
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect(),
        )
    }

    #[test]
    fn nested_objects_and_arrays_become_maps_and_lists() {
        let value = convert(r#"{"a":{"b":[1,"x",true,null,{"c":false}]},"d":[]}"#);
        let expected = m(&[
            (
                "a",
                m(&[(
                    "b",
                    AttributeValue::L(vec![
                        n("1"),
                        s("x"),
                        AttributeValue::Bool(true),
                        AttributeValue::Null(true),
                        m(&[("c", AttributeValue::Bool(false))]),
                    ]),
                )]),
            ),
            ("d", AttributeValue::L(vec![])),
        ]);
        assert_eq!(value, expected);
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        for number in [
            "12345678901234567890123",
            "1.0000000000000000001",
            "-0.000000000000000000000000000001",
            "18446744073709551616",
            "1e125",
            "-9.9999999999999999999999999999999999999E+125",
            "1E-130",
            "0",
            "-0.0",
            "100000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(convert(number), n(number), "{number}");
            let wrapped = convert(&format!(r#"{{"n":[{number}]}}"#));
            assert_eq!(wrapped, m(&[("n", AttributeValue::L(vec![n(number)]))]));
        }
    }

    #[test]
    fn numbers_dynamodb_cannot_hold_are_refused_not_rounded() {
        let too_precise = "1.000000000000000000000000000000000000001";
        assert!(matches!(
            from_json_text(too_precise, MAX_NESTING),
            Err(DataError::TooPrecise { .. })
        ));
        for out_of_range in ["1e126", "1e-131", "-5e200", "1e99999999999999999999999"] {
            assert!(
                matches!(
                    from_json_text(&format!("[{out_of_range}]"), MAX_NESTING),
                    Err(DataError::OutOfRange { .. })
                ),
                "{out_of_range}"
            );
        }
    }

    #[test]
    fn unicode_and_escapes_are_decoded() {
        let value = convert(r#"{"name":"Zoë \u00e9 \ud83d\ude00 日本","quote":"a\"b\\c\n","ключ":"v"}"#);
        assert_eq!(
            value,
            m(&[
                ("name", s("Zoë é 😀 日本")),
                ("quote", s("a\"b\\c\n")),
                ("ключ", s("v")),
            ])
        );
    }

    #[test]
    fn empty_values_are_kept() {
        assert_eq!(
            convert(r#"{"s":"","l":[],"m":{},"z":null}"#),
            m(&[
                ("s", s("")),
                ("l", AttributeValue::L(vec![])),
                ("m", AttributeValue::M(HashMap::new())),
                ("z", AttributeValue::Null(true)),
            ])
        );
        assert_eq!(convert(r#""""#), s(""));
    }

    #[test]
    fn scalars_at_the_top_level_convert_too() {
        assert_eq!(convert(" 42 "), n("42"));
        assert_eq!(convert("\"x\""), s("x"));
        assert_eq!(convert("false"), AttributeValue::Bool(false));
        assert_eq!(convert("null"), AttributeValue::Null(true));
    }

    #[test]
    fn trees_from_filters_convert_like_text() {
        let text = r#"{"a":[1,-2,2.5,"x",{"b":null}],"c":true}"#;
        let tree: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            from_json_value(&tree, MAX_NESTING).unwrap(),
            from_json_text(text, MAX_NESTING).unwrap()
        );
    }

    #[test]
    fn sizes_follow_dynamodb_rules() {
        assert_eq!(from_json_text(r#""héllo""#, MAX_NESTING).unwrap().size, 6);
        assert_eq!(from_json_text("true", MAX_NESTING).unwrap().size, 1);
        // 5 significant digits: 3 bytes + 1.
        assert_eq!(from_json_text("123.45", MAX_NESTING).unwrap().size, 4);
        assert_eq!(from_json_text("1000000", MAX_NESTING).unwrap().size, 2);
        // Map: 3 + ("ab" 2 + "x" 1 + 1) = 7.
        assert_eq!(from_json_text(r#"{"ab":"x"}"#, MAX_NESTING).unwrap().size, 7);
        // List: 3 + (1 + 1) + (1 + 1) = 7.
        assert_eq!(from_json_text("[true,null]", MAX_NESTING).unwrap().size, 7);
        assert_eq!(from_json_text("{}", MAX_NESTING).unwrap().size, 3);
    }

    #[test]
    fn data_deeper_than_dynamodb_nests_is_refused() {
        let nested = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        assert!(from_json_text(&nested(3), 3).is_ok());
        assert_eq!(from_json_text(&nested(4), 3), Err(DataError::TooDeep));
        assert!(from_json_text("7", 0).is_ok());
        let tree: Value = serde_json::from_str(&nested(4)).unwrap();
        assert!(from_json_value(&tree, 4).is_ok());
        assert_eq!(from_json_value(&tree, 3), Err(DataError::TooDeep));
    }

    #[test]
    fn the_lambdas_string_map_keeps_what_javascript_counts_as_true() {
        let members = serde_json::json!({
            "Name": "Microservice A", "Empty": "", "Zero": 0, "Count": 12, "Ratio": 0.5, "Big": 1.0e3,
            "No": false, "Yes": true, "Nothing": null, "List": [1, "a", null], "Nested": {"a": 1}
        });
        let converted = lambda_strings(members.as_object().unwrap());
        let AttributeValue::M(map) = converted.value else {
            panic!()
        };
        let text = |name: &str| map[name].as_s().unwrap().as_str();
        assert_eq!(text("Name"), "Microservice A");
        assert_eq!(text("Count"), "12");
        assert_eq!(text("Ratio"), "0.5");
        assert_eq!(text("Big"), "1000");
        assert_eq!(text("Yes"), "true");
        assert_eq!(text("List"), "1,a,");
        assert_eq!(text("Nested"), "[object Object]");
        for left_out in ["Empty", "Zero", "No", "Nothing"] {
            assert!(!map.contains_key(left_out), "{left_out}");
        }
    }
}
