//! A filter that fails on purpose, to test what a failing filter costs:
//! `type = "fault"` panics or aborts the process on the event with a given
//! id. Built only with the `fault-injection` feature (the end-to-end tests
//! turn it on), never in a release.

use eventstash_plugin_api::{Event, Filter};
use serde::Deserialize;

/// The plugin's `type` in pipeline files.
pub(crate) const NAME: &str = "fault";

/// What the filter does on its event.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FaultAction {
    /// Panics, as a bug in a filter would.
    Panic,
    /// Aborts the process, as a stack overflow does: nothing can catch it.
    Abort,
}

/// The `[[filters]]` table of the fault filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultFilterConfig {
    /// The id of the event to fail on.
    event_id: String,
    /// What to do on it.
    action: FaultAction,
}

impl FaultFilterConfig {
    pub(crate) fn build(self) -> FaultFilter {
        FaultFilter { config: self }
    }
}

/// The built filter.
pub(crate) struct FaultFilter {
    config: FaultFilterConfig,
}

impl Filter for FaultFilter {
    fn apply(&self, events: &mut [Event]) {
        if events.iter().any(|event| event.id == self.config.event_id) {
            match self.config.action {
                FaultAction::Panic => panic!(
                    "fault filter: panicking on event {:?} as configured",
                    self.config.event_id
                ),
                FaultAction::Abort => std::process::abort(),
            }
        }
    }
}
