//! "This key of this section is wrong": the one shape of a configuration
//! mistake below the level of the file.
//!
//! Whoever finds the mistake names the key relative to what it was given
//! (a plugin's config struct says `path`, the file parser says
//! `outputs[0]`); each caller on the way up puts its section in front with
//! [`KeyError::within`], and `config::load` finally names the file
//! ([`KeyError::in_file`]), so every message reads
//! `pipelines/x.toml: `outputs[0].path`: what is wrong`.

use std::path::Path;

use super::ConfigError;

/// A key that is wrong, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", key_prefix(.key))]
pub(crate) struct KeyError {
    /// Dotted path of the key (`outputs[0].path`), relative to the section
    /// it was found in; empty (or `.`) for the section as a whole.
    pub(crate) key: String,
    /// What is wrong and, where it helps, what to write instead.
    pub(crate) message: String,
}

impl KeyError {
    /// `key` is wrong: `message` says why.
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> KeyError {
        KeyError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The section as a whole is wrong, not one of its keys.
    pub(crate) fn whole(message: impl Into<String>) -> KeyError {
        KeyError::new(String::new(), message)
    }

    /// The same mistake, its key prefixed with the `section` it was found
    /// in (`outputs[0]` + `path` → `outputs[0].path`).
    pub(crate) fn within(self, section: &str) -> KeyError {
        let key = match self.key.as_str() {
            "" | "." => section.to_owned(),
            key if key.starts_with('[') => format!("{section}{key}"),
            key => format!("{section}.{key}"),
        };
        KeyError { key, ..self }
    }

    /// The mistake as the operator sees it: in `file`.
    pub(crate) fn in_file(self, file: &Path) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            key: self.key,
            message: self.message,
        }
    }
}

/// `` `key`: `` before the message, or nothing for a whole section.
pub(super) fn key_prefix(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!("`{key}`: ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_put_in_front_of_keys_indexes_and_whole_tables() {
        assert_eq!(KeyError::new("path", "x").within("outputs[0]").key, "outputs[0].path");
        assert_eq!(
            KeyError::new("[2]", "x").within("outputs[0].hosts").key,
            "outputs[0].hosts[2]"
        );
        assert_eq!(KeyError::whole("x").within("inputs[1]").key, "inputs[1]");
        assert_eq!(KeyError::new(".", "x").within("inputs[1]").key, "inputs[1]");
    }

    #[test]
    fn the_message_names_the_key_and_the_file() {
        let error = KeyError::new("bind", "not an address").within("metrics");
        assert_eq!(error.to_string(), "`metrics.bind`: not an address");
        assert_eq!(KeyError::whole("empty").to_string(), "empty");
        let error = error.in_file(Path::new("p.toml"));
        assert_eq!(error.to_string(), "p.toml: `metrics.bind`: not an address");
    }
}
