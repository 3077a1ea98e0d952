//! The protobuf filter: turns PROTOBUF payloads into JSON documents using
//! `.proto` files read at run time, so producers can add message types
//! without a rebuild of eventstash.
//!
//! The files matched by the `protos` glob are compiled in-process by protox
//! (no protoc) into one `prost-reflect` descriptor pool. Each event's `kind`
//! names its message; its bytes are decoded and written as JSON in one of
//! two shapes (`json`): what protobufjs' `toJSON()` gave HFXEventStash (the
//! default; well-known types as objects of their fields, see `protobufjs`)
//! or the proto3 canonical JSON mapping — by the direct transcoder
//! (`transcode`) when it covers the message, by prost-reflect otherwise
//! (its message then written by `protobufjs` or by prost-reflect's own
//! serialiser). An event that cannot be decoded, or
//! whose messages nest deeper than `max_depth` (checked by a walk over its
//! bytes first, see `nesting`), is kept with `invalidProto: true`. `reload`
//! (on SIGHUP) compiles the files again and swaps the pool only if they
//! compile.
#![warn(missing_docs, unreachable_pub)]

mod config;
mod decode;
mod filter;
mod nesting;
mod proto_set;
mod protobufjs;
mod transcode;
mod transcode_schema;
mod watch;
mod wire;
mod wire_schema;

pub use config::{JsonNames, JsonShape, ProtobufFilterConfig};
pub use filter::ProtobufFilter;
pub use proto_set::{ProtoSet, ProtoSetError};

/// The plugin's `type` in pipeline files.
pub const NAME: &str = "protobuf";
