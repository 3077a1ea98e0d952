//! The `sqs` output: sends events as Amazon SQS messages, so that
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
//!
//! With `codec = "packed"` (see `packed.rs`) a message holds as many
//! documents as fit in `packed_bytes`, which is what keeps the SQS bill and
//! the round trips per event small between eventstash agents.
#![warn(missing_docs, unreachable_pub)]

mod config;
mod error;
mod message;
mod packed;
mod send_batch;
mod sink;

use eventstash_support_aws::sqs::{client, metrics, queue, retry};

pub use config::{MessageCodec, PackedCompression, SqsOutputConfig};
pub use error::SqsOutputError;
pub use sink::SqsOutput;

/// The `type` that selects this output in a pipeline file.
pub const NAME: &str = "sqs";
