//! What the engine's unit tests share: events to move around.

use bytes::Bytes;
use eventstash_plugin_api::{Event, Format};

/// A JSON event (`{}`, kind `k`) with this id, received now.
pub(crate) fn json_event(id: &str) -> Event {
    Event::new(
        Format::Json,
        Bytes::from_static(b"{}"),
        "k".into(),
        id.into(),
        chrono::Utc::now(),
    )
}

/// `count` JSON events with ids `e0`, `e1`, ...
pub(crate) fn json_events(count: usize) -> Vec<Event> {
    (0..count).map(|i| json_event(&format!("e{i}"))).collect()
}
