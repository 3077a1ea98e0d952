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
#![warn(missing_docs, unreachable_pub)]

mod config;
mod server;
mod service;

pub use config::{GrpcInputConfig, GrpcInputError};
pub use server::GrpcInput;

/// The plugin's `type` in pipeline files.
pub const NAME: &str = "grpc";

/// The generated `hfx.v1` messages, server and client.
pub mod proto {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("hfx.v1");

    /// The encoded descriptors of `hfx/v1/eventstash.proto`, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hfx_v1_descriptor.bin"));
}
