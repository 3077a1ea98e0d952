//! `eventstash-client`: the Rust client of eventstash.
//!
//! - [`Client`] connects to an agent (TLS, mutual TLS and a producer token
//!   through [`ClientBuilder`]) and [`Client::store`]s events — JSON values,
//!   raw bytes or protobuf messages ([`Event`]) — as one
//!   `hfx.v1.EventStash/StoreEvent` stream, returning once the agent
//!   acknowledged them.
//! - [`BatchingSender`] takes events one by one at high rates and stores
//!   them in batches over several streams, with backpressure and resends.
//! - [`EventStoreClient`] appends to, reads and replays the agent's
//!   `hfx.v1.EventStore`.
//!
//! Failures are one [`Error`]; [`Error::is_resend_safe`] says whether the
//! same events may be sent again (at-least-once: give events ids so that a
//! resend overwrites rather than duplicates).
//!
//! ```no_run
//! # async fn example() -> Result<(), eventstash_client::Error> {
//! use eventstash_client::{Client, Event};
//!
//! let client = Client::connect("127.0.0.1:42043").await?;
//! let event = Event::json("order.Created", &serde_json::json!({"order": 42})).with_id("order-42");
//! client.store([event]).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

mod batching;
mod client;
mod connect;
mod error;
mod event;
mod event_store;
mod retry;

/// The generated `hfx.v1` messages and clients (and, with the `server`
/// feature, servers), for what the typed API does not cover.
#[allow(missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("hfx.v1");
}

pub use batching::{BatchOptions, BatchingSender};
pub use client::{AuthorizedChannel, Client};
pub use connect::{Authorization, ClientBuilder};
pub use error::Error;
pub use event::{Event, Format};
pub use event_store::{Append, EventStoreClient, ExpectedVersion, Messages};
pub use retry::RetryPolicy;
