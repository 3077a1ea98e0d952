//! The `sqs` input: receives Amazon SQS messages and turns each into an
//! event, so that any number of store agents (SQS → Elasticsearch,
//! DynamoDB, files) can share the work of stateless front agents.
//!
//! Several pollers per agent long-poll the queue (`ReceiveMessage`, up to
//! 10 messages, 20 s wait) and send each receive as one
//! [`EventBatch`](eventstash_plugin_api::EventBatch) with its own ack
//! group. A message is deleted (`DeleteMessageBatch`) only once every
//! output has stored its event; until then its visibility timeout is
//! extended, so no other agent is handed it, and on failure it is left to
//! come back. A full pipeline queue stops the pollers, and at most
//! `max_in_flight_messages` messages are held at once, so memory stays
//! bounded. On shutdown the pollers stop receiving, what is in flight is
//! stored and deleted, and what cannot be stored is made visible again at
//! once for another agent.
//!
//! See `decode.rs` for the message shapes understood: documents of the SQS
//! output (the same event again), gateway messages of the SQS → Lambda →
//! DynamoDB design, and anything else, kept and flagged; and `unpack.rs`
//! for packed messages (many documents in one, named by the `codec`
//! attribute), which may share the queue with the others. A packed message
//! is deleted, like any other, once every output has stored (or
//! dead-lettered) every one of its events.
#![warn(missing_docs, unreachable_pub)]

mod config;
mod decode;
mod error;
mod input;
mod poller;
mod settle;
mod unpack;

use eventstash_support_aws::sqs::{client, metrics, queue, retry};

pub use config::SqsInputConfig;
pub use error::SqsInputError;
pub use input::SqsInput;

/// The `type` that selects this input in a pipeline file.
pub const NAME: &str = "sqs";
