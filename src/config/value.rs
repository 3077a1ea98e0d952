//! Turning interpolated TOML values into typed config structs.
//!
//! Numbers and booleans may be written as strings, so that they can come
//! from environment variables: `shutdown_timeout_ms = "${SHUTDOWN_TIMEOUT:15000}"`.
//! When a struct wants a number where the file has a string that reads as
//! one, the string is converted and deserialization tried again. Errors keep
//! the path of the key that failed (`outputs[0].path`).

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::KeyError;
use super::interpolate::{InterpolateError, interpolate};

/// Interpolates every string in `value`, in place.
pub(crate) fn interpolate_strings(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(), (String, InterpolateError)> {
    match value {
        toml::Value::String(text) => {
            *text = interpolate(text, lookup).map_err(|error| (join_path(path), error))?;
        }
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                path.push(format!("[{index}]"));
                interpolate_strings(item, path, lookup)?;
                path.pop();
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                path.push(key.clone());
                interpolate_strings(item, path, lookup)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn join_path(path: &[String]) -> String {
    let mut joined = String::new();
    for segment in path {
        if !joined.is_empty() && !segment.starts_with('[') {
            joined.push('.');
        }
        joined.push_str(segment);
    }
    joined
}

/// Deserializes `value` into `T`, converting strings to numbers or booleans
/// where `T` asks for them. The error's key is relative to `value` (`.` for
/// `value` itself).
pub(crate) fn from_value<T: DeserializeOwned>(mut value: toml::Value) -> Result<T, KeyError> {
    // Each retry converts one more string, so this ends.
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return Ok(parsed),
            Err(error) => error,
        };
        let converted = lookup_mut(&mut value, error.path().iter()).is_some_and(|slot| match slot {
            toml::Value::String(text) => match scalar_from_str(text) {
                Some(scalar) => {
                    *slot = scalar;
                    true
                }
                None => false,
            },
            _ => false,
        });
        if !converted {
            return Err(KeyError::new(error.path().to_string(), error.into_inner().to_string()));
        }
    }
}

fn lookup_mut<'a>(value: &mut toml::Value, path: impl Iterator<Item = &'a Segment>) -> Option<&mut toml::Value> {
    let mut node = value;
    for segment in path {
        node = match (segment, node) {
            (Segment::Map { key }, toml::Value::Table(table)) => table.get_mut(key)?,
            (Segment::Seq { index }, toml::Value::Array(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(node)
}

fn scalar_from_str(text: &str) -> Option<toml::Value> {
    let text = text.trim();
    if let Ok(integer) = text.parse::<i64>() {
        return Some(toml::Value::Integer(integer));
    }
    if let Ok(boolean) = text.parse::<bool>() {
        return Some(toml::Value::Boolean(boolean));
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(toml::Value::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        timeout_ms: u64,
        name: String,
        #[serde(default)]
        nested: Vec<Nested>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        on: bool,
    }

    fn parse(text: &str) -> Result<Sample, KeyError> {
        from_value(toml::Value::Table(toml::from_str(text).unwrap()))
    }

    #[test]
    fn numbers_and_booleans_may_be_strings_but_strings_stay_strings() {
        let sample = parse("timeout_ms = \"15000\"\nname = \"42\"\n[[nested]]\non = \"true\"").unwrap();
        assert_eq!(sample.timeout_ms, 15000);
        assert_eq!(sample.name, "42");
        assert!(sample.nested[0].on);
    }

    #[test]
    fn errors_name_the_key() {
        let error = parse("timeout_ms = \"soon\"\nname = \"x\"").unwrap_err();
        assert_eq!(error.key, "timeout_ms");
        assert!(error.message.contains("invalid type"), "{}", error.message);
        let error = parse("timeout_ms = 1\nname = \"x\"\n[[nested]]\nof = true").unwrap_err();
        assert_eq!(error.key, "nested[0].of");
        assert!(error.message.contains("unknown field"), "{}", error.message);
    }

    #[test]
    fn interpolation_reports_the_key() {
        let mut value = toml::Value::Table(toml::from_str("[a]\nb = [\"ok\", \"${NOPE_NOT_SET}\"]").unwrap());
        let (key, error) = interpolate_strings(&mut value, &mut Vec::new(), &|_| None).unwrap_err();
        assert_eq!(key, "a.b[1]");
        assert!(matches!(error, InterpolateError::Unset { .. }));
    }
}
