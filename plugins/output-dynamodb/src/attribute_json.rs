//! Native DynamoDB attribute values back to JSON text, the inverse of
//! [`crate::attribute_value`], for reading events and change sets back.
//!
//! Numbers are written as the text DynamoDB holds, never through `f64`, so
//! `12345678901234567890123` comes back exactly. Map keys are written in
//! sorted order (DynamoDB keeps no order), so the same item always reads
//! back as the same text. Binary values and sets, which eventstash never
//! writes into `Data`, become base64 strings and arrays.

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The JSON text of `value`.
pub(crate) fn to_json_text(value: &AttributeValue) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &AttributeValue, out: &mut String) {
    match value {
        AttributeValue::S(text) => write_string(text, out),
        AttributeValue::N(number) => out.push_str(number),
        AttributeValue::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        AttributeValue::M(fields) => {
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort();
            out.push('{');
            for (n, name) in names.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_string(name, out);
                out.push(':');
                write_json(&fields[name], out);
            }
            out.push('}');
        }
        AttributeValue::L(items) => write_array(items.iter(), out, write_json),
        AttributeValue::B(blob) => write_string(&BASE64.encode(blob.as_ref()), out),
        AttributeValue::Ss(texts) => write_array(texts.iter(), out, |text, out| write_string(text, out)),
        AttributeValue::Ns(numbers) => write_array(numbers.iter(), out, |number, out| out.push_str(number)),
        AttributeValue::Bs(blobs) => write_array(blobs.iter(), out, |blob, out| {
            write_string(&BASE64.encode(blob.as_ref()), out)
        }),
        // `Null` and variants newer than this code.
        _ => out.push_str("null"),
    }
}

fn write_array<T>(items: impl Iterator<Item = T>, out: &mut String, write: impl Fn(T, &mut String)) {
    out.push('[');
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.push(',');
        }
        write(item, out);
    }
    out.push(']');
}

fn write_string(text: &str, out: &mut String) {
    // Serializing a `str` cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute_value::from_json_text;

    #[test]
    fn json_survives_the_round_trip_with_exact_numbers() {
        let text =
            r#"{"a":{"b":[1,"x",true,null,{"c":false}]},"big":12345678901234567890123,"d":[],"s":"Zoë \"q\"\n"}"#;
        let value = from_json_text(text, crate::attribute_value::MAX_NESTING).unwrap().value;
        assert_eq!(to_json_text(&value), text);
    }
}
