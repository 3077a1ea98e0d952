//! `${VAR}` and `${VAR:default}` in pipeline files.
//!
//! Interpolation happens inside TOML string values after parsing, so a
//! variable's value can never break the file's syntax. A variable that is
//! unset or empty takes the default; one with no default is an error, so a
//! typo in a variable name is caught by `eventstash validate` instead of
//! becoming an empty address at run time. `$$` writes a literal `$`.

/// A `${...}` reference that cannot be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${` without `}`.
    #[error("unclosed `${{` in {text:?}")]
    Unclosed {
        /// The string value.
        text: String,
    },
    /// A name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("`${{{name}}}` is not a valid environment variable name")]
    BadName {
        /// The name as written.
        name: String,
    },
    /// A variable that is not set and has no default.
    #[error("environment variable {name} is not set and `${{{name}}}` has no default (write `${{{name}:default}}`)")]
    Unset {
        /// The variable.
        name: String,
    },
}

/// Replaces every `${VAR}` / `${VAR:default}` in `text`, reading variables
/// through `lookup`.
pub fn interpolate(text: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = body
            .find('}')
            .ok_or_else(|| InterpolateError::Unclosed { text: text.to_owned() })?;
        let (name, default) = match body[..end].split_once(':') {
            Some((name, default)) => (name, Some(default)),
            None => (&body[..end], None),
        };
        if !is_variable_name(name) {
            return Err(InterpolateError::BadName { name: name.to_owned() });
        }
        match (lookup(name).filter(|value| !value.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(InterpolateError::Unset { name: name.to_owned() });
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("9000".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_values_and_defaults() {
        assert_eq!(interpolate("0.0.0.0:${PORT}", &env).unwrap(), "0.0.0.0:9000");
        assert_eq!(interpolate("${MISSING:15000}", &env).unwrap(), "15000");
        assert_eq!(interpolate("${PORT:1}-${EMPTY:x}", &env).unwrap(), "9000-x");
        assert_eq!(interpolate("${AWS_ENDPOINT_URL:}", &env).unwrap(), "");
        assert_eq!(
            interpolate("http://h:${MISSING:0.0.0.0:42043}", &env).unwrap(),
            "http://h:0.0.0.0:42043"
        );
    }

    #[test]
    fn leaves_other_dollars_alone_and_unescapes_double_dollars() {
        assert_eq!(interpolate("price $5 and $$HOME", &env).unwrap(), "price $5 and $HOME");
        assert_eq!(interpolate("$", &env).unwrap(), "$");
    }

    #[test]
    fn rejects_unset_bad_and_unclosed_references() {
        assert_eq!(
            interpolate("${NOPE}", &env),
            Err(InterpolateError::Unset { name: "NOPE".into() })
        );
        assert_eq!(
            interpolate("${1X}", &env),
            Err(InterpolateError::BadName { name: "1X".into() })
        );
        assert!(matches!(
            interpolate("${PORT", &env),
            Err(InterpolateError::Unclosed { .. })
        ));
    }
}
