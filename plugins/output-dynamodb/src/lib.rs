//! The `dynamodb` output: stores each event as one item of a DynamoDB table,
//! the event table of the AWS design (`RequestId` + `Timestamp` key, `Id`,
//! `Type`, `Source` and `Data` attributes, `Type-Index` and `Source-Index`
//! global secondary indexes).
//!
//! [`DynamoDbOutputConfig`] is the TOML table, checked by
//! [`DynamoDbOutputConfig::build`] without touching the network, so
//! `eventstash validate` runs anywhere. The [`DynamoDbOutput`] it builds
//! connects on its first write (credentials and region from the standard AWS
//! chain), checks or creates the table, then writes every batch with
//! `BatchWriteItem`, 25 items per request and several requests in flight. It
//! retries throttling, unprocessed items and outages without limit and
//! returns only when every event is stored or, if DynamoDB refuses the item
//! itself (too large, invalid), written to the dead-letter file. One refused
//! item never fails the rest of its batch: items that cannot be valid (an
//! empty or oversized key, over 400 KB) are set aside before sending, and a
//! request DynamoDB refuses as invalid (`ValidationException`, say for an
//! empty value of an index key) is sent again item by item, so that only
//! the refused items are dead-lettered (`dead_letter_path`).
//!
//! The crate also holds the DynamoDB side of the event store:
//! [`DynamoDbEventStoreConfig`] builds a [`DynamoDbEventStore`] (aggregates
//! and change sets, appended in one transaction; see [`event_store`]), and
//! both it and the output's table replay stored events in time order
//! through their indexes ([`DynamoDbEventTableReplay`]; see [`replay`]).
#![warn(missing_docs, unreachable_pub)]

mod attribute_json;
mod attribute_value;
mod batch_write;
mod client;
mod config;
mod error;
pub mod event_store;
mod item;
pub mod replay;
mod retry;
mod sink;
mod table;

pub use config::{DynamoDbOutputConfig, KeyConfig};
pub use error::DynamoDbOutputError;
pub use event_store::{DynamoDbEventStore, DynamoDbEventStoreConfig};
pub use replay::DynamoDbEventTableReplay;
pub use sink::DynamoDbOutput;

/// The `type` that selects this output in a pipeline file.
pub const NAME: &str = "dynamodb";
