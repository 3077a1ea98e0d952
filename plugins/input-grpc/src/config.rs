//! What a `[[inputs]] type = "grpc"` table says, and its checked form.
//!
//! Besides the address, the table holds the limits that keep a hostile or
//! broken producer from taking the agent's memory, descriptors or CPU. With
//! them, the memory the input holds for receiving is at most
//!
//! ```text
//! 2 × max_inflight_bytes
//!   + max_connections × (connection_window + 64 KiB
//!                        + max_concurrent_streams × 48 KiB)
//! ```
//!
//! (the budget, counted twice because a decoded event copies its `kind` and
//! `id` out of the received bytes; per connection, the HTTP/2 receive window
//! and the codec's buffers; per stream, its headers, decoder buffer and one
//! frame waiting for the budget). See [`crate::inflight`] and
//! [`crate::connection`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use eventstash_plugin_api::DEFAULT_MAX_JSON_DEPTH;
use serde::Deserialize;

use crate::auth::Authenticator;
use crate::error::GrpcInputError;
use crate::security::Security;
use crate::server::GrpcInput;
use crate::tls::{TlsFiles, TlsServer};

/// The `[[inputs]]` table of a gRPC input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcInputConfig {
    /// Address to listen on; default `0.0.0.0:42043`. The engine's pipeline
    /// files default it to HFXEventStash's `GRPC_BIND_ADDRESS`.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Largest accepted `StoreEventRequest`, in bytes (default 4 MiB);
    /// larger ones end their stream with `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: ByteSize,
    /// Most events gathered from one stream into one pipeline batch
    /// (default 1024).
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// Bytes received from producers and not yet in the pipeline queue,
    /// across every stream and connection (default 64 MiB). A stream whose
    /// next message does not fit waits; it must hold at least one message
    /// of `max_message_size`.
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: ByteSize,
    /// Milliseconds a stream may wait for room in `max_inflight_bytes`, and
    /// that a partly received message may hold its room while its producer
    /// sends nothing (default 10000). Past it the stream ends with
    /// `RESOURCE_EXHAUSTED`, so stalled producers cannot starve the others.
    #[serde(default = "default_inflight_timeout_ms")]
    pub inflight_timeout_ms: u64,
    /// Most client connections open at once (default 256); further clients
    /// wait in the listen backlog until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: most streams one
    /// connection may have open (default 100); clients queue the rest.
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// HTTP/2 receive window of one connection, in bytes (default 2 MiB):
    /// what a producer may send ahead of what the agent has read. Each
    /// stream's window is the smaller of this and 1 MiB.
    #[serde(default = "default_connection_window")]
    pub connection_window: ByteSize,
    /// Milliseconds a new connection has to send the HTTP/2 preface before
    /// it is closed (default 10000).
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Milliseconds a connection may stay open without a stream before it
    /// is closed with GOAWAY (default 300000; 0 keeps idle connections).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Milliseconds between HTTP/2 PINGs the agent sends to find dead peers
    /// (default 60000; 0 sends none).
    #[serde(default = "default_keepalive_interval_ms")]
    pub keepalive_interval_ms: u64,
    /// Milliseconds to wait for a PING's answer before the connection is
    /// closed (default 20000).
    #[serde(default = "default_keepalive_timeout_ms")]
    pub keepalive_timeout_ms: u64,
    /// Deepest nesting of arrays and objects a JSON payload may have to be
    /// stored as `data` (default 256, at most 1000); deeper payloads are
    /// kept as `plain` text flagged `invalidJson`, like broken JSON.
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: usize,
    /// TLS on the port (`tls = { cert_file = "...", key_file = "..." }`);
    /// plain HTTP/2 without it.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Producer tokens (`auth = { tokens_file = "..." }`); without it any
    /// client that can connect may send.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// The `tls` table of a gRPC input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the server's certificate chain, leaf first. It must be
    /// valid now; it is read again on SIGHUP and when it changes.
    pub cert_file: PathBuf,
    /// PEM file of the server's private key.
    pub key_file: PathBuf,
    /// PEM file of the CAs that sign client certificates: with it, clients
    /// must show one (mutual TLS), and its name (subject CN, else first
    /// SAN) names the producer unless a token does.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// The `auth` table of a gRPC input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// TOML file of `[[producers]]` (`name`, `token_sha256`, `kinds`,
    /// `read_kinds`); every request but health checks must carry
    /// `authorization: Bearer <token>` of one of them. Read again on SIGHUP
    /// and when it changes.
    pub tokens_file: PathBuf,
}

/// HFXEventStash's port on every interface. The engine's pipeline files
/// default `bind` to `"${GRPC_BIND_ADDRESS:0.0.0.0:42043}"` before this is
/// consulted, so the environment is read by interpolation only.
fn default_bind() -> String {
    "0.0.0.0:42043".to_owned()
}

fn default_max_message_size() -> ByteSize {
    ByteSize::mib(4)
}

fn default_max_batch_events() -> usize {
    1024
}

fn default_max_inflight_bytes() -> ByteSize {
    ByteSize::mib(64)
}

fn default_inflight_timeout_ms() -> u64 {
    10_000
}

fn default_max_connections() -> usize {
    256
}

fn default_max_concurrent_streams() -> u32 {
    100
}

fn default_connection_window() -> ByteSize {
    ByteSize::mib(2)
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

fn default_idle_timeout_ms() -> u64 {
    300_000
}

fn default_keepalive_interval_ms() -> u64 {
    60_000
}

fn default_max_json_depth() -> usize {
    DEFAULT_MAX_JSON_DEPTH
}

fn default_keepalive_timeout_ms() -> u64 {
    20_000
}

/// The gRPC framing header before every message: a flag and a length.
pub(crate) const GRPC_HEADER_LEN: usize = 5;

/// The largest stream window: enough for one producer to stream at full
/// speed on a LAN; more only buffers more for a stalled stream.
const MAX_STREAM_WINDOW: u32 = 1024 * 1024;

/// The deepest `max_json_depth` accepted: Python's `json` module, a common
/// reader of what the outputs store, gives up at about 1,000 levels.
const MAX_JSON_DEPTH: usize = 1000;

/// Longest timeout accepted: a day.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// The checked limits of one gRPC input.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Largest accepted message, in bytes.
    pub(crate) max_message_size: usize,
    /// Most events in one pipeline batch.
    pub(crate) max_batch_events: usize,
    /// The in-flight budget, in bytes.
    pub(crate) max_inflight_bytes: usize,
    /// Longest wait for the budget, and longest stall while holding it.
    pub(crate) inflight_timeout: Duration,
    /// Most connections open at once.
    pub(crate) max_connections: usize,
    /// Most streams open on one connection.
    pub(crate) max_concurrent_streams: u32,
    /// HTTP/2 receive window of a connection, in bytes.
    pub(crate) connection_window: u32,
    /// HTTP/2 receive window of a stream, in bytes.
    pub(crate) stream_window: u32,
    /// Time to receive the HTTP/2 preface.
    pub(crate) handshake_timeout: Duration,
    /// Time without a stream before a connection is closed; `None`: never.
    pub(crate) idle_timeout: Option<Duration>,
    /// Interval between PINGs; `None`: no PINGs.
    pub(crate) keepalive_interval: Option<Duration>,
    /// Time to wait for a PING's answer.
    pub(crate) keepalive_timeout: Duration,
    /// Deepest nesting of a JSON payload stored as `data`.
    pub(crate) max_json_depth: usize,
}

impl GrpcInputConfig {
    /// Checks the table; does not listen yet.
    pub fn build(self) -> Result<GrpcInput, GrpcInputError> {
        let addr: SocketAddr = self.bind.parse().map_err(|source| GrpcInputError::BadBind {
            bind: self.bind.clone(),
            source,
        })?;
        let max_message_size = bytes_in_range("max_message_size", self.max_message_size, 1, u64::from(u32::MAX))?;
        let max_inflight_bytes = bytes_in_range("max_inflight_bytes", self.max_inflight_bytes, 1024, 1 << 40)?;
        if max_inflight_bytes < max_message_size + GRPC_HEADER_LEN {
            return Err(GrpcInputError::BudgetBelowMessage {
                inflight: self.max_inflight_bytes.to_string(),
                message: self.max_message_size.to_string(),
            });
        }
        let connection_window = bytes_in_range(
            "connection_window",
            self.connection_window,
            64 * 1024,
            u64::from(i32::MAX as u32),
        )? as u32;
        let limits = Limits {
            max_message_size,
            max_batch_events: in_range("max_batch_events", self.max_batch_events, 1, 1_000_000, "")?,
            max_inflight_bytes,
            inflight_timeout: millis("inflight_timeout_ms", self.inflight_timeout_ms, 1)?,
            max_connections: in_range("max_connections", self.max_connections, 1, 1_000_000, "")?,
            max_concurrent_streams: in_range("max_concurrent_streams", self.max_concurrent_streams, 1, 10_000, "")?,
            connection_window,
            stream_window: connection_window.min(MAX_STREAM_WINDOW),
            handshake_timeout: millis("handshake_timeout_ms", self.handshake_timeout_ms, 1)?,
            idle_timeout: optional_millis("idle_timeout_ms", self.idle_timeout_ms)?,
            keepalive_interval: optional_millis("keepalive_interval_ms", self.keepalive_interval_ms)?,
            keepalive_timeout: millis("keepalive_timeout_ms", self.keepalive_timeout_ms, 1)?,
            max_json_depth: in_range("max_json_depth", self.max_json_depth, 1, MAX_JSON_DEPTH, "")?,
        };
        let security = security(self.tls, self.auth)?;
        Ok(GrpcInput {
            addr,
            limits,
            security,
            listener: None,
        })
    }
}

/// Reads the certificate, key and tokens now, so that `validate` and the
/// start report what is wrong with them.
fn security(tls: Option<TlsConfig>, auth: Option<AuthConfig>) -> Result<Security, GrpcInputError> {
    let tls = tls
        .map(|tls| {
            TlsServer::load(TlsFiles {
                cert_file: tls.cert_file,
                key_file: tls.key_file,
                client_ca_file: tls.client_ca_file.filter(|path| !path.as_os_str().is_empty()),
            })
        })
        .transpose()?
        .map(Arc::new);
    let auth = Authenticator::new(auth.map(|auth| auth.tokens_file))?;
    Ok(Security {
        tls,
        auth: Arc::new(auth),
    })
}

impl Limits {
    /// The most a stream of a producer limited to some kinds may hold until
    /// its end: a quarter of the budget, so that such streams rarely wait
    /// on each other, and never less than one message of the largest size.
    pub(crate) fn max_held_stream_bytes(&self) -> usize {
        (self.max_inflight_bytes / 4).max(self.max_message_size + GRPC_HEADER_LEN)
    }
}

#[cfg(test)]
impl Limits {
    /// The defaults, for other modules' tests.
    pub(crate) fn for_tests() -> Limits {
        let config: GrpcInputConfig = toml::from_str("bind = \"127.0.0.1:1\"").unwrap();
        config.build().unwrap().limits
    }
}

fn in_range<T>(key: &'static str, value: T, min: T, max: T, note: &'static str) -> Result<T, GrpcInputError>
where
    T: PartialOrd + ToString,
{
    if min <= value && value <= max {
        return Ok(value);
    }
    Err(GrpcInputError::OutOfRange {
        key,
        value: value.to_string(),
        min: min.to_string(),
        max: max.to_string(),
        note,
    })
}

fn bytes_in_range(key: &'static str, value: ByteSize, min: u64, max: u64) -> Result<usize, GrpcInputError> {
    let checked = in_range(key, value, ByteSize(min), ByteSize(max), "")?;
    usize::try_from(checked.as_u64()).map_err(|_| GrpcInputError::OutOfRange {
        key,
        value: value.to_string(),
        min: ByteSize(min).to_string(),
        max: ByteSize(usize::MAX as u64).to_string(),
        note: "",
    })
}

fn millis(key: &'static str, value: u64, min: u64) -> Result<Duration, GrpcInputError> {
    in_range(key, value, min, MAX_TIMEOUT_MS, " milliseconds").map(Duration::from_millis)
}

/// A timeout where 0 turns the behaviour off.
fn optional_millis(key: &'static str, value: u64) -> Result<Option<Duration>, GrpcInputError> {
    let value = in_range(key, value, 0, MAX_TIMEOUT_MS, " milliseconds (0 turns it off)")?;
    Ok((value > 0).then(|| Duration::from_millis(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<GrpcInputConfig, toml::de::Error> {
        toml::from_str(toml)
    }

    fn error(toml: &str) -> String {
        parse(toml).unwrap().build().unwrap_err().to_string()
    }

    #[test]
    fn defaults_bound_memory_connections_and_idle_time() {
        let input = parse("bind = \"127.0.0.1:1\"").unwrap().build().unwrap();
        let limits = input.limits;
        assert_eq!(limits.max_inflight_bytes, 64 << 20);
        assert_eq!(limits.inflight_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_connections, 256);
        assert_eq!(limits.max_concurrent_streams, 100);
        assert_eq!(limits.connection_window, 2 << 20);
        assert_eq!(limits.stream_window, 1 << 20);
        assert_eq!(limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(limits.keepalive_interval, Some(Duration::from_secs(60)));
        assert_eq!(limits.keepalive_timeout, Duration::from_secs(20));
    }

    #[test]
    fn zero_turns_idle_close_and_pings_off() {
        let toml = "bind = \"127.0.0.1:1\"\nidle_timeout_ms = 0\nkeepalive_interval_ms = 0";
        let limits = parse(toml).unwrap().build().unwrap().limits;
        assert_eq!(limits.idle_timeout, None);
        assert_eq!(limits.keepalive_interval, None);
    }

    #[test]
    fn a_small_connection_window_narrows_the_stream_window() {
        let toml = "bind = \"127.0.0.1:1\"\nconnection_window = \"256KiB\"";
        let limits = parse(toml).unwrap().build().unwrap().limits;
        assert_eq!((limits.connection_window, limits.stream_window), (256 << 10, 256 << 10));
    }

    #[test]
    fn errors_name_the_key_the_value_and_the_range() {
        let message = error("bind = \"127.0.0.1:1\"\nhandshake_timeout_ms = 0");
        assert_eq!(
            message,
            "`handshake_timeout_ms` = 0 is out of range: it must be from 1 to 86400000 milliseconds"
        );
        let message = error("bind = \"127.0.0.1:1\"\nmax_concurrent_streams = 0");
        assert!(
            message.starts_with("`max_concurrent_streams` = 0 is out of range"),
            "{message}"
        );
        let message = error("bind = \"127.0.0.1:1\"\nconnection_window = \"1KiB\"");
        assert!(
            message.starts_with("`connection_window` = 1.0 KiB is out of range"),
            "{message}"
        );
        let message = error("bind = \"127.0.0.1:1\"\nidle_timeout_ms = 99999999999");
        assert!(message.ends_with("(0 turns it off)"), "{message}");
        let message = error("bind = \"127.0.0.1:1\"\nmax_json_depth = 5000");
        assert!(
            message.starts_with("`max_json_depth` = 5000 is out of range"),
            "{message}"
        );
    }

    #[test]
    fn the_budget_must_hold_one_message_of_the_largest_size() {
        let message = error("bind = \"127.0.0.1:1\"\nmax_message_size = \"8MiB\"\nmax_inflight_bytes = \"8MiB\"");
        assert!(
            message.contains("`max_inflight_bytes` = 8.0 MiB is smaller than one message"),
            "{message}"
        );
        let fits = "bind = \"127.0.0.1:1\"\nmax_message_size = \"8MiB\"\nmax_inflight_bytes = \"9MiB\"";
        assert!(parse(fits).unwrap().build().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = parse("bind = \"127.0.0.1:1\"\nmax_inflight = 1").unwrap_err();
        assert!(error.to_string().contains("unknown field `max_inflight`"), "{error}");
    }
}
