//! What a `type = "stdout"` table in a pipeline file says.

use serde::Deserialize;

use crate::error::StdoutOutputError;
use crate::sink::StdoutOutput;

/// The options of the stdout output.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutOutputConfig {
    /// Indent each document over several lines, for people rather than
    /// programs. Off by default: one document per line.
    pub pretty: bool,
}

impl StdoutOutputConfig {
    /// Builds the output. Kept fallible like every plugin's `build`, so the
    /// registry treats all outputs alike.
    pub fn build(self) -> Result<StdoutOutput, StdoutOutputError> {
        Ok(StdoutOutput::new(self.pretty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_is_compact_output() {
        let config: StdoutOutputConfig = serde_json::from_str("{}").unwrap();
        assert!(!config.pretty);
        assert!(config.build().is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = serde_json::from_str::<StdoutOutputConfig>(r#"{"colour": true}"#).unwrap_err();
        assert!(error.to_string().contains("unknown field `colour`"), "{error}");
    }
}
