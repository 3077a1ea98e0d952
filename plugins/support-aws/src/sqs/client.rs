//! The SQS client: region, endpoint and credentials from the options and
//! the standard AWS chain, as the DynamoDB output makes its client; shared
//! by the SQS input and output.
//!
//! `aws-config` resolves what the options leave empty: the region from
//! `AWS_REGION`, the profile or instance metadata (else the queue URL's
//! region, else `us-east-1`), the endpoint from `AWS_ENDPOINT_URL_SQS` /
//! `AWS_ENDPOINT_URL`, and credentials from the environment, the profile,
//! web identity (EKS service accounts), the ECS container endpoint or
//! instance metadata, refreshed before they expire. The SDK's own retries
//! are off: the input's pollers and the output's sender retry with the
//! shared backoff, so every attempt shows in the logs and metrics.

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{Credentials, Region};
use tracing::error;

use super::queue::QueueRef;

/// The region used when neither the options, the chain nor the queue URL
/// name one.
const FALLBACK_REGION: &str = "us-east-1";
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom to connect: the checked connection options.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// `None`: the AWS chain, else the queue URL's region, else [`FALLBACK_REGION`].
    pub region: Option<String>,
    /// The region named by an AWS queue URL, the fallback after the chain.
    pub url_region: Option<String>,
    /// `None`: the AWS chain's endpoint (environment or the default).
    pub endpoint_url: Option<String>,
    /// `None`: the AWS credential chain.
    pub static_credentials: Option<StaticCredentials>,
    /// The most one attempt of a request may take.
    pub request_timeout: Duration,
    /// PEM certificates of CAs trusted besides the system's (`ca_file`).
    pub ca_pem: Option<Vec<u8>>,
}

/// Credentials written in the pipeline file.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The connection options as an `sqs` table writes them.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionOptions<'a> {
    pub region: &'a str,
    pub endpoint_url: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: &'a str,
    pub ca_file: &'a str,
    pub request_timeout_ms: u64,
}

/// What is wrong with the connection options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionProblem {
    /// The option `key` cannot be used: `problem`.
    Invalid { key: &'static str, problem: &'static str },
    /// `ca_file` cannot be read or holds no PEM certificate.
    CaFile { path: String, reason: String },
}

impl ConnectionOptions<'_> {
    /// Checks the options (and reads `ca_file`) for the client of `queue`.
    pub fn check(self, queue: &QueueRef) -> Result<ConnectionSettings, OptionProblem> {
        let invalid = |key, problem| Err(OptionProblem::Invalid { key, problem });
        let url = self.endpoint_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return invalid(
                "endpoint_url",
                "must start with http:// or https:// (or be empty for the AWS default)",
            );
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            return invalid(
                "access_key_id",
                "and `secret_access_key` go together: set both, or neither to use the AWS chain",
            );
        }
        if self.request_timeout_ms == 0 {
            return invalid("request_timeout_ms", "must be at least 1");
        }
        let ca_pem = match self.ca_file {
            "" => None,
            path => Some(crate::read_ca_file(path).map_err(|reason| OptionProblem::CaFile {
                path: path.to_owned(),
                reason,
            })?),
        };
        Ok(ConnectionSettings {
            region: non_empty(self.region),
            url_region: queue.url_region(),
            endpoint_url: non_empty(self.endpoint_url),
            static_credentials: non_empty(self.access_key_id).map(|access_key_id| StaticCredentials {
                access_key_id,
                secret_access_key: self.secret_access_key.to_owned(),
                session_token: non_empty(self.session_token),
            }),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            ca_pem,
        })
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Builds the client and says where it points (region, endpoint) for the
/// log. Resolving the region may ask instance metadata; no request reaches
/// SQS yet.
pub async fn connect(settings: &ConnectionSettings) -> (Client, String) {
    let fallback = settings
        .url_region
        .clone()
        .map_or_else(|| Region::from_static(FALLBACK_REGION), Region::new);
    let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(fallback);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(settings.request_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(pem) = &settings.ca_pem {
        match crate::https_client_trusting(pem) {
            Ok(client) => loader = loader.http_client(client),
            Err(reason) => error!(%reason, "cannot use `ca_file`; trusting the system's CAs only"),
        }
    }
    if let Some(credentials) = &settings.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            &credentials.access_key_id,
            &credentials.secret_access_key,
            credentials.session_token.clone(),
            None,
            "eventstash-pipeline-file",
        ));
    }
    let config = loader.load().await;
    let place = format!(
        "region {}, endpoint {}",
        config.region().map_or("-", |region| region.as_ref()),
        config.endpoint_url().unwrap_or("AWS default")
    );
    (Client::new(&config), place)
}
