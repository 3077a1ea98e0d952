//! `eventstash healthcheck`: asks a running agent's gRPC health service,
//! as HFXEventStash's healthcheck.js did, for container health checks.
//!
//! Against a TLS port it needs the CA that signed the agent's certificate
//! (and, for mutual TLS, a client certificate and key). The health service
//! asks for no producer token, so probes need none.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// The address is not a URI.
    #[error("{addr:?} is not an address like 127.0.0.1:42043: {source}")]
    BadAddress {
        /// The address given.
        addr: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// A TLS file cannot be read or used.
    #[error("{what} {path}: {source}")]
    TlsFile {
        /// Which file (`--tls-ca`, `--tls-cert`, `--tls-key`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS settings are not usable.
    #[error("TLS settings for {addr}: {source}")]
    Tls {
        /// The address.
        addr: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// Nothing answers there.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The health service answered with an error.
    #[error("health check of {addr} failed: {source}")]
    Check {
        /// The address.
        addr: String,
        /// The status.
        source: tonic::Status,
    },
}

/// How to reach a TLS port.
#[derive(Debug, Clone, Default)]
pub struct HealthcheckTls {
    /// PEM file of the CA that signed the agent's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The name the agent's certificate must carry; default the address's host.
    pub domain: Option<String>,
}

/// Asks the agent at `addr` (`HOST:PORT` or a URI) for its overall status,
/// over TLS if `tls` is given.
pub async fn check(
    addr: &str,
    timeout: Duration,
    tls: Option<&HealthcheckTls>,
) -> Result<ServingStatus, HealthcheckError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(uri).map_err(|source| HealthcheckError::BadAddress {
        addr: addr.to_owned(),
        source,
    })?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(client_tls(tls)?)
            .map_err(|source| HealthcheckError::Tls {
                addr: addr.to_owned(),
                source,
            })?;
    }
    let channel = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|source| HealthcheckError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(|source| HealthcheckError::Check {
            addr: addr.to_owned(),
            source,
        })?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

/// The client side of TLS: the CA to trust and, for mutual TLS, who we are.
pub fn client_tls(tls: &HealthcheckTls) -> Result<ClientTlsConfig, HealthcheckError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| HealthcheckError::TlsFile {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--tls-ca", &tls.ca_file)?));
    if let Some((cert, key)) = &tls.client {
        config = config.identity(Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?));
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    Ok(config)
}
