//! What a checked pipeline is: its settings and its built plugins, ready to
//! start. `build` makes these from a parsed file; `pipeline::start` runs
//! them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eventstash_plugin_api::{ComponentHealth, EventStore, Filter, Input, Output, PluginContext, ReplaySource};

use super::file::LogFormat;
use crate::queue::QueueLimits;

/// How an output's queue hands it batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most events in one write.
    pub max_events: usize,
    /// Most estimated bytes in one write.
    pub max_bytes: usize,
    /// Longest the first event of a batch waits for more.
    pub delay: Duration,
    /// Writes in flight at once.
    pub concurrency: usize,
}

/// Where the persisted queue lives and when producers are acknowledged.
#[derive(Debug, Clone)]
pub struct PersistedSettings {
    /// The queue directory (`[queue] path`, default `data/queue/<pipeline id>`).
    pub path: PathBuf,
    /// `ack = "queued"`: acknowledge once synced to the queue.
    pub ack_queued: bool,
    /// `sync = "interval"`: sync this often instead of every batch.
    pub sync_interval: Option<Duration>,
}

/// A built input and who it is.
pub struct InputPlugin {
    /// `type#index` unless the table gives an `id`.
    pub id: String,
    /// Pipeline and id, for logs and metrics.
    pub context: PluginContext,
    /// The plugin.
    pub input: Box<dyn Input>,
}

/// A built filter and its id.
#[derive(Clone)]
pub struct FilterPlugin {
    /// `type#index` unless the table gives an `id`.
    pub id: String,
    /// The plugin, shared by the filter stage and SIGHUP reloads.
    pub filter: Arc<dyn Filter>,
}

/// A built output, its id and its queue and batch settings.
pub struct OutputPlugin {
    /// `type#index` unless the table gives an `id`.
    pub id: String,
    /// Where the output's failures and recoveries are reported.
    pub health: ComponentHealth,
    /// The plugin.
    pub output: Arc<dyn Output>,
    /// Bounds of its own queue.
    pub queue: QueueLimits,
    /// How it batches.
    pub batch: BatchSettings,
}

/// A checked pipeline with its plugins built, ready to start.
pub struct PipelineConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// `[pipeline] id`.
    pub id: String,
    /// How long a shutdown may take.
    pub shutdown_timeout: Duration,
    /// Bounds of the pipeline queue.
    pub queue: QueueLimits,
    /// Batches filtered at once.
    pub workers: usize,
    /// An output failing this long makes the agent unhealthy.
    pub unhealthy_after: Duration,
    /// Where `/metrics` and `/health` are served, if anywhere.
    pub metrics_bind: Option<SocketAddr>,
    /// The log format the file asks for.
    pub log_format: Option<LogFormat>,
    /// The persisted queue, if `[queue] type = "persisted"`.
    pub persisted: Option<PersistedSettings>,
    /// Inputs, in file order.
    pub inputs: Vec<InputPlugin>,
    /// Filters, applied in file order.
    pub filters: Vec<FilterPlugin>,
    /// Outputs; every event goes to each.
    pub outputs: Vec<OutputPlugin>,
    /// Event stores (`[[event_stores]]`) by id, for `eventstash read`.
    pub event_stores: Vec<(String, Arc<dyn EventStore>)>,
    /// Stores that can replay what eventstash wrote (event stores and
    /// outputs) by id, for `eventstash replay`.
    pub replay_sources: Vec<(String, Arc<dyn ReplaySource>)>,
}
