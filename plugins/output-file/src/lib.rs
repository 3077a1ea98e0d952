//! The `file` output: stores events as JSON lines, one document per line, in
//! files named by a path template such as `data/%{index}/%{+yyyy-MM-dd}.jsonl`.
//!
//! [`FileOutputConfig`] is the TOML table, checked by
//! [`FileOutputConfig::build`] without touching the disk; the
//! [`FileOutput`] it builds appends each batch to its files and syncs them
//! before reporting the batch as stored, so an acknowledged event survives a
//! crash.
#![warn(missing_docs, unreachable_pub)]

mod config;
mod encode;
mod error;
mod open_files;
mod sink;

pub use config::FileOutputConfig;
pub use error::FileOutputError;
pub use sink::FileOutput;

/// The `type` that selects this output in a pipeline file.
pub const NAME: &str = "file";
