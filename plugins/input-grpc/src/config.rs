//! What a `[[inputs]] type = "grpc"` table says, and its checked form.

use std::net::SocketAddr;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::server::GrpcInput;

/// The `[[inputs]]` table of a gRPC input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcInputConfig {
    /// Address to listen on; defaults to HFXEventStash's `GRPC_BIND_ADDRESS`.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Largest accepted `StoreEventRequest`; larger ones end their stream
    /// with `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: ByteSize,
    /// Most events gathered from one stream into one pipeline batch.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
}

/// HFXEventStash's `GRPC_BIND_ADDRESS`, else its default port on every interface.
fn default_bind() -> String {
    std::env::var("GRPC_BIND_ADDRESS")
        .ok()
        .filter(|bind| !bind.is_empty())
        .unwrap_or_else(|| "0.0.0.0:42043".to_owned())
}

fn default_max_message_size() -> ByteSize {
    ByteSize::mib(4)
}

fn default_max_batch_events() -> usize {
    1024
}

/// Why the gRPC input cannot be built or cannot run.
#[derive(Debug, thiserror::Error)]
pub enum GrpcInputError {
    /// `bind` is not `HOST:PORT` with an IP host.
    #[error("`bind` = {bind:?} is not an address like 0.0.0.0:42043: {source}")]
    BadBind {
        /// The configured value.
        bind: String,
        /// The parse error.
        source: std::net::AddrParseError,
    },
    /// `max_message_size` or `max_batch_events` is zero or too large.
    #[error("`{key}` must be between 1 and {max}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The largest allowed value.
        max: u64,
    },
    /// The address cannot be listened on (in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed while running.
    #[error("gRPC server on {addr} failed: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The transport error.
        source: tonic::transport::Error,
    },
}

impl GrpcInputConfig {
    /// Checks the table; does not listen yet.
    pub fn build(self) -> Result<GrpcInput, GrpcInputError> {
        let addr = self.bind.parse().map_err(|source| GrpcInputError::BadBind {
            bind: self.bind.clone(),
            source,
        })?;
        let max_message_size = usize::try_from(self.max_message_size.as_u64())
            .ok()
            .filter(|size| (1..=u32::MAX as usize).contains(size))
            .ok_or(GrpcInputError::OutOfRange {
                key: "max_message_size",
                max: u64::from(u32::MAX),
            })?;
        if !(1..=1_000_000).contains(&self.max_batch_events) {
            return Err(GrpcInputError::OutOfRange {
                key: "max_batch_events",
                max: 1_000_000,
            });
        }
        Ok(GrpcInput {
            addr,
            max_message_size,
            max_batch_events: self.max_batch_events,
        })
    }
}
