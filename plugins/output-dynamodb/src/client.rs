//! The DynamoDB client: region, endpoint and credentials from the options
//! and the standard AWS chain.
//!
//! `aws-config` resolves what the options leave empty: the region from
//! `AWS_REGION`, the profile or instance metadata (else `us-east-1`), the
//! endpoint from `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL`, and
//! credentials from the environment, the profile (`AWS_PROFILE`), web
//! identity (EKS service accounts), the ECS container endpoint or instance
//! metadata, refreshed before they expire. The SDK's own retries are off:
//! the writer retries with the shared backoff, so every attempt shows in
//! the logs and metrics and none is hidden inside a request.
//!
//! With `ca_file`, HTTPS endpoints are trusted if signed by the system's
//! roots or by a CA of that file (a private CA in front of a local or
//! on-premises endpoint); the SDK's own rustls client does the TLS.

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};
use tracing::{error, info};

/// The region used when neither the options nor the chain name one.
const FALLBACK_REGION: &str = "us-east-1";
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom to connect: the checked connection options.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    pub(crate) table: String,
    /// `None`: the AWS chain, else [`FALLBACK_REGION`].
    pub(crate) region: Option<String>,
    /// `None`: the AWS chain's endpoint (environment or the default).
    pub(crate) endpoint_url: Option<String>,
    /// `None`: the AWS credential chain.
    pub(crate) static_credentials: Option<StaticCredentials>,
    /// The most one attempt of a request may take.
    pub(crate) request_timeout: Duration,
    /// Create the table if it is missing.
    pub(crate) create_table: bool,
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

/// The connection options as a pipeline table writes them, shared by the
/// output and the event store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionOptions<'a> {
    pub(crate) table: &'a str,
    pub(crate) region: &'a str,
    pub(crate) endpoint_url: &'a str,
    pub(crate) access_key_id: &'a str,
    pub(crate) secret_access_key: &'a str,
    pub(crate) session_token: &'a str,
    pub(crate) request_timeout_ms: u64,
    pub(crate) create_table: bool,
}

impl ConnectionOptions<'_> {
    /// Checks the options; an error names the key and the problem.
    pub(crate) fn check(self) -> Result<ConnectionSettings, (&'static str, &'static str)> {
        let url = self.endpoint_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err((
                "endpoint_url",
                "must start with http:// or https:// (or be empty for the AWS default)",
            ));
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            return Err((
                "access_key_id",
                "and `secret_access_key` go together: set both, or neither to use the AWS chain",
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(("request_timeout_ms", "must be at least 1"));
        }
        Ok(ConnectionSettings {
            table: self.table.to_owned(),
            region: non_empty(self.region),
            endpoint_url: non_empty(self.endpoint_url),
            static_credentials: non_empty(self.access_key_id).map(|access_key_id| StaticCredentials {
                access_key_id,
                secret_access_key: self.secret_access_key.to_owned(),
                session_token: non_empty(self.session_token),
            }),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            create_table: self.create_table,
            ca_pem: None,
        })
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Builds the client. Resolving the region may ask instance metadata; no
/// request reaches DynamoDB yet.
pub(crate) async fn connect(settings: &ConnectionSettings, plugin: &str) -> Client {
    let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(Region::from_static(FALLBACK_REGION));
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
            Err(reason) => error!(output = plugin, %reason, "cannot use `ca_file`; trusting the system's CAs only"),
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
    info!(
        output = plugin,
        table = %settings.table,
        region = config.region().map_or("-", |region| region.as_ref()),
        endpoint = config.endpoint_url().unwrap_or("AWS default"),
        "dynamodb output connecting"
    );
    Client::new(&config)
}

pub(crate) use eventstash_support_aws::read_ca_file;
