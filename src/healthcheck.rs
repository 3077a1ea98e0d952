//! `eventstash healthcheck`: asks a running agent's gRPC health service,
//! as HFXEventStash's healthcheck.js did, for container health checks.

use std::time::Duration;

use tonic::transport::Endpoint;
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

/// Asks the agent at `addr` (`HOST:PORT` or a URI) for its overall status.
pub async fn check(addr: &str, timeout: Duration) -> Result<ServingStatus, HealthcheckError> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|source| HealthcheckError::BadAddress {
        addr: addr.to_owned(),
        source,
    })?;
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
