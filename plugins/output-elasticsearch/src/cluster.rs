//! The cluster as the output sees it: three requests (bulk, template exists,
//! put template) over the `elasticsearch` crate's transport, with every
//! failure turned into a [`RequestFailure`] that says whether to retry.
//!
//! The transport holds a static pool of the configured nodes and picks the
//! next one for every request, so retries rotate through the hosts.

use eventstash_plugin_api::error_chain;
use std::time::Duration;

use bytes::Bytes;
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::CertificateValidation;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{MultiNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, Url};

use crate::error::ElasticsearchOutputError;
use crate::response::{BulkResponse, FILTER_PATH};
use crate::retry::{RequestFailure, status_kind};

/// How much of an error response body goes into a message.
const MAX_ERROR_BODY: usize = 300;

/// How to reach the cluster, checked by the config.
pub(crate) struct ClusterSettings {
    pub(crate) hosts: Vec<Url>,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) certificates: CertificateValidation,
    pub(crate) gzip: bool,
    pub(crate) timeout: Duration,
}

/// A client for the configured nodes. Cloning the underlying client is
/// cheap; connections are pooled per node.
#[derive(Debug)]
pub(crate) struct Cluster {
    client: Elasticsearch,
    /// The nodes, for messages.
    hosts: String,
}

impl Cluster {
    /// Sets up the HTTP client; connects to nothing.
    pub(crate) fn new(settings: ClusterSettings) -> Result<Cluster, ElasticsearchOutputError> {
        let hosts = settings.hosts.iter().map(Url::as_str).collect::<Vec<_>>().join(", ");
        let pool = MultiNodeConnectionPool::round_robin(settings.hosts, None);
        let mut builder = TransportBuilder::new(pool)
            .cert_validation(settings.certificates)
            .request_body_compression(settings.gzip)
            .timeout(settings.timeout);
        if let Some(credentials) = settings.credentials {
            builder = builder.auth(credentials);
        }
        let transport = builder.build().map_err(|error| ElasticsearchOutputError::Client {
            reason: error.to_string(),
        })?;
        Ok(Cluster {
            client: Elasticsearch::new(transport),
            hosts,
        })
    }

    /// The configured nodes, comma-separated.
    pub(crate) fn hosts(&self) -> &str {
        &self.hosts
    }

    /// Sends a bulk body and reads its per-item results.
    pub(crate) async fn bulk(&self, body: Bytes) -> Result<BulkResponse, RequestFailure> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        let query = [("filter_path", FILTER_PATH)];
        let response = self
            .send(Method::Post, "_bulk", headers, Some(&query[..]), Some(body))
            .await?;
        let url = response.url().clone();
        if !response.status_code().is_success() {
            return Err(status_failure(response).await);
        }
        let bytes = response.bytes().await.map_err(|error| {
            RequestFailure::transient(format!("{url}: reading the response: {}", error_chain(&error)))
        })?;
        serde_json::from_slice(&bytes).map_err(|error| {
            RequestFailure::transient(format!(
                "{url}: unreadable bulk response ({error}): {}",
                excerpt(&bytes)
            ))
        })
    }

    /// True when the template at `path` (`_template/evt`) is installed.
    pub(crate) async fn template_exists(&self, path: &str) -> Result<bool, RequestFailure> {
        let response = self.send(Method::Head, path, HeaderMap::new(), None, None).await?;
        match response.status_code().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(status_failure(response).await),
        }
    }

    /// Installs (or replaces) the template at `path`.
    pub(crate) async fn put_template(&self, path: &str, body: Bytes) -> Result<(), RequestFailure> {
        let response = self.send(Method::Put, path, HeaderMap::new(), None, Some(body)).await?;
        if response.status_code().is_success() {
            Ok(())
        } else {
            Err(status_failure(response).await)
        }
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        query: Option<&[(&str, &str)]>,
        body: Option<Bytes>,
    ) -> Result<Response, RequestFailure> {
        self.client
            .send(method, path, headers, query, body, None)
            .await
            // Connection refused, reset, timed out: all worth another try.
            .map_err(|error| RequestFailure::transient(error_chain(&error)))
    }
}

/// A failure from a response with an unsuccessful status.
pub(crate) async fn status_failure(response: Response) -> RequestFailure {
    let status = response.status_code();
    let url = response.url().clone();
    let body = response.bytes().await.unwrap_or_default();
    RequestFailure {
        kind: status_kind(status.as_u16()),
        message: format!("{url}: {status}: {}", error_summary(&body)),
    }
}

/// `type: reason` from an Elasticsearch error body, or the start of the body.
fn error_summary(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|value| value.get("error"));
    match error {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(error) => {
            let field = |key: &str| error.get(key).and_then(|v| v.as_str()).unwrap_or("");
            format!("{}: {}", field("type"), field("reason"))
        }
        None => excerpt(body),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(MAX_ERROR_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_summarised() {
        let body = br#"{"error":{"type":"illegal_argument_exception","reason":"bad"},"status":400}"#;
        assert_eq!(error_summary(body), "illegal_argument_exception: bad");
        assert_eq!(error_summary(br#"{"error":"plain"}"#), "plain");
        assert_eq!(error_summary(b"<html>502</html>"), "<html>502</html>");
        let long = "é".repeat(400);
        assert!(excerpt(long.as_bytes()).len() <= MAX_ERROR_BODY);
    }
}
