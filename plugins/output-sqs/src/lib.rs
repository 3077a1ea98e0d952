//! The `sqs` output: sends each event as one Amazon SQS message, so that
//! stateless front agents (gRPC → SQS) can hand events to any number of
//! store agents (SQS → Elasticsearch, DynamoDB, files).
//!
//! [`SqsOutputConfig`] is the TOML table, checked by
//! [`SqsOutputConfig::build`] without touching the network, so `eventstash
//! validate` runs anywhere. The [`SqsOutput`] it builds connects on its
//! first write (credentials and region from the standard AWS chain, as the
//! DynamoDB output), finds the queue, then sends every batch with
//! `SendMessageBatch`: up to 10 messages per request, bounded by the queue's
//! message size limit, several requests in flight. The message body is the
//! event's document (the JSON line the file output writes), with `kind`,
//! `format` and `id` as message attributes, so the SQS input rebuilds the
//! same event. Throttling, outages and entries SQS fails are retried without
//! limit; an event too large for a message goes to the dead-letter file. A
//! write returns only once every event is in SQS or in that file.
#![warn(missing_docs, unreachable_pub)]

mod config;
mod error;
mod message;
mod send_batch;
mod sink;

use eventstash_support_aws::sqs::{client, queue, retry};

pub use config::SqsOutputConfig;
pub use error::SqsOutputError;
pub use sink::SqsOutput;

/// The `type` that selects this output in a pipeline file.
pub const NAME: &str = "sqs";
