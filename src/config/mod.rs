//! Pipeline files: reading, interpolating, checking, and building plugins.
//!
//! A pipeline file is TOML (see `pipelines/default.toml`). Loading one goes
//! all the way to built plugins — every template parsed, every address
//! checked — without starting anything, so `eventstash validate` and `run`
//! reject the same files with the same messages, and a bad file never starts
//! half a pipeline. Every error names the file, the key and the problem.

mod build;
mod built;
mod environment;
mod file;
mod interpolate;
mod key_error;
mod value;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub(crate) use build::value_from_table;
pub use built::{BatchSettings, FilterPlugin, InputPlugin, OutputPlugin, PersistedSettings, PipelineConfig};
pub use file::LogFormat;
use file::PipelineFile;
pub use interpolate::{InterpolateError, interpolate};
pub(crate) use key_error::KeyError;
use key_error::key_prefix;
use value::{from_value, interpolate_strings};

/// A pipeline file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {}{message}", key_prefix(.key))]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The key, as a dotted path (`outputs[0].path`); empty for the whole file.
    pub key: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

/// Expands the `-c` arguments (paths or glob patterns) into files, in order.
pub fn expand_paths(patterns: &[String]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    for pattern in patterns {
        let error = |message: String| ConfigError {
            file: PathBuf::from(pattern),
            key: String::new(),
            message,
        };
        let matches = glob::glob(pattern).map_err(|e| error(format!("bad glob pattern: {e}")))?;
        let before = files.len();
        for entry in matches {
            files.push(entry.map_err(|e| error(e.to_string()))?);
        }
        if files.len() == before {
            return Err(error("no such file (or no file matches the pattern)".to_owned()));
        }
    }
    Ok(files)
}

/// Loads and builds every file; pipeline ids must be unique.
pub fn load_all(files: &[PathBuf]) -> Result<Vec<PipelineConfig>, ConfigError> {
    let mut ids = HashSet::new();
    let mut pipelines = Vec::with_capacity(files.len());
    for file in files {
        let pipeline = load(file)?;
        if !ids.insert(pipeline.id.clone()) {
            return Err(ConfigError {
                file: file.clone(),
                key: "pipeline.id".to_owned(),
                message: format!(
                    "another file already defines pipeline {:?}; give each file its own id",
                    pipeline.id
                ),
            });
        }
        pipelines.push(pipeline);
    }
    Ok(pipelines)
}

/// Loads and builds one pipeline file.
pub fn load(file: &Path) -> Result<PipelineConfig, ConfigError> {
    let read = || -> Result<PipelineFile, KeyError> {
        let text = std::fs::read_to_string(file).map_err(|e| KeyError::whole(format!("cannot read: {e}")))?;
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| KeyError::whole(format!("not valid TOML: {e}")))?;
        environment::fill_defaults(&mut table);
        let mut value = toml::Value::Table(table);
        let lookup = |name: &str| std::env::var(name).ok();
        interpolate_strings(&mut value, &mut Vec::new(), &lookup)
            .map_err(|(key, e)| KeyError::new(key, e.to_string()))?;
        from_value(value)
    };
    let parsed = read().map_err(|e| e.in_file(file))?;
    build::build(file, parsed)
}

#[cfg(test)]
mod tests;
