//! Building a checked pipeline from a parsed file: limits checked, every
//! plugin built through the registry, each with its context.
//!
//! Filters, event stores and outputs are built before the inputs, because
//! a gRPC input names the event store and the replay stores it serves
//! (`event_store`, `replay`) by id.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use eventstash_plugin_api::{ComponentHealth, EventStore, Filter, Input, Output, PluginContext, ReplaySource};

use super::ConfigError;
use super::file::{
    AckMode, EVENT_STORE_KEYS, EventStoreSettings, LogFormat, OUTPUT_SETTING_KEYS, OutputSettings, PipelineFile,
    QueueType, SyncPolicy,
};
use super::value::from_value;
use crate::event_store::FilteredEventStore;
use crate::queue::QueueLimits;
use crate::registry::{self, EventStoreWiring};

/// Largest byte bound of a queue: permits are counted in `u32`.
const MAX_QUEUE_BYTES: u64 = u32::MAX as u64;

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

pub(super) fn build(file: &Path, parsed: PipelineFile) -> Result<PipelineConfig, ConfigError> {
    let error = |key: String, message: String| ConfigError {
        file: file.to_owned(),
        key,
        message,
    };
    let PipelineFile {
        pipeline,
        queue,
        metrics,
        inputs,
        filters,
        outputs,
        event_stores,
    } = parsed;
    let metrics_bind = match metrics {
        Some(section) => Some(section.bind.parse::<SocketAddr>().map_err(|e| {
            error(
                "metrics.bind".into(),
                format!("{:?} is not an address like 127.0.0.1:9600: {e}", section.bind),
            )
        })?),
        None => None,
    };

    let persisted = match (queue.kind, queue.ack) {
        (QueueType::Memory, Some(AckMode::Queued)) => {
            return Err(error(
                "queue.ack".into(),
                "\"queued\" needs `type = \"persisted\"`; the memory queue acknowledges when delivered".into(),
            ));
        }
        (QueueType::Memory, _) => None,
        (QueueType::Persisted, ack) => Some(PersistedSettings {
            path: queue
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("data/queue").join(&pipeline.id)),
            ack_queued: ack != Some(AckMode::Delivered),
            sync_interval: (queue.sync == SyncPolicy::Interval)
                .then(|| Duration::from_millis(queue.sync_interval_ms.max(1))),
        }),
    };
    let pipeline_queue = queue_limits(queue.max_events, queue.max_bytes)
        .map_err(|(key, message)| error(format!("queue.{key}"), message))?;
    if pipeline.batch_size == 0 {
        return Err(error("pipeline.batch_size".into(), "must be at least 1".into()));
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

    let mut built_filters = Vec::new();
    for (index, table) in filters.into_iter().enumerate() {
        let section = format!("filters[{index}]");
        let (kind, id, rest) = plugin_header(table, index).map_err(|(key, m)| error(format!("{section}.{key}"), m))?;
        let filter = registry::build_filter(&kind, rest).map_err(|e| error(join_key(&section, &e.key), e.message))?;
        built_filters.push(FilterPlugin {
            id,
            filter: Arc::from(filter),
        });
    }
    let mut built_stores = Vec::new();
    let mut replay_sources: Vec<(String, Arc<dyn ReplaySource>)> = Vec::new();
    for (index, mut table) in event_stores.into_iter().enumerate() {
        let section = format!("event_stores[{index}]");
        // Not `type#n`: a `dynamodb` output would have the same id.
        if !table.contains_key("id") {
            table.insert("id".to_owned(), toml::Value::String(format!("event_store#{index}")));
        }
        let (kind, id, rest) = plugin_header(table, index).map_err(|(key, m)| error(format!("{section}.{key}"), m))?;
        let context = PluginContext::new(&pipeline.id, &id);
        let built = registry::build_event_store(&kind, rest, &context)
            .map_err(|e| error(join_key(&section, &e.key), e.message))?;
        replay_sources.push((id.clone(), built.replay));
        built_stores.push((id, built.store));
    }
    let mut built_outputs = Vec::new();
    for (index, table) in outputs.into_iter().enumerate() {
        let section = format!("outputs[{index}]");
        let (kind, id, mut rest) =
            plugin_header(table, index).map_err(|(key, m)| error(format!("{section}.{key}"), m))?;
        let settings: OutputSettings =
            take_output_settings(&mut rest).map_err(|(key, m)| error(join_key(&section, &key), m))?;
        let context = PluginContext::new(&pipeline.id, &id);
        if let Some(source) = registry::build_replay_source(&kind, &rest, &context)
            .map_err(|e| error(join_key(&section, &e.key), e.message))?
        {
            if replay_sources.iter().any(|(other, _)| *other == id) {
                return Err(error(
                    format!("{section}.id"),
                    format!("{id:?} is also an event store's id; give each its own"),
                ));
            }
            replay_sources.push((id.clone(), source));
        }
        let output =
            registry::build_output(&kind, rest, &context).map_err(|e| error(join_key(&section, &e.key), e.message))?;
        let max_events = settings.queue_max_events.unwrap_or(queue.max_events);
        let max_bytes = settings.queue_max_bytes.unwrap_or(queue.max_bytes);
        let limits =
            queue_limits(max_events, max_bytes).map_err(|(key, m)| error(format!("{section}.queue_{key}"), m))?;
        let batch = BatchSettings {
            max_events: settings
                .batch_size
                .unwrap_or(pipeline.batch_size)
                .clamp(1, limits.max_events),
            max_bytes: (settings.batch_bytes.unwrap_or(pipeline.batch_bytes).as_u64() as usize)
                .clamp(1, limits.max_bytes),
            delay: Duration::from_millis(settings.batch_delay_ms.unwrap_or(pipeline.batch_delay_ms)),
            concurrency: settings.concurrency.max(1),
        };
        built_outputs.push(OutputPlugin {
            id,
            health: context.health,
            output: Arc::from(output),
            queue: limits,
            batch,
        });
    }

    let filters: Arc<[Arc<dyn Filter>]> = built_filters.iter().map(|f| f.filter.clone()).collect();
    let mut built_inputs = Vec::new();
    for (index, table) in inputs.into_iter().enumerate() {
        let section = format!("inputs[{index}]");
        let (kind, id, mut rest) =
            plugin_header(table, index).map_err(|(key, m)| error(format!("{section}.{key}"), m))?;
        let backends = event_store_backends(&mut rest, &built_stores, &replay_sources, &filters)
            .map_err(|(key, m)| error(join_key(&section, &key), m))?;
        let context = PluginContext::new(&pipeline.id, &id);
        let input =
            registry::build_input(&kind, rest, backends).map_err(|e| error(join_key(&section, &e.key), e.message))?;
        built_inputs.push(InputPlugin { id, context, input });
    }

    Ok(PipelineConfig {
        file: file.to_owned(),
        id: pipeline.id,
        shutdown_timeout: Duration::from_millis(pipeline.shutdown_timeout_ms),
        queue: pipeline_queue,
        workers: pipeline.workers.max(1),
        unhealthy_after: Duration::from_millis(pipeline.unhealthy_after_ms),
        metrics_bind,
        log_format: pipeline.log_format,
        persisted,
        inputs: built_inputs,
        filters: built_filters,
        outputs: built_outputs,
        event_stores: built_stores,
        replay_sources,
    })
}

/// Takes `event_store` and `replay` out of an input's table and finds the
/// stores they name; `None` when the input names none.
fn event_store_backends(
    rest: &mut toml::Table,
    stores: &[(String, Arc<dyn EventStore>)],
    replay_sources: &[(String, Arc<dyn ReplaySource>)],
    filters: &Arc<[Arc<dyn Filter>]>,
) -> Result<Option<EventStoreWiring>, (String, String)> {
    let mut keys = toml::Table::new();
    for key in EVENT_STORE_KEYS {
        if let Some(value) = rest.remove(key) {
            keys.insert(key.to_owned(), value);
        }
    }
    if keys.is_empty() {
        return Ok(None);
    }
    let settings: EventStoreSettings = value_from_table(keys)?;
    let known = |ids: &mut dyn Iterator<Item = &String>| {
        let ids: Vec<&str> = ids.map(String::as_str).collect();
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.join(", ")
        }
    };
    let store = match settings.event_store {
        Some(id) => {
            let (_, store) = stores.iter().find(|(name, _)| *name == id).ok_or_else(|| {
                let known = known(&mut stores.iter().map(|(name, _)| name));
                (
                    "event_store".to_owned(),
                    format!("no [[event_stores]] table has id {id:?} (known: {known})"),
                )
            })?;
            Some(Arc::new(FilteredEventStore::new(store.clone(), filters.clone())) as Arc<dyn EventStore>)
        }
        None => None,
    };
    let mut replay = Vec::with_capacity(settings.replay.len());
    for (index, id) in settings.replay.into_iter().enumerate() {
        let (_, source) = replay_sources.iter().find(|(name, _)| *name == id).ok_or_else(|| {
            let known = known(&mut replay_sources.iter().map(|(name, _)| name));
            (
                format!("replay[{index}]"),
                format!("no event store or output that can replay has id {id:?} (known: {known})"),
            )
        })?;
        replay.push((id, source.clone()));
    }
    Ok(Some(EventStoreWiring { store, replay }))
}

/// Deserializes a plugin's table, for the registry.
pub(crate) fn value_from_table<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, (String, String)> {
    from_value(toml::Value::Table(table)).map_err(|e| (e.key, e.message))
}

fn join_key(section: &str, key: &str) -> String {
    match key {
        "" | "." => section.to_owned(),
        key if key.starts_with('[') => format!("{section}{key}"),
        key => format!("{section}.{key}"),
    }
}

fn queue_limits(max_events: usize, max_bytes: ByteSize) -> Result<QueueLimits, (&'static str, String)> {
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
fn plugin_header(mut table: toml::Table, index: usize) -> Result<(String, String, toml::Table), (String, String)> {
    let kind = match table.remove("type") {
        Some(toml::Value::String(kind)) => kind,
        Some(_) => return Err(("type".into(), "must be a string".into())),
        None => {
            return Err(("type".into(), "missing: every plugin table names its `type`".into()));
        }
    };
    let id = match table.remove("id") {
        Some(toml::Value::String(id)) => id,
        Some(_) => return Err(("id".into(), "must be a string".into())),
        None => format!("{kind}#{index}"),
    };
    Ok((kind, id, table))
}

fn take_output_settings(rest: &mut toml::Table) -> Result<OutputSettings, (String, String)> {
    let mut settings = toml::Table::new();
    for key in OUTPUT_SETTING_KEYS {
        if let Some(value) = rest.remove(key) {
            settings.insert(key.to_owned(), value);
        }
    }
    value_from_table(settings)
}
