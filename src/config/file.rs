//! What a pipeline file says: the serde structs of its tables, with their
//! defaults in one place. `build` turns them into the checked form.

use std::path::PathBuf;

use bytesize::ByteSize;
use serde::Deserialize;

/// The `[pipeline]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PipelineSection {
    /// Names the pipeline in logs.
    #[serde(default = "default_pipeline_id")]
    pub(super) id: String,
    /// How long a shutdown may take; HFXEventStash's `SHUTDOWN_TIMEOUT`.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub(super) shutdown_timeout_ms: u64,
    /// Most events an output writes at once.
    #[serde(default = "default_batch_size")]
    pub(super) batch_size: usize,
    /// Most bytes an output writes at once.
    #[serde(default = "default_batch_bytes")]
    pub(super) batch_bytes: ByteSize,
    /// Longest an event waits for its batch to fill, unless its producer is
    /// already waiting for the acknowledgement.
    #[serde(default = "default_batch_delay_ms")]
    pub(super) batch_delay_ms: u64,
    /// Batches filtered at once (Logstash's `pipeline.workers`).
    #[serde(default = "default_workers")]
    pub(super) workers: usize,
    /// An output failing for longer than this makes the agent unhealthy.
    #[serde(default = "default_unhealthy_after_ms")]
    pub(super) unhealthy_after_ms: u64,
    /// `text` (default) or `json` logs; `LOG_FORMAT` if unset.
    #[serde(default)]
    pub(super) log_format: Option<LogFormat>,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            id: default_pipeline_id(),
            shutdown_timeout_ms: default_shutdown_timeout_ms(),
            batch_size: default_batch_size(),
            batch_bytes: default_batch_bytes(),
            batch_delay_ms: default_batch_delay_ms(),
            workers: default_workers(),
            unhealthy_after_ms: default_unhealthy_after_ms(),
            log_format: None,
        }
    }
}

fn default_pipeline_id() -> String {
    "main".to_owned()
}
/// A file always has the key: a missing one reads `SHUTDOWN_TIMEOUT` (see
/// `environment.rs`). This is the default of a section built in code.
fn default_shutdown_timeout_ms() -> u64 {
    15_000
}
fn default_batch_size() -> usize {
    1000
}
fn default_batch_bytes() -> ByteSize {
    ByteSize::mib(5)
}
fn default_batch_delay_ms() -> u64 {
    50
}
fn default_unhealthy_after_ms() -> u64 {
    30_000
}
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Where the pipeline queue keeps events.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum QueueType {
    #[default]
    Memory,
    Persisted,
}

/// When a producer's stream is acknowledged.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum AckMode {
    #[default]
    Delivered,
    Queued,
}

/// The `[queue]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QueueSection {
    #[serde(rename = "type", default)]
    pub(super) kind: QueueType,
    #[serde(default = "default_max_events")]
    pub(super) max_events: usize,
    #[serde(default = "default_max_bytes")]
    pub(super) max_bytes: ByteSize,
    #[serde(default)]
    pub(super) path: Option<PathBuf>,
    /// Persisted queue: sync every batch (default) or on an interval.
    #[serde(default)]
    pub(super) sync: SyncPolicy,
    /// The interval of `sync = "interval"`.
    #[serde(default = "default_sync_interval_ms")]
    pub(super) sync_interval_ms: u64,
    /// Default: `queued` with the persisted queue, `delivered` otherwise.
    #[serde(default)]
    pub(super) ack: Option<AckMode>,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection {
            kind: QueueType::Memory,
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            path: None,
            ack: None,
            sync: SyncPolicy::Batch,
            sync_interval_ms: default_sync_interval_ms(),
        }
    }
}

fn default_max_events() -> usize {
    10_000
}
fn default_max_bytes() -> ByteSize {
    ByteSize::mib(256)
}

/// A whole pipeline file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PipelineFile {
    #[serde(default)]
    pub(super) pipeline: PipelineSection,
    #[serde(default)]
    pub(super) queue: QueueSection,
    #[serde(default)]
    pub(super) metrics: Option<MetricsSection>,
    #[serde(default)]
    pub(super) inputs: Vec<toml::Table>,
    #[serde(default)]
    pub(super) filters: Vec<toml::Table>,
    #[serde(default)]
    pub(super) outputs: Vec<toml::Table>,
    /// Event stores (`[[event_stores]]`), served by gRPC inputs that name them.
    #[serde(default)]
    pub(super) event_stores: Vec<toml::Table>,
}

/// When the persisted queue syncs to disk. Producers are acknowledged only
/// after the sync either way.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum SyncPolicy {
    /// Every group of appended batches (group commit): lowest ack latency.
    #[default]
    Batch,
    /// Every `sync_interval_ms`: fewer fsyncs on slow disks, slower acks.
    Interval,
}

fn default_sync_interval_ms() -> u64 {
    1000
}

/// The `[metrics]` table: where `/metrics` and `/health` are served.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsSection {
    /// `HOST:PORT`.
    pub(super) bind: String,
}

/// How log lines are written.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Keys every `[[outputs]]` table may carry, read by the engine: the
/// output's queue and batching.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct OutputSettings {
    pub(super) batch_size: Option<usize>,
    pub(super) batch_bytes: Option<ByteSize>,
    pub(super) batch_delay_ms: Option<u64>,
    pub(super) concurrency: Option<usize>,
    pub(super) queue_max_events: Option<usize>,
    pub(super) queue_max_bytes: Option<ByteSize>,
}

/// The keys of [`OutputSettings`], taken out of an output's table before
/// the plugin reads the rest.
pub(super) const OUTPUT_SETTING_KEYS: [&str; 6] = [
    "batch_size",
    "batch_bytes",
    "batch_delay_ms",
    "concurrency",
    "queue_max_events",
    "queue_max_bytes",
];

/// Keys a `[[inputs]]` table may carry to serve `hfx.v1.EventStore`, read
/// by the engine: the event store `Append` and `Read` use, and the stores
/// `Replay` reads, by id (the first is the default).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct EventStoreSettings {
    pub(super) event_store: Option<String>,
    #[serde(default)]
    pub(super) replay: Vec<String>,
}

/// The keys of [`EventStoreSettings`], taken out of an input's table before
/// the plugin reads the rest.
pub(super) const EVENT_STORE_KEYS: [&str; 2] = ["event_store", "replay"];
