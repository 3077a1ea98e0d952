//! The DynamoDB event store: aggregates and change sets, the AWS design the
//! `hfx.v1.EventStore` service is built on.
//!
//! Two tables (created at start with `create_table`, on-demand billing):
//!
//! | table | key | other attributes |
//! |---|---|---|
//! | aggregates | `AggregateId` | `AggregateType`, `Version` (N), `CreatedAt`, `UpdatedAt` |
//! | change sets | `AggregateId` + `Version` (N) | `AggregateType`, `ChangeSetId`, `Timestamp`, `Events` |
//!
//! and on the change sets the index `AggregateType-Index` (`AggregateType`,
//! `Timestamp`), so every change set of a type can be read in time order.
//! `Events` is a list of maps in the document shape of the other outputs
//! (`index`, `kind`, `format`, `data` as a native map, `id`, `@timestamp`;
//! `plain`, `raw`, `invalidJson`, `invalidProto` for undecodable payloads).
//!
//! An append is one `TransactWriteItems` of three conditional writes (see
//! [`append`]): the aggregate's move from the expected version, the change
//! set's put as the next version, and the put of an idempotency marker
//! keyed by the change set id. Optimistic concurrency comes from DynamoDB's
//! own conditions; there is no lock of ours.

mod append;
mod config;
pub(crate) mod item;
mod read;
pub(crate) mod store;
mod tables;

pub use config::DynamoDbEventStoreConfig;
pub use store::DynamoDbEventStore;

/// The index of change sets by aggregate type and time.
pub(crate) const AGGREGATE_TYPE_INDEX: &str = "AggregateType-Index";
