//! The gRPC input: serves `hfx.v1.EventStash/StoreEvent`, the HFXEventStash
//! protocol, so existing producers work unchanged, beside the standard
//! `grpc.health.v1.Health` service and server reflection.
//!
//! Each `StoreEvent` stream is read in bursts: whatever messages have already
//! arrived become one [`EventBatch`](eventstash_plugin_api::EventBatch), so
//! events move through the pipeline in groups. While the pipeline queue is
//! full the stream is simply not read, and HTTP/2 flow control pushes back on
//! the producer. The stream's response, `success: true`, is sent only when
//! every output has stored every event of the stream.
//!
//! Producers may be hostile or broken, so everything they can make the agent
//! hold has a limit: connections (`max_connections`), streams per connection
//! (`max_concurrent_streams`), bytes received and not yet queued
//! (`max_inflight_bytes`, [`inflight`]), the time to say hello
//! (`handshake_timeout_ms`) and to stay idle (`idle_timeout_ms`, HTTP/2
//! PINGs). The bound on memory these give is stated in [`config`].
#![warn(missing_docs, unreachable_pub)]

mod auth;
mod config;
mod connection;
mod error;
mod event_store;
mod framing;
mod inflight;
mod listener;
mod open_files;
mod security;
mod server;
mod service;
mod tls;

pub use auth::token_sha256;
pub use config::{AuthConfig, GrpcInputConfig, TlsConfig};
pub use error::GrpcInputError;
pub use event_store::{EventStoreBackends, GrpcInputWithEventStore};
pub use server::GrpcInput;

/// The plugin's `type` in pipeline files.
pub const NAME: &str = "grpc";

/// The generated `hfx.v1` messages, server and client.
pub mod proto {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("hfx.v1");

    /// The encoded descriptors of `hfx/v1/eventstash.proto`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hfx_v1_descriptor.bin"));

    /// The encoded descriptors of `hfx/v1/eventstore.proto` (and its
    /// import), for reflection where the event store is served.
    pub const EVENT_STORE_FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/hfx_v1_eventstore_descriptor.bin"));
}
