//! The `stdout` output: writes events as JSON lines on standard output, for
//! debugging a pipeline or piping events into another tool.
//!
//! [`StdoutOutputConfig`] is the TOML table; the [`StdoutOutput`] it builds
//! writes each batch in one locked write and flushes it. A slow reader makes
//! the write wait, and that wait is the backpressure the pipeline passes on.
//!
//! There is no dead-letter file: no event can be refused on its own. Every
//! event encodes (its document is built from strings, already-valid JSON
//! and base64), and what can fail, the write to standard output (a closed
//! pipe, an I/O error), fails for the whole batch alike.
#![warn(missing_docs, unreachable_pub)]

mod config;
mod error;
mod sink;

pub use config::StdoutOutputConfig;
pub use error::StdoutOutputError;
pub use sink::StdoutOutput;

/// The `type` that selects this output in a pipeline file.
pub const NAME: &str = "stdout";
