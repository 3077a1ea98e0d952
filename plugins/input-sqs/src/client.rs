//! The SQS client: region, endpoint and credentials from the options and
//! the standard AWS chain, as the SQS and DynamoDB outputs make theirs.
//!
//! `aws-config` resolves what the options leave empty: the region from
//! `AWS_REGION`, the profile or instance metadata (else the queue URL's
//! region, else `us-east-1`), the endpoint from `AWS_ENDPOINT_URL_SQS` /
//! `AWS_ENDPOINT_URL`, and credentials from the environment, the profile,
//! web identity (EKS service accounts), the ECS container endpoint or
//! instance metadata, refreshed before they expire. The SDK's own retries
//! are off: the pollers retry with the shared backoff, so every attempt
//! shows in the logs.

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{Credentials, Region};
use tracing::error;

/// The region used when neither the options, the chain nor the queue URL
/// name one.
const FALLBACK_REGION: &str = "us-east-1";
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom to connect: the checked connection options.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    /// `None`: the AWS chain, else the queue URL's region, else [`FALLBACK_REGION`].
    pub(crate) region: Option<String>,
    /// The region named by an AWS queue URL, the fallback after the chain.
    pub(crate) url_region: Option<String>,
    /// `None`: the AWS chain's endpoint (environment or the default).
    pub(crate) endpoint_url: Option<String>,
    /// `None`: the AWS credential chain.
    pub(crate) static_credentials: Option<StaticCredentials>,
    /// The most one attempt of a request may take.
    pub(crate) request_timeout: Duration,
    /// PEM certificates of CAs trusted besides the system's (`ca_file`).
    pub(crate) ca_pem: Option<Vec<u8>>,
}

/// Credentials written in the pipeline file.
#[derive(Clone)]
pub(crate) struct StaticCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Builds the client and says where it points (region, endpoint) for the
/// log. Resolving the region may ask instance metadata; no request reaches
/// SQS yet.
pub(crate) async fn connect(settings: &ConnectionSettings) -> (Client, String) {
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
        match eventstash_support_aws::https_client_trusting(pem) {
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
