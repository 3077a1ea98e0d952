//! Why the gRPC input cannot be built or cannot run.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// A size, count or timeout is outside what the input can work with.
    #[error("`{key}` = {value} is out of range: it must be from {min} to {max}{note}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The configured value.
        value: String,
        /// The smallest allowed value.
        min: String,
        /// The largest allowed value.
        max: String,
        /// What a special value means, if one is allowed (` (0 turns it off)`).
        note: &'static str,
    },
    /// The in-flight budget could never hold one message of the largest size.
    #[error(
        "`max_inflight_bytes` = {inflight} is smaller than one message of `max_message_size` = {message}: \
         raise `max_inflight_bytes` or lower `max_message_size`"
    )]
    BudgetBelowMessage {
        /// The configured budget.
        inflight: String,
        /// The configured largest message.
        message: String,
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
    /// A file named by `tls` cannot be read or holds no usable PEM data.
    #[error("`tls.{key}` = {path}: {reason}")]
    TlsFile {
        /// The key that names the file (`cert_file`, `key_file`, `client_ca_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("`tls`: {cert} with {key}: {reason}")]
    TlsConfig {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The server certificate is outside its validity period now.
    #[error("`tls.cert_file` = {path}: the certificate {problem}: renew it")]
    CertificateNotValidNow {
        /// The certificate file.
        path: PathBuf,
        /// "expired at ..." or "is not valid before ...".
        problem: String,
    },
    /// The tokens file cannot be read or is not a valid list of producers.
    #[error("`auth.tokens_file` = {path}: {reason}")]
    TokensFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the producer and key.
        reason: String,
    },
}
