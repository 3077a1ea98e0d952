//! Building a checked pipeline from a parsed file: limits checked, every
//! plugin built through the registry, each with its context.
//!
//! Stage by stage: the pipeline's own sections, then filters, event stores
//! and outputs, and the inputs last, because a gRPC input names the event
//! store and the replay stores it serves (`event_store`, `replay`) by id.
//! Every mistake is a [`KeyError`] named under its section
//! (`outputs[1].path`), given its file by `build`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use eventstash_plugin_api::{EventStore, PluginContext, ReplaySource};

use super::file::{
    AckMode, EVENT_STORE_KEYS, EventStoreSettings, MetricsSection, OUTPUT_SETTING_KEYS, OutputSettings, PipelineFile,
    PipelineSection, QueueSection, QueueType, SyncPolicy,
};
use super::value::from_value;
use super::{
    BatchSettings, ConfigError, FilterPlugin, InputPlugin, KeyError, OutputPlugin, PersistedSettings, PipelineConfig,
};
use crate::event_store::FilteredEventStore;
use crate::queue::QueueLimits;
use crate::registry::{self, EventStoreWiring};

/// Largest byte bound of a queue: permits are counted in `u32`.
const MAX_QUEUE_BYTES: u64 = u32::MAX as u64;

/// Stores by id, as inputs name them.
type Named<T> = Vec<(String, Arc<T>)>;

/// The event stores by id, and the same stores as replay sources.
type BuiltStores = (Named<dyn EventStore>, Named<dyn ReplaySource>);

pub(super) fn build(file: &Path, parsed: PipelineFile) -> Result<PipelineConfig, ConfigError> {
    build_pipeline(file, parsed).map_err(|error| error.in_file(file))
}

fn build_pipeline(file: &Path, parsed: PipelineFile) -> Result<PipelineConfig, KeyError> {
    let PipelineFile {
        pipeline,
        queue,
        metrics,
        inputs,
        filters,
        outputs,
        event_stores,
    } = parsed;
    let metrics_bind = metrics_bind(metrics).map_err(|e| e.within("metrics"))?;
    let persisted = persisted_settings(&queue, &pipeline.id).map_err(|e| e.within("queue"))?;
    let pipeline_queue = queue_limits(queue.max_events, queue.max_bytes).map_err(|e| e.within("queue"))?;
    check_shape(&pipeline, &inputs, &outputs)?;

    let filters = build_filters(filters, &pipeline.id)?;
    let (event_stores, mut replay_sources) = build_event_stores(event_stores, &pipeline.id)?;
    let outputs = build_outputs(outputs, &pipeline, &queue, &mut replay_sources)?;
    let wiring = InputWiring {
        stores: &event_stores,
        replay_sources: &replay_sources,
        pipeline: &pipeline.id,
        filters: filters.iter().cloned().collect(),
    };
    let inputs = build_inputs(inputs, &pipeline.id, &wiring)?;

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
        inputs,
        filters,
        outputs,
        event_stores,
        replay_sources,
    })
}

/// `[metrics] bind`, if the section is there.
fn metrics_bind(metrics: Option<MetricsSection>) -> Result<Option<SocketAddr>, KeyError> {
    let Some(section) = metrics else { return Ok(None) };
    let bind = section.bind.parse::<SocketAddr>().map_err(|e| {
        KeyError::new(
            "bind",
            format!("{:?} is not an address like 127.0.0.1:9600: {e}", section.bind),
        )
    })?;
    Ok(Some(bind))
}

/// The persisted queue's settings; `None` for the memory queue.
fn persisted_settings(queue: &QueueSection, pipeline_id: &str) -> Result<Option<PersistedSettings>, KeyError> {
    match (queue.kind, queue.ack) {
        (QueueType::Memory, Some(AckMode::Queued)) => Err(KeyError::new(
            "ack",
            "\"queued\" needs `type = \"persisted\"`; the memory queue acknowledges when delivered",
        )),
        (QueueType::Memory, _) => Ok(None),
        (QueueType::Persisted, ack) => Ok(Some(PersistedSettings {
            path: queue
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("data/queue").join(pipeline_id)),
            ack_queued: ack != Some(AckMode::Delivered),
            sync_interval: (queue.sync == SyncPolicy::Interval)
                .then(|| Duration::from_millis(queue.sync_interval_ms.max(1))),
        })),
    }
}

/// What every pipeline needs: a batch size, an input and an output.
fn check_shape(pipeline: &PipelineSection, inputs: &[toml::Table], outputs: &[toml::Table]) -> Result<(), KeyError> {
    if pipeline.batch_size == 0 {
        return Err(KeyError::new("pipeline.batch_size", "must be at least 1"));
    }
    if inputs.is_empty() {
        return Err(KeyError::new(
            "inputs",
            "a pipeline needs at least one [[inputs]] table",
        ));
    }
    if outputs.is_empty() {
        return Err(KeyError::new(
            "outputs",
            "a pipeline needs at least one [[outputs]] table",
        ));
    }
    Ok(())
}

fn build_filters(tables: Vec<toml::Table>, pipeline_id: &str) -> Result<Vec<FilterPlugin>, KeyError> {
    build_each("filters", tables, None, |table| {
        let context = PluginContext::new(pipeline_id, &table.id);
        let filter = registry::build_filter(&table.kind, table.rest, &context)?;
        Ok(FilterPlugin {
            id: table.id,
            filter: Arc::from(filter),
        })
    })
}

/// The event stores by id, and each as the first replay source.
fn build_event_stores(tables: Vec<toml::Table>, pipeline_id: &str) -> Result<BuiltStores, KeyError> {
    // Not `type#n`: a `dynamodb` output would have the same id.
    let built = build_each("event_stores", tables, Some("event_store"), |table| {
        let context = PluginContext::new(pipeline_id, &table.id);
        let built = registry::build_event_store(&table.kind, table.rest, &context)?;
        Ok((table.id, built))
    })?;
    Ok(built
        .into_iter()
        .map(|(id, built)| ((id.clone(), built.store), (id, built.replay)))
        .unzip())
}

/// The outputs; those that can read back what they wrote join
/// `replay_sources`.
fn build_outputs(
    tables: Vec<toml::Table>,
    pipeline: &PipelineSection,
    queue: &QueueSection,
    replay_sources: &mut Named<dyn ReplaySource>,
) -> Result<Vec<OutputPlugin>, KeyError> {
    build_each("outputs", tables, None, |mut table| {
        let settings = take_output_settings(&mut table.rest)?;
        let context = PluginContext::new(&pipeline.id, &table.id);
        if let Some(source) = registry::build_replay_source(&table.kind, &table.rest, &context)? {
            if replay_sources.iter().any(|(other, _)| *other == table.id) {
                let message = format!("{:?} is also an event store's id; give each its own", table.id);
                return Err(KeyError::new("id", message));
            }
            replay_sources.push((table.id.clone(), source));
        }
        let output = registry::build_output(&table.kind, table.rest, &context)?;
        let concurrency = settings.concurrency.unwrap_or_else(|| output.default_concurrency());
        let (queue, batch) = output_batching(&settings, concurrency, pipeline, queue)?;
        Ok(OutputPlugin {
            id: table.id,
            health: context.health,
            output: Arc::from(output),
            queue,
            batch,
        })
    })
}

/// An output's own queue and batches: its settings, else the pipeline's;
/// `concurrency` already defaulted by the output.
fn output_batching(
    settings: &OutputSettings,
    concurrency: usize,
    pipeline: &PipelineSection,
    queue: &QueueSection,
) -> Result<(QueueLimits, BatchSettings), KeyError> {
    let max_events = settings.queue_max_events.unwrap_or(queue.max_events);
    let max_bytes = settings.queue_max_bytes.unwrap_or(queue.max_bytes);
    let limits =
        queue_limits(max_events, max_bytes).map_err(|e| KeyError::new(format!("queue_{}", e.key), e.message))?;
    let batch = BatchSettings {
        max_events: settings
            .batch_size
            .unwrap_or(pipeline.batch_size)
            .clamp(1, limits.max_events),
        max_bytes: (settings.batch_bytes.unwrap_or(pipeline.batch_bytes).as_u64() as usize).clamp(1, limits.max_bytes),
        delay: Duration::from_millis(settings.batch_delay_ms.unwrap_or(pipeline.batch_delay_ms)),
        concurrency: concurrency.max(1),
    };
    Ok((limits, batch))
}

/// What inputs may be wired to: the event stores and replay sources by id,
/// and the filters an event store's appends go through.
struct InputWiring<'a> {
    stores: &'a Named<dyn EventStore>,
    replay_sources: &'a Named<dyn ReplaySource>,
    /// `[pipeline] id`, for the filters' metric labels.
    pipeline: &'a str,
    filters: Arc<[FilterPlugin]>,
}

fn build_inputs(
    tables: Vec<toml::Table>,
    pipeline_id: &str,
    wiring: &InputWiring<'_>,
) -> Result<Vec<InputPlugin>, KeyError> {
    build_each("inputs", tables, None, |mut table| {
        let backends = event_store_backends(&mut table.rest, wiring)?;
        let context = PluginContext::new(pipeline_id, &table.id);
        let input = registry::build_input(&table.kind, table.rest, backends)?;
        Ok(InputPlugin {
            id: table.id,
            context,
            input,
        })
    })
}

/// A plugin table split into its `type`, its id and the plugin's own keys.
struct PluginTable {
    kind: String,
    id: String,
    rest: toml::Table,
}

/// Builds each table of a `[[section]]` array, in order; a mistake in one
/// is named under `section[index]`. Without an `id`, a table is
/// `<id_prefix or type>#<index>`.
fn build_each<T>(
    section: &str,
    tables: Vec<toml::Table>,
    id_prefix: Option<&str>,
    mut build: impl FnMut(PluginTable) -> Result<T, KeyError>,
) -> Result<Vec<T>, KeyError> {
    tables
        .into_iter()
        .enumerate()
        .map(|(index, table)| {
            plugin_table(table, index, id_prefix)
                .and_then(&mut build)
                .map_err(|e| e.within(&format!("{section}[{index}]")))
        })
        .collect()
}

/// Splits a plugin table into its `type`, its id and the plugin's own keys.
fn plugin_table(mut table: toml::Table, index: usize, id_prefix: Option<&str>) -> Result<PluginTable, KeyError> {
    let kind = match table.remove("type") {
        Some(toml::Value::String(kind)) => kind,
        Some(_) => return Err(KeyError::new("type", "must be a string")),
        None => return Err(KeyError::new("type", "missing: every plugin table names its `type`")),
    };
    let id = match table.remove("id") {
        Some(toml::Value::String(id)) => id,
        Some(_) => return Err(KeyError::new("id", "must be a string")),
        None => format!("{}#{index}", id_prefix.unwrap_or(&kind)),
    };
    Ok(PluginTable { kind, id, rest: table })
}

/// Takes `event_store` and `replay` out of an input's table and finds the
/// stores they name; `None` when the input names none.
fn event_store_backends(
    rest: &mut toml::Table,
    wiring: &InputWiring<'_>,
) -> Result<Option<EventStoreWiring>, KeyError> {
    let keys = take_keys(rest, &EVENT_STORE_KEYS);
    if keys.is_empty() {
        return Ok(None);
    }
    let settings: EventStoreSettings = value_from_table(keys)?;
    let store = match settings.event_store {
        Some(id) => {
            let store = find(wiring.stores, &id).ok_or_else(|| {
                let known = known_ids(wiring.stores);
                KeyError::new(
                    "event_store",
                    format!("no [[event_stores]] table has id {id:?} (known: {known})"),
                )
            })?;
            Some(
                Arc::new(FilteredEventStore::new(store, wiring.pipeline, wiring.filters.clone()))
                    as Arc<dyn EventStore>,
            )
        }
        None => None,
    };
    let mut replay = Vec::with_capacity(settings.replay.len());
    for (index, id) in settings.replay.into_iter().enumerate() {
        let source = find(wiring.replay_sources, &id).ok_or_else(|| {
            let known = known_ids(wiring.replay_sources);
            KeyError::new(
                format!("replay[{index}]"),
                format!("no event store or output that can replay has id {id:?} (known: {known})"),
            )
        })?;
        replay.push((id, source));
    }
    Ok(Some(EventStoreWiring { store, replay }))
}

fn find<T: ?Sized>(named: &Named<T>, id: &str) -> Option<Arc<T>> {
    named.iter().find(|(name, _)| name == id).map(|(_, item)| item.clone())
}

fn known_ids<T: ?Sized>(named: &Named<T>) -> String {
    if named.is_empty() {
        return "none".to_owned();
    }
    named.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ")
}

/// Deserializes a plugin's table, for the registry.
pub(crate) fn value_from_table<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, KeyError> {
    from_value(toml::Value::Table(table))
}

fn queue_limits(max_events: usize, max_bytes: ByteSize) -> Result<QueueLimits, KeyError> {
    if max_events == 0 || max_events > u32::MAX as usize {
        return Err(KeyError::new(
            "max_events",
            format!("must be between 1 and {}", u32::MAX),
        ));
    }
    if max_bytes.as_u64() < 1024 || max_bytes.as_u64() > MAX_QUEUE_BYTES {
        return Err(KeyError::new(
            "max_bytes",
            format!("must be between 1KiB and {}", ByteSize(MAX_QUEUE_BYTES)),
        ));
    }
    Ok(QueueLimits {
        max_events,
        max_bytes: max_bytes.as_u64() as usize,
    })
}

fn take_output_settings(rest: &mut toml::Table) -> Result<OutputSettings, KeyError> {
    value_from_table(take_keys(rest, &OUTPUT_SETTING_KEYS))
}

/// Moves `keys` out of a plugin's table into a table of their own.
fn take_keys(rest: &mut toml::Table, keys: &[&str]) -> toml::Table {
    let mut taken = toml::Table::new();
    for key in keys {
        if let Some(value) = rest.remove(*key) {
            taken.insert((*key).to_owned(), value);
        }
    }
    taken
}
