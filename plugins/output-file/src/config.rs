//! What a `type = "file"` table in a pipeline file says, and its check.
//!
//! The struct is plain serde data; [`FileOutputConfig::build_in`] turns it
//! into a ready [`FileOutput`] without touching the disk, so `eventstash
//! validate` can run it on any machine.

use std::path::PathBuf;

use eventstash_plugin_api::{DeadLetterFile, FieldTemplate, PluginContext};
use serde::Deserialize;

use crate::error::FileOutputError;
use crate::sink::FileOutput;

/// The options of the file output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutputConfig {
    /// Where documents go: a field template, rendered per event, such as
    /// `data/%{index}.jsonl`. Field values are escaped into single path
    /// segments, so a producer cannot pick a file outside the directories
    /// the template names. Missing directories are created.
    pub path: String,
    /// Sync every file a batch touched (`fdatasync`) before the batch counts
    /// as stored. Turning it off trades crash safety for throughput: events
    /// are acknowledged once they are in the page cache.
    #[serde(default = "defaults::sync")]
    pub sync: bool,
    /// The most files kept open between batches; beyond it the least recently
    /// used is closed. Matters for templates with many distinct paths.
    #[serde(default = "defaults::max_open_files")]
    pub max_open_files: usize,
    /// Where events go whose file can never be written because of the path
    /// they render (a name too long for the file system, a path component
    /// that is a file): one JSON line each with the reason, instead of
    /// failing their batch. Default
    /// `data/dead_letter/<pipeline>/<output id>.jsonl`, as for the
    /// Elasticsearch output; an empty value means the default.
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
}

/// The defaults of the optional keys, in one place.
mod defaults {
    pub(super) fn sync() -> bool {
        true
    }

    pub(super) fn max_open_files() -> usize {
        256
    }
}

impl FileOutputConfig {
    /// Checks the options and builds the output for the pipeline and output
    /// id in `ctx`. Opens no file: files are opened on first write (it starts
    /// the output's writer thread, which ends with the output).
    pub fn build_in(self, ctx: &PluginContext) -> Result<FileOutput, FileOutputError> {
        if self.path.is_empty() {
            return Err(FileOutputError::InvalidOption {
                key: "path",
                problem: "must not be empty",
            });
        }
        if self.max_open_files == 0 {
            return Err(FileOutputError::InvalidOption {
                key: "max_open_files",
                problem: "must be at least 1",
            });
        }
        let template = FieldTemplate::parse(&self.path).map_err(|error| FileOutputError::PathTemplate { error })?;
        let dead_letters = DeadLetterFile::for_output(self.dead_letter_path.as_deref(), ctx);
        FileOutput::new(ctx, template, self.sync, self.max_open_files, dead_letters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(json: &str) -> Result<FileOutputConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn optional_keys_default_to_safe_values() {
        let config = parse(r#"{"path": "out/%{index}.jsonl"}"#).unwrap();
        assert!(config.sync);
        assert_eq!(config.max_open_files, 256);
        let ctx = PluginContext::new("main", "file#1");
        assert_eq!(
            DeadLetterFile::for_output(config.dead_letter_path.as_deref(), &ctx).path(),
            Path::new("data/dead_letter/main/file_1.jsonl")
        );
        assert!(config.build_in(&ctx).is_ok());
    }

    #[test]
    fn an_empty_dead_letter_path_means_the_default() {
        let ctx = PluginContext::new("main", "file#0");
        let config = parse(r#"{"path": "x", "dead_letter_path": ""}"#).unwrap();
        assert_eq!(
            DeadLetterFile::for_output(config.dead_letter_path.as_deref(), &ctx).path(),
            Path::new("data/dead_letter/main/file_0.jsonl")
        );
        let config = parse(r#"{"path": "x", "dead_letter_path": "dlq/files.jsonl"}"#).unwrap();
        assert_eq!(
            DeadLetterFile::for_output(config.dead_letter_path.as_deref(), &ctx).path(),
            Path::new("dlq/files.jsonl")
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = parse(r#"{"path": "x", "fsync": false}"#).unwrap_err();
        assert!(error.to_string().contains("fsync"), "{error}");
    }

    #[test]
    fn a_bad_template_names_the_path_key() {
        let config = parse(r#"{"path": "out/%{index"}"#).unwrap();
        let error = config.build_in(&PluginContext::new("main", "file#0")).unwrap_err();
        assert!(matches!(error, FileOutputError::PathTemplate { .. }));
        assert!(error.to_string().contains("`path`"), "{error}");
    }

    #[test]
    fn zero_open_files_is_rejected() {
        let config = parse(r#"{"path": "x", "max_open_files": 0}"#).unwrap();
        assert!(matches!(
            config.build_in(&PluginContext::new("main", "file#0")),
            Err(FileOutputError::InvalidOption {
                key: "max_open_files",
                ..
            })
        ));
    }
}
