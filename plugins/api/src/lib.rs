//! The small crate every eventstash plugin depends on, and nothing else.
//!
//! It holds the primitives that flow between the engine and the plugins: the
//! [`Event`] and the JSON document it becomes, the batches that move through
//! the queues ([`EventBatch`] in, [`OutputBatch`] out), the [`AckHandle`] that
//! tells a producer when its events are safe, the [`Input`], [`Filter`] and
//! [`Output`] traits, and [`FieldTemplate`], the one renderer of `%{field}` and
//! date patterns. The event store adds two small traits the engine wires
//! together: [`EventStore`] (append a change set at an expected version, read
//! an aggregate back) and [`ReplaySource`] (stored events back in time order,
//! page by page, resumable by cursor). Like `tracing-core`, it changes rarely
//! so that plugins can rely on it alone.
#![warn(missing_docs, unreachable_pub)]

mod ack;
mod batch;
mod dead_letter;
mod document;
mod document_writer;
mod event;
mod event_store;
mod health;
mod json_text;
mod kebab;
pub mod metrics;
mod outage;
mod plugin;
mod replay;
mod retry;
pub mod sync_hold;
mod template;

pub use ack::{AckError, AckHandle, AckWait, ack_group};
pub use batch::{EventBatch, OutputBatch};
pub use dead_letter::{DeadLetterError, DeadLetterFile};
pub use document::{DocumentError, StoredPayload, parse_timestamp};
pub use document_writer::DocumentWriter;
pub use event::{Event, Format, Payload};
pub use event_store::{
    Aggregate, Appended, ChangeSet, ChangeSetPage, EventStore, EventStoreError, ExpectedVersion, MAX_VERSION,
    NewChangeSet,
};
pub use health::{ComponentHealth, HealthSnapshot, LogThrottle};
pub use json_text::DEFAULT_MAX_JSON_DEPTH;
pub use kebab::kebab_case;
pub use metrics::{OutputMetrics, PluginContext};
pub use outage::{OutageLine, OutageReport};
pub use plugin::{BoxError, EventSink, Filter, Input, InputContext, Output, SinkError, WriteFuture, error_chain};
pub use replay::{
    ChangeSetRef, DEFAULT_REPLAY_PAGE, MAX_REPLAY_PAGE, ReplayCursor, ReplayError, ReplayQuery, ReplayReader,
    ReplaySelector, ReplaySource, ReplayedEvent,
};
pub use retry::Backoff;
pub use template::{FieldTemplate, TemplateError, path_segment_escape};

/// Re-exported so that plugins name the same cancellation type as the engine.
pub use tokio_util::sync::CancellationToken;
