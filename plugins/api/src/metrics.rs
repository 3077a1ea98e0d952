//! Names and labels of the metrics plugins report, defined once.
//!
//! Plugins record through the `metrics` facade; the engine installs the
//! Prometheus exporter. Every series carries `pipeline` and `plugin` labels.

use metrics::{Counter, counter};

use crate::health::ComponentHealth;

/// Events an output had to send again (throttling, transient errors).
pub const EVENTS_RETRIED: &str = "eventstash_events_retried_total";
/// Events an output rejected for good and wrote to its dead-letter file.
pub const EVENTS_DEAD_LETTERED: &str = "eventstash_events_dead_lettered_total";

/// Who a plugin is, for its logs, metrics, health and dead letters: given
/// to plugins that need it when they are built.
#[derive(Debug, Clone)]
pub struct PluginContext {
    /// `[pipeline] id`.
    pub pipeline: String,
    /// The plugin's id (`type#n` unless the table names one).
    pub plugin: String,
    /// Where the plugin reports failures and recoveries.
    pub health: ComponentHealth,
}

impl PluginContext {
    /// A context with a fresh health cell.
    pub fn new(pipeline: impl Into<String>, plugin: impl Into<String>) -> PluginContext {
        PluginContext {
            pipeline: pipeline.into(),
            plugin: plugin.into(),
            health: ComponentHealth::default(),
        }
    }

    /// The counters an output reports itself.
    pub fn output_metrics(&self) -> OutputMetrics {
        let labels = [("pipeline", self.pipeline.clone()), ("plugin", self.plugin.clone())];
        OutputMetrics {
            retried: counter!(EVENTS_RETRIED, &labels),
            dead_lettered: counter!(EVENTS_DEAD_LETTERED, &labels),
        }
    }
}

/// Counters an output updates; delivered and failed events are counted by
/// the engine.
#[derive(Debug, Clone)]
pub struct OutputMetrics {
    /// Events sent again.
    pub retried: Counter,
    /// Events written to the dead-letter file.
    pub dead_lettered: Counter,
}
