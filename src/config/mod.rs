//! Pipeline files: reading, interpolating, checking, and building plugins.
//!
//! A pipeline file is TOML (see `pipelines/default.toml`). Loading one goes
//! all the way to built plugins — every template parsed, every address
//! checked — without starting anything, so `eventstash validate` and `run`
//! reject the same files with the same messages, and a bad file never starts
//! half a pipeline. Every error names the file, the key and the problem.

mod interpolate;
mod value;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use eventstash_plugin_api::{Filter, Input, Output};
use serde::Deserialize;

pub use interpolate::{InterpolateError, interpolate};
use value::{from_value, interpolate_strings};

use crate::queue::QueueLimits;
use crate::registry;

/// Largest byte bound of a queue: permits are counted in `u32`.
const MAX_QUEUE_BYTES: u64 = u32::MAX as u64;

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

fn key_prefix(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!("`{key}`: ")
    }
}

/// The `[pipeline]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineSection {
    /// Names the pipeline in logs.
    #[serde(default = "default_pipeline_id")]
    id: String,
    /// How long a shutdown may take; HFXEventStash's `SHUTDOWN_TIMEOUT`.
    #[serde(default = "default_shutdown_timeout_ms")]
    shutdown_timeout_ms: u64,
    /// Most events an output writes at once.
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    /// Most bytes an output writes at once.
    #[serde(default = "default_batch_bytes")]
    batch_bytes: ByteSize,
    /// Longest an event waits for its batch to fill, unless its producer is
    /// already waiting for the acknowledgement.
    #[serde(default = "default_batch_delay_ms")]
    batch_delay_ms: u64,
    /// Batches filtered at once (Logstash's `pipeline.workers`).
    #[serde(default = "default_workers")]
    workers: usize,
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
        }
    }
}

fn default_pipeline_id() -> String {
    "main".to_owned()
}
fn default_shutdown_timeout_ms() -> u64 {
    std::env::var("SHUTDOWN_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15_000)
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
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Where the pipeline queue keeps events.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum QueueType {
    #[default]
    Memory,
    Persisted,
}

/// When a producer's stream is acknowledged.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum AckMode {
    #[default]
    Delivered,
    Queued,
}

/// The `[queue]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueSection {
    #[serde(rename = "type", default)]
    kind: QueueType,
    #[serde(default = "default_max_events")]
    max_events: usize,
    #[serde(default = "default_max_bytes")]
    max_bytes: ByteSize,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    ack: AckMode,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection {
            kind: QueueType::Memory,
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            path: None,
            ack: AckMode::Delivered,
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
struct PipelineFile {
    #[serde(default)]
    pipeline: PipelineSection,
    #[serde(default)]
    queue: QueueSection,
    #[serde(default)]
    inputs: Vec<toml::Table>,
    #[serde(default)]
    filters: Vec<toml::Table>,
    #[serde(default)]
    outputs: Vec<toml::Table>,
}

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

/// A built input and its id.
pub struct InputPlugin {
    /// `type#index` unless the table gives an `id`.
    pub id: String,
    /// The plugin.
    pub input: Box<dyn Input>,
}

/// A built filter and its id.
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
    /// Inputs, in file order.
    pub inputs: Vec<InputPlugin>,
    /// Filters, applied in file order.
    pub filters: Vec<FilterPlugin>,
    /// Outputs; every event goes to each.
    pub outputs: Vec<OutputPlugin>,
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
            return Err(error(
                "no such file (or no file matches the pattern)".to_owned(),
            ));
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
    let error = |key: &str, message: String| ConfigError {
        file: file.to_owned(),
        key: key.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| error("", format!("cannot read: {e}")))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| error("", format!("not valid TOML: {e}")))?;
    let mut value = toml::Value::Table(table);
    let lookup = |name: &str| std::env::var(name).ok();
    interpolate_strings(&mut value, &mut Vec::new(), &lookup)
        .map_err(|(key, e)| error(&key, e.to_string()))?;
    let parsed: PipelineFile = from_value(value).map_err(|e| error(&e.key, e.message))?;
    build(file, parsed)
}

fn build(file: &Path, parsed: PipelineFile) -> Result<PipelineConfig, ConfigError> {
    let error = |key: String, message: String| ConfigError {
        file: file.to_owned(),
        key,
        message,
    };
    let PipelineFile {
        pipeline,
        queue,
        inputs,
        filters,
        outputs,
    } = parsed;

    match (queue.kind, queue.ack) {
        (QueueType::Persisted, _) => {
            return Err(error(
                "queue.type".into(),
                "the persisted queue is not available in this version; use \"memory\"".into(),
            ));
        }
        (QueueType::Memory, AckMode::Queued) => {
            return Err(error(
                "queue.ack".into(),
                "\"queued\" needs `type = \"persisted\"`; the memory queue acknowledges when delivered".into(),
            ));
        }
        (QueueType::Memory, AckMode::Delivered) => {}
    }
    let _ = queue.path;
    let pipeline_queue = queue_limits(queue.max_events, queue.max_bytes)
        .map_err(|(key, message)| error(format!("queue.{key}"), message))?;
    if pipeline.batch_size == 0 {
        return Err(error(
            "pipeline.batch_size".into(),
            "must be at least 1".into(),
        ));
    }
    if inputs.is_empty() {
        return Err(error(
            "inputs".into(),
            "a pipeline needs at least one [[inputs]] table".into(),
        ));
    }
    if outputs.is_empty() {
        return Err(error(
            "outputs".into(),
            "a pipeline needs at least one [[outputs]] table".into(),
        ));
    }

    let mut built_inputs = Vec::new();
    for (index, table) in inputs.into_iter().enumerate() {
        let section = format!("inputs[{index}]");
        let (kind, id, rest) =
            plugin_header(table, index).map_err(|(key, m)| error(format!("{section}.{key}"), m))?;
        let input = registry::build_input(&kind, rest)
            .map_err(|e| error(join_key(&section, &e.key), e.message))?;
        built_inputs.push(InputPlugin { id, input });
    }
    let mut built_filters = Vec::new();
    for (index, table) in filters.into_iter().enumerate() {
        let section = format!("filters[{index}]");
        let (kind, id, rest) =
            plugin_header(table, index).map_err(|(key, m)| error(format!("{section}.{key}"), m))?;
        let filter = registry::build_filter(&kind, rest)
            .map_err(|e| error(join_key(&section, &e.key), e.message))?;
        built_filters.push(FilterPlugin {
            id,
            filter: Arc::from(filter),
        });
    }
    let mut built_outputs = Vec::new();
    for (index, table) in outputs.into_iter().enumerate() {
        let section = format!("outputs[{index}]");
        let (kind, id, mut rest) =
            plugin_header(table, index).map_err(|(key, m)| error(format!("{section}.{key}"), m))?;
        let settings: OutputSettings = take_output_settings(&mut rest)
            .map_err(|(key, m)| error(join_key(&section, &key), m))?;
        let output = registry::build_output(&kind, rest)
            .map_err(|e| error(join_key(&section, &e.key), e.message))?;
        let max_events = settings.queue_max_events.unwrap_or(queue.max_events);
        let max_bytes = settings.queue_max_bytes.unwrap_or(queue.max_bytes);
        let limits = queue_limits(max_events, max_bytes)
            .map_err(|(key, m)| error(format!("{section}.queue_{key}"), m))?;
        let batch = BatchSettings {
            max_events: settings
                .batch_size
                .unwrap_or(pipeline.batch_size)
                .clamp(1, limits.max_events),
            max_bytes: (settings
                .batch_bytes
                .unwrap_or(pipeline.batch_bytes)
                .as_u64() as usize)
                .clamp(1, limits.max_bytes),
            delay: Duration::from_millis(
                settings.batch_delay_ms.unwrap_or(pipeline.batch_delay_ms),
            ),
            concurrency: settings.concurrency.max(1),
        };
        built_outputs.push(OutputPlugin {
            id,
            output: Arc::from(output),
            queue: limits,
            batch,
        });
    }

    Ok(PipelineConfig {
        file: file.to_owned(),
        id: pipeline.id,
        shutdown_timeout: Duration::from_millis(pipeline.shutdown_timeout_ms),
        queue: pipeline_queue,
        workers: pipeline.workers.max(1),
        inputs: built_inputs,
        filters: built_filters,
        outputs: built_outputs,
    })
}

/// Deserializes a plugin's table, for the registry.
pub(crate) fn value_from_table<T: serde::de::DeserializeOwned>(
    table: toml::Table,
) -> Result<T, (String, String)> {
    from_value(toml::Value::Table(table)).map_err(|e| (e.key, e.message))
}

fn join_key(section: &str, key: &str) -> String {
    match key {
        "" | "." => section.to_owned(),
        key if key.starts_with('[') => format!("{section}{key}"),
        key => format!("{section}.{key}"),
    }
}

fn queue_limits(
    max_events: usize,
    max_bytes: ByteSize,
) -> Result<QueueLimits, (&'static str, String)> {
    if max_events == 0 || max_events > u32::MAX as usize {
        return Err(("max_events", format!("must be between 1 and {}", u32::MAX)));
    }
    if max_bytes.as_u64() < 1024 || max_bytes.as_u64() > MAX_QUEUE_BYTES {
        return Err((
            "max_bytes",
            format!("must be between 1KiB and {}", ByteSize(MAX_QUEUE_BYTES)),
        ));
    }
    Ok(QueueLimits {
        max_events,
        max_bytes: max_bytes.as_u64() as usize,
    })
}

/// Splits a plugin table into its `type`, its id and the plugin's own keys.
fn plugin_header(
    mut table: toml::Table,
    index: usize,
) -> Result<(String, String, toml::Table), (String, String)> {
    let kind = match table.remove("type") {
        Some(toml::Value::String(kind)) => kind,
        Some(_) => return Err(("type".into(), "must be a string".into())),
        None => {
            return Err((
                "type".into(),
                "missing: every plugin table names its `type`".into(),
            ));
        }
    };
    let id = match table.remove("id") {
        Some(toml::Value::String(id)) => id,
        Some(_) => return Err(("id".into(), "must be a string".into())),
        None => format!("{kind}#{index}"),
    };
    Ok((kind, id, table))
}

/// Keys every `[[outputs]]` table may carry, read by the engine: the
/// output's queue and batching.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OutputSettings {
    batch_size: Option<usize>,
    batch_bytes: Option<ByteSize>,
    batch_delay_ms: Option<u64>,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    queue_max_events: Option<usize>,
    queue_max_bytes: Option<ByteSize>,
}

fn default_concurrency() -> usize {
    1
}

const OUTPUT_SETTING_KEYS: [&str; 6] = [
    "batch_size",
    "batch_bytes",
    "batch_delay_ms",
    "concurrency",
    "queue_max_events",
    "queue_max_bytes",
];

fn take_output_settings(rest: &mut toml::Table) -> Result<OutputSettings, (String, String)> {
    let mut settings = toml::Table::new();
    for key in OUTPUT_SETTING_KEYS {
        if let Some(value) = rest.remove(key) {
            settings.insert(key.to_owned(), value);
        }
    }
    value_from_table(settings)
}

#[cfg(test)]
mod tests;
