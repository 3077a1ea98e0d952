//! The `file` output: stores events as JSON lines, one document per line, in
//! files named by a path template such as `data/%{index}/%{+yyyy-MM-dd}.jsonl`.
//!
//! [`FileOutputConfig`] is the TOML table, checked by
//! [`FileOutputConfig::build_in`] without touching the disk; the
//! [`FileOutput`] it builds appends each batch to its files and syncs them
//! before reporting the batch as stored, so an acknowledged event survives a
//! crash. An event whose path can never be a file (a name too long for the
//! file system, say) goes to the dead-letter file (`dead_letter_path`) with
//! the reason, on its own: the rest of its batch is stored.
#![warn(missing_docs, unreachable_pub)]

mod config;
mod encode;
mod error;
mod open_files;
mod path_fault;
mod sink;
mod writer;

pub use config::FileOutputConfig;
pub use error::FileOutputError;
pub use sink::FileOutput;

/// The `type` that selects this output in a pipeline file.
pub const NAME: &str = "file";
