//! What a `[[event_stores]] type = "dynamodb"` table says, and its check.
//!
//! Plain serde data, checked by [`DynamoDbEventStoreConfig::build`] without
//! touching the network, so `eventstash validate` runs anywhere. The
//! connection options mean what they mean for the DynamoDB output.

use std::time::Duration;

use eventstash_plugin_api::{Backoff, PluginContext};
use serde::Deserialize;

use crate::client::{ConnectionOptions, read_ca_file};
use crate::config::check_table_name;
use crate::error::DynamoDbOutputError;
use crate::event_store::store::{DynamoDbEventStore, RetrySettings, StoreTables};

/// The options of the DynamoDB event store. (`Debug` is written by hand so
/// that the secret key never reaches a log.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbEventStoreConfig {
    /// The aggregates table (partition key `AggregateId`).
    #[serde(default = "defaults::aggregates_table")]
    pub aggregates_table: String,
    /// The change sets table (`AggregateId` + `Version`, index
    /// `AggregateType-Index`).
    #[serde(default = "defaults::change_sets_table")]
    pub change_sets_table: String,
    /// The AWS region; empty: the standard chain, else `us-east-1`.
    #[serde(default)]
    pub region: String,
    /// Where to send requests instead of the AWS endpoint; empty: the
    /// standard chain's (`AWS_ENDPOINT_URL`), else the AWS default.
    #[serde(default)]
    pub endpoint_url: String,
    /// Static credentials, for local servers; empty: the standard chain.
    #[serde(default)]
    pub access_key_id: String,
    /// The secret of `access_key_id`.
    #[serde(default)]
    pub secret_access_key: String,
    /// The session token of temporary static credentials.
    #[serde(default)]
    pub session_token: String,
    /// PEM file of CAs trusted besides the system's, for an HTTPS endpoint
    /// signed by a private CA.
    #[serde(default)]
    pub ca_file: String,
    /// Create both tables (and the index) at start if they are missing.
    #[serde(default)]
    pub create_table: bool,
    /// How long one request may take before it is abandoned and retried.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long an append or a read keeps retrying throttling and outages
    /// before the client gets UNAVAILABLE.
    #[serde(default = "defaults::retry_timeout_ms")]
    pub retry_timeout_ms: u64,
    /// The first wait before a retry; it doubles (with jitter) per attempt.
    #[serde(default = "defaults::retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    /// The longest wait between two attempts.
    #[serde(default = "defaults::retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// How often an append with `expected_version = -1` (any) reads the
    /// version and tries again when another writer got there first.
    #[serde(default = "defaults::any_version_attempts")]
    pub any_version_attempts: u32,
}

impl std::fmt::Debug for DynamoDbEventStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoDbEventStoreConfig")
            .field("aggregates_table", &self.aggregates_table)
            .field("change_sets_table", &self.change_sets_table)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field("ca_file", &self.ca_file)
            .field("create_table", &self.create_table)
            .finish_non_exhaustive()
    }
}

/// The defaults of the optional keys, in one place.
mod defaults {
    pub(super) fn aggregates_table() -> String {
        "aggregates".to_owned()
    }
    pub(super) fn change_sets_table() -> String {
        "change-sets".to_owned()
    }
    pub(super) fn request_timeout_ms() -> u64 {
        5_000
    }
    pub(super) fn retry_timeout_ms() -> u64 {
        20_000
    }
    pub(super) fn retry_initial_backoff_ms() -> u64 {
        20
    }
    pub(super) fn retry_max_backoff_ms() -> u64 {
        2_000
    }
    pub(super) fn any_version_attempts() -> u32 {
        16
    }
}

impl DynamoDbEventStoreConfig {
    /// Checks the options and builds the store; connects to nothing.
    pub fn build(self, ctx: &PluginContext) -> Result<DynamoDbEventStore, DynamoDbOutputError> {
        for (key, table) in [
            ("aggregates_table", &self.aggregates_table),
            ("change_sets_table", &self.change_sets_table),
        ] {
            check_table_name(table)
                .map_err(|_| invalid(key, "must be 3 to 255 characters of letters, digits, `_`, `-` and `.`"))?;
        }
        if self.aggregates_table == self.change_sets_table {
            return Err(invalid("change_sets_table", "must differ from `aggregates_table`"));
        }
        let mut connection = ConnectionOptions {
            table: &self.change_sets_table,
            region: &self.region,
            endpoint_url: &self.endpoint_url,
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            session_token: &self.session_token,
            request_timeout_ms: self.request_timeout_ms,
            create_table: self.create_table,
        }
        .check()
        .map_err(|(key, problem)| invalid(key, problem))?;
        if !self.ca_file.is_empty() {
            let pem = read_ca_file(&self.ca_file).map_err(|reason| DynamoDbOutputError::CaFile {
                path: self.ca_file.clone(),
                reason,
            })?;
            connection.ca_pem = Some(pem);
        }
        if self.retry_timeout_ms == 0 {
            return Err(invalid("retry_timeout_ms", "must be at least 1"));
        }
        if self.retry_initial_backoff_ms == 0 {
            return Err(invalid("retry_initial_backoff_ms", "must be at least 1"));
        }
        if self.retry_max_backoff_ms < self.retry_initial_backoff_ms {
            return Err(invalid(
                "retry_max_backoff_ms",
                "must not be less than `retry_initial_backoff_ms`",
            ));
        }
        if self.any_version_attempts == 0 {
            return Err(invalid("any_version_attempts", "must be at least 1"));
        }
        let retry = RetrySettings {
            backoff: Backoff::new(
                Duration::from_millis(self.retry_initial_backoff_ms),
                Duration::from_millis(self.retry_max_backoff_ms),
            ),
            timeout: Duration::from_millis(self.retry_timeout_ms),
            any_version_attempts: self.any_version_attempts,
        };
        let tables = StoreTables {
            aggregates: self.aggregates_table,
            change_sets: self.change_sets_table,
        };
        Ok(DynamoDbEventStore::new(connection, tables, retry, ctx))
    }
}

fn invalid(key: &str, problem: &'static str) -> DynamoDbOutputError {
    DynamoDbOutputError::InvalidStoreOption {
        key: key.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DynamoDbEventStoreConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn an_empty_table_builds_with_the_defaults() {
        let config = parse("");
        assert_eq!(config.aggregates_table, "aggregates");
        assert_eq!(config.change_sets_table, "change-sets");
        assert!(config.build(&PluginContext::new("main", "store")).is_ok());
    }

    #[test]
    fn impossible_values_name_their_key() {
        for (text, key) in [
            ("aggregates_table = \"a\"", "aggregates_table"),
            ("change_sets_table = \"aggregates\"", "change_sets_table"),
            ("endpoint_url = \"localhost:8000\"", "endpoint_url"),
            ("any_version_attempts = 0", "any_version_attempts"),
            ("retry_timeout_ms = 0", "retry_timeout_ms"),
            ("ca_file = \"/nonexistent/ca.pem\"", "ca_file"),
        ] {
            let error = parse(text).build(&PluginContext::new("main", "store")).unwrap_err();
            assert!(error.to_string().contains(&format!("`{key}`")), "{text}: {error}");
        }
        let unknown = toml::from_str::<DynamoDbEventStoreConfig>("tabel = \"x\"").unwrap_err();
        assert!(unknown.to_string().contains("unknown field `tabel`"), "{unknown}");
    }
}
