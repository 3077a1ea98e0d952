//! The eventstash engine: configuration, the plugin registry, queues,
//! pipelines and shutdown. `main.rs` is a thin CLI around it.
//!
//! The engine knows plugins only through [`registry`]; everything else
//! speaks the traits of `eventstash-plugin-api`.
#![warn(unreachable_pub)]

pub mod app;
pub mod config;
mod event_store;
#[cfg(feature = "fault-injection")]
mod fault_filter;
pub mod health;
pub mod healthcheck;
mod metrics;
pub use metrics::install_recorder as install_metrics_recorder;
mod output_driver;
mod persisted_queue;
pub use persisted_queue::{InspectError, inspect_queue};
pub mod pipeline;
pub mod queue;
pub mod queue_log;
mod registry;
pub use registry::producer_token_sha256;
mod replay_guard;
mod sink;
pub mod store_cli;
#[cfg(test)]
mod test_support;
