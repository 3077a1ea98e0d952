//! What a `type = "dynamodb"` table in a pipeline file says, and its check.
//!
//! The structs are plain serde data; [`DynamoDbOutputConfig::build`] checks
//! every option and parses every template into the typed form the output
//! runs with, without touching the network, so `eventstash validate` can run
//! it on any machine. Connecting (credentials, region, the table) happens on
//! the first write.

use std::collections::BTreeMap;
use std::time::Duration;

use eventstash_plugin_api::{Backoff, DeadLetterFile, FieldTemplate, PluginContext};
use serde::Deserialize;

use crate::client::{ConnectionOptions, ConnectionSettings, read_ca_file};
use crate::error::DynamoDbOutputError;
use crate::item::{BUILT_IN_ATTRIBUTES, DataFormat, DataSpec, ItemSchema, KeyTemplate};
use crate::sink::{DynamoDbOutput, WriteSettings};

/// The options of the DynamoDB output. (`Debug` is written by hand so that
/// the secret key never reaches a log.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbOutputConfig {
    /// The table's name.
    #[serde(default = "defaults::table")]
    pub table: String,
    /// The AWS region; empty: from the standard chain (`AWS_REGION`, the
    /// profile, instance metadata), else `us-east-1`.
    #[serde(default)]
    pub region: String,
    /// Where to send requests instead of the AWS endpoint (a local DynamoDB,
    /// moto, a VPC endpoint). Empty: `AWS_ENDPOINT_URL_DYNAMODB` or
    /// `AWS_ENDPOINT_URL` if set, else the AWS default.
    #[serde(default)]
    pub endpoint_url: String,
    /// Static credentials, for local servers. Empty: the standard chain
    /// (environment, profile, web identity, ECS, instance metadata), which
    /// is what production deployments should use.
    #[serde(default)]
    pub access_key_id: String,
    /// The secret of `access_key_id`.
    #[serde(default)]
    pub secret_access_key: String,
    /// The session token of temporary static credentials.
    #[serde(default)]
    pub session_token: String,
    /// PEM file of CAs trusted for an `https://` endpoint besides the
    /// system's (a private CA). Empty: the system's only.
    #[serde(default)]
    pub ca_file: String,
    /// The partition key: attribute name and the template of its value.
    #[serde(default = "defaults::partition_key")]
    pub partition_key: KeyConfig,
    /// The sort key: attribute name and the template of its value.
    #[serde(default = "defaults::sort_key")]
    pub sort_key: KeyConfig,
    /// The template of the `Source` attribute (the key of `Source-Index`).
    /// Unset: the authenticated producer of the event (`source` in its
    /// document), else the pipeline's id, so each pipeline is one source.
    #[serde(default)]
    pub source: Option<String>,
    /// More string attributes: name → template, such as
    /// `{ Index = "%{index}" }`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The member of the document stored as `Data`, written as templates
    /// name fields: `[data]` (default, the whole data) or a member of it,
    /// such as `[data][data]` for a gateway message's own `data`. An event
    /// without that member is stored without `Data`.
    #[serde(default = "defaults::data_field")]
    pub data_field: String,
    /// How `Data` is written: `native` (default: maps, lists, numbers,
    /// booleans as DynamoDB types) or `strings`, the SQS → Lambda design's
    /// map: the members of an object, those JavaScript counts as false
    /// (`null`, `""`, `0`, `false`) left out, the others as strings as
    /// JavaScript's `toString()` writes them.
    #[serde(default = "defaults::data_format")]
    pub data_format: String,
    /// Create the table, with `Type-Index` and `Source-Index` and on-demand
    /// billing, if it does not exist.
    #[serde(default)]
    pub create_table: bool,
    /// Where events DynamoDB refuses for good go, one JSON line each with the
    /// reason.
    #[serde(default = "defaults::dead_letter_path")]
    pub dead_letter_path: String,
    /// `BatchWriteItem` requests (25 items each) one write sends at once.
    #[serde(default = "defaults::max_batches_in_flight")]
    pub max_batches_in_flight: usize,
    /// The first wait before a retry; it doubles (with jitter) per attempt.
    #[serde(default = "defaults::retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    /// The longest wait between two attempts.
    #[serde(default = "defaults::retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// How long one request may take before it is abandoned and retried.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
}

impl std::fmt::Debug for DynamoDbOutputConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &str| if secret.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("DynamoDbOutputConfig")
            .field("table", &self.table)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("ca_file", &self.ca_file)
            .field("partition_key", &self.partition_key)
            .field("sort_key", &self.sort_key)
            .field("source", &self.source)
            .field("attributes", &self.attributes)
            .field("create_table", &self.create_table)
            .field("dead_letter_path", &self.dead_letter_path)
            .field("max_batches_in_flight", &self.max_batches_in_flight)
            .field("retry_initial_backoff_ms", &self.retry_initial_backoff_ms)
            .field("retry_max_backoff_ms", &self.retry_max_backoff_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// A key attribute: its name in the table and the template of its value.
/// Key values are strings (`S`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The attribute's name, such as `RequestId`.
    pub name: String,
    /// A field template, such as `%{[data][requestId]}`.
    pub value: String,
}

/// The defaults of the optional keys, in one place.
mod defaults {
    use super::KeyConfig;

    pub(super) fn table() -> String {
        "event".to_owned()
    }

    pub(super) fn data_field() -> String {
        "[data]".to_owned()
    }

    pub(super) fn data_format() -> String {
        "native".to_owned()
    }

    pub(super) fn partition_key() -> KeyConfig {
        KeyConfig {
            name: "RequestId".to_owned(),
            value: "%{id}".to_owned(),
        }
    }

    pub(super) fn sort_key() -> KeyConfig {
        KeyConfig {
            name: "Timestamp".to_owned(),
            value: "%{@timestamp}".to_owned(),
        }
    }

    pub(super) fn dead_letter_path() -> String {
        "data/dead-letters/dynamodb.jsonl".to_owned()
    }

    pub(super) fn max_batches_in_flight() -> usize {
        4
    }

    pub(super) fn retry_initial_backoff_ms() -> u64 {
        100
    }

    pub(super) fn retry_max_backoff_ms() -> u64 {
        30_000
    }

    pub(super) fn request_timeout_ms() -> u64 {
        30_000
    }
}

impl DynamoDbOutputConfig {
    /// Checks the options and builds the output. Does no network I/O: the
    /// client is made and the table checked (or created) on the first write.
    pub fn build(self, ctx: &PluginContext) -> Result<DynamoDbOutput, DynamoDbOutputError> {
        check_table_name(&self.table)?;
        let schema = self.item_schema(ctx)?;
        let connection = self.connection_settings()?;
        let write = self.write_settings()?;
        if self.dead_letter_path.is_empty() {
            return Err(invalid("dead_letter_path", "must not be empty"));
        }
        let dead_letters = DeadLetterFile::new(&self.dead_letter_path, ctx.plugin.clone());
        Ok(DynamoDbOutput::new(connection, schema, write, dead_letters, ctx))
    }

    fn item_schema(&self, ctx: &PluginContext) -> Result<ItemSchema, DynamoDbOutputError> {
        let partition = key_template("partition_key", &self.partition_key)?;
        let sort = key_template("sort_key", &self.sort_key)?;
        if partition.name == sort.name {
            return Err(invalid("sort_key.name", "must differ from `partition_key.name`"));
        }
        let source = match &self.source {
            Some(source) => Some(template("source", source)?),
            None => None,
        };
        let mut attributes = Vec::with_capacity(self.attributes.len());
        for (name, value) in &self.attributes {
            let key = format!("attributes.{name}");
            if name.is_empty() {
                return Err(invalid(key, "names no attribute: use a non-empty name"));
            }
            if BUILT_IN_ATTRIBUTES.contains(&name.as_str()) || *name == partition.name || *name == sort.name {
                return Err(invalid(
                    key,
                    "would overwrite an attribute the output writes itself \
                     (the keys, Id, Type, Source, Data, Plain, Raw, InvalidJson, InvalidProto)",
                ));
            }
            attributes.push((name.clone(), template(&key, value)?));
        }
        let data = DataSpec {
            path: data_path(&self.data_field).ok_or_else(|| {
                invalid(
                    "data_field",
                    "must be `[data]` or a member of it, such as `[data][data]`",
                )
            })?,
            format: match self.data_format.as_str() {
                "native" => DataFormat::Native,
                "strings" => DataFormat::Strings,
                _ => return Err(invalid("data_format", "must be `native` or `strings`")),
            },
        };
        Ok(ItemSchema {
            partition,
            sort,
            source,
            default_source: ctx.pipeline.clone(),
            attributes,
            data,
        })
    }

    pub(crate) fn connection_settings(&self) -> Result<ConnectionSettings, DynamoDbOutputError> {
        let mut settings = ConnectionOptions {
            table: &self.table,
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
            settings.ca_pem = Some(pem);
        }
        Ok(settings)
    }

    fn write_settings(&self) -> Result<WriteSettings, DynamoDbOutputError> {
        if self.max_batches_in_flight == 0 {
            return Err(invalid("max_batches_in_flight", "must be at least 1"));
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
        Ok(WriteSettings {
            batches_in_flight: self.max_batches_in_flight,
            backoff: Backoff::new(
                Duration::from_millis(self.retry_initial_backoff_ms),
                Duration::from_millis(self.retry_max_backoff_ms),
            ),
        })
    }
}

/// DynamoDB's rule for table names: 3 to 255 of `a-z A-Z 0-9 _ - .`.
pub(crate) fn check_table_name(table: &str) -> Result<(), DynamoDbOutputError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !(3..=255).contains(&table.len()) || !table.chars().all(allowed) {
        return Err(invalid(
            "table",
            "must be 3 to 255 characters of letters, digits, `_`, `-` and `.`",
        ));
    }
    Ok(())
}

fn key_template(key: &'static str, config: &KeyConfig) -> Result<KeyTemplate, DynamoDbOutputError> {
    if config.name.is_empty() {
        return Err(invalid(format!("{key}.name"), "must not be empty"));
    }
    Ok(KeyTemplate {
        name: config.name.clone(),
        value: template(&format!("{key}.value"), &config.value)?,
    })
}

/// The path under `data` that `data_field` names: `[data]` → none,
/// `[data][a][b]` → `a`, `b`.
fn data_path(field: &str) -> Option<Vec<String>> {
    let inner = field.strip_prefix('[')?.strip_suffix(']')?;
    let mut segments = inner.split("][");
    if segments.next()? != "data" {
        return None;
    }
    let path: Vec<String> = segments.map(str::to_owned).collect();
    path.iter()
        .all(|segment| !segment.is_empty() && !segment.contains(['[', ']']))
        .then_some(path)
}

fn template(key: &str, text: &str) -> Result<FieldTemplate, DynamoDbOutputError> {
    FieldTemplate::parse(text).map_err(|error| DynamoDbOutputError::Template {
        key: key.to_owned(),
        error,
    })
}

fn invalid(key: impl Into<String>, problem: &'static str) -> DynamoDbOutputError {
    DynamoDbOutputError::InvalidOption {
        key: key.into(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> DynamoDbOutputConfig {
        serde_json::from_str(json).unwrap()
    }

    fn ctx() -> PluginContext {
        PluginContext::new("main", "dynamodb#0")
    }

    #[test]
    fn an_empty_table_builds_with_the_event_table_defaults() {
        let config = parse("{}");
        assert_eq!(config.table, "event");
        assert_eq!(config.partition_key.name, "RequestId");
        assert_eq!(config.partition_key.value, "%{id}");
        assert_eq!(config.sort_key.name, "Timestamp");
        assert_eq!(config.sort_key.value, "%{@timestamp}");
        assert!(!config.create_table);
        assert_eq!(config.max_batches_in_flight, 4);
        assert!(config.build(&ctx()).is_ok());
    }

    #[test]
    fn data_field_names_a_member_of_data_and_data_format_a_known_form() {
        assert_eq!(data_path("[data]"), Some(vec![]));
        assert_eq!(data_path("[data][data]"), Some(vec!["data".to_owned()]));
        assert_eq!(data_path("[data][a][b]"), Some(vec!["a".to_owned(), "b".to_owned()]));
        for bad in ["", "data", "[id]", "[data][]", "[data]x", "%{[data][data]}"] {
            assert_eq!(data_path(bad), None, "{bad}");
        }
        let error = parse(r#"{"data_field": "[kind]"}"#).build(&ctx()).unwrap_err();
        assert!(error.to_string().contains("`data_field`"), "{error}");
        let error = parse(r#"{"data_format": "strngs"}"#).build(&ctx()).unwrap_err();
        assert!(error.to_string().contains("`data_format`"), "{error}");
        assert!(
            parse(r#"{"data_field": "[data][data]", "data_format": "strings"}"#)
                .build(&ctx())
                .is_ok()
        );
    }

    #[test]
    fn a_ca_file_must_hold_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let with_ca = |path: &std::path::Path| parse(&format!(r#"{{"ca_file": {:?}}}"#, path.display().to_string()));
        let missing = with_ca(&path).build(&ctx()).unwrap_err().to_string();
        assert!(
            missing.starts_with("dynamodb option `ca_file` = ") && missing.contains("cannot read it"),
            "{missing}"
        );
        std::fs::write(&path, "no certificate here").unwrap();
        let empty = with_ca(&path).build(&ctx()).unwrap_err().to_string();
        assert!(empty.ends_with("holds no PEM `CERTIFICATE`"), "{empty}");
        // A CA certificate made once with tests/certs/make-test-ca.
        std::fs::write(&path, TEST_CA).unwrap();
        let settings = with_ca(&path).connection_settings().unwrap();
        assert_eq!(settings.ca_pem.as_deref(), Some(TEST_CA.as_bytes()));
    }

    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBnjCCAUWgAwIBAgIUJ3cVWMSB0nQrJNPrrHQNanNp+QkwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSZXZlbnRzdGFzaCB0ZXN0IENBMB4XDTI2MTEyNTIwNDg1NloX
DTI3MTEyNTIwNDg1NlowHTEbMBkGA1UEAwwSZXZlbnRzdGFzaCB0ZXN0IENBMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEVq97uiMikInHRsGZ1r/Zc1dDTzSZG5xe
blae2BYqFb8F6e7dUynEC4WZD4NMGkOvLy2D08ynWl39HesEZyAqM6NjMGEwHQYD
VR0OBBYEFICSfaeR5GuEqpRUF1wKJTDboET1MB8GA1UdIwQYMBaAFICSfaeR5GuE
qpRUF1wKJTDboET1MA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMAoG
CCqGSM49BAMCA0cAMEQCICqresW9cIncKkbElFi0wrzfu/c8KaH5giIaDBlnjhyK
AiA/1+6nvCAbhhgnFM8JjXNP94dIyVcly1GAKVY5qzLGGg==
-----END CERTIFICATE-----
";

    #[test]
    fn a_pipeline_table_reads_as_written() {
        let table = r#"
            table = "events"
            region = "eu-west-1"
            endpoint_url = "http://127.0.0.1:8000"
            create_table = true
            partition_key = { name = "RequestId", value = "%{[data][requestId]}" }
            sort_key = { name = "Timestamp", value = "%{@timestamp}" }
            source = "%{[data][service]}"
            attributes = { Index = "%{index}", Format = "%{format}" }
            dead_letter_path = "data/dead-letters/dynamodb.jsonl"
            max_batches_in_flight = 8
        "#;
        let config: DynamoDbOutputConfig = toml::from_str(table).unwrap();
        assert_eq!(config.partition_key.value, "%{[data][requestId]}");
        assert_eq!(config.attributes.len(), 2);
        let output = config.build(&ctx()).unwrap();
        assert!(format!("{output:?}").contains("eu-west-1"));
    }

    #[test]
    fn the_secret_key_stays_out_of_debug_output() {
        let config = parse(r#"{"access_key_id": "AKIA1", "secret_access_key": "s3cr3t"}"#);
        assert!(!format!("{config:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", config.build(&ctx()).unwrap()).contains("s3cr3t"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = serde_json::from_str::<DynamoDbOutputConfig>(r#"{"tabel": "x"}"#).unwrap_err();
        assert!(error.to_string().contains("tabel"), "{error}");
        let error = serde_json::from_str::<DynamoDbOutputConfig>(
            r#"{"partition_key": {"name": "A", "value": "%{id}", "type": "N"}}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("type"), "{error}");
    }

    #[test]
    fn a_bad_template_names_its_key() {
        let config = parse(r#"{"partition_key": {"name": "RequestId", "value": "%{[data]"}}"#);
        let error = config.build(&ctx()).unwrap_err();
        assert!(error.to_string().contains("`partition_key.value`"), "{error}");
        let config = parse(r#"{"attributes": {"Index": "%{index"}}"#);
        let error = config.build(&ctx()).unwrap_err();
        assert!(error.to_string().contains("`attributes.Index`"), "{error}");
    }

    #[test]
    fn attributes_cannot_overwrite_what_the_output_writes() {
        for name in ["Data", "Id", "RequestId", "Timestamp", ""] {
            let config = parse(&format!(r#"{{"attributes": {{"{name}": "x"}}}}"#));
            let error = config.build(&ctx()).unwrap_err();
            assert!(
                matches!(error, DynamoDbOutputError::InvalidOption { .. }),
                "{name}: {error}"
            );
        }
        assert!(parse(r#"{"attributes": {"Index": "%{index}"}}"#).build(&ctx()).is_ok());
    }

    #[test]
    fn options_with_impossible_values_are_rejected_naming_the_key() {
        let bad = [
            (r#"{"table": "ab"}"#, "table"),
            (r#"{"table": "has space"}"#, "table"),
            (r#"{"endpoint_url": "localhost:8000"}"#, "endpoint_url"),
            (r#"{"access_key_id": "test"}"#, "access_key_id"),
            (r#"{"max_batches_in_flight": 0}"#, "max_batches_in_flight"),
            (r#"{"retry_initial_backoff_ms": 0}"#, "retry_initial_backoff_ms"),
            (
                r#"{"retry_initial_backoff_ms": 500, "retry_max_backoff_ms": 100}"#,
                "retry_max_backoff_ms",
            ),
            (
                r#"{"sort_key": {"name": "RequestId", "value": "%{id}"}}"#,
                "sort_key.name",
            ),
            (r#"{"dead_letter_path": ""}"#, "dead_letter_path"),
        ];
        for (json, key) in bad {
            match parse(json).build(&ctx()) {
                Err(DynamoDbOutputError::InvalidOption { key: named, .. }) => {
                    assert_eq!(named, key, "{json}")
                }
                Err(other) => panic!("{json}: not an invalid option: {other}"),
                Ok(_) => panic!("{json} was accepted"),
            }
        }
    }

    #[test]
    fn empty_strings_mean_the_aws_defaults() {
        let config = parse(r#"{"region": "", "endpoint_url": "", "access_key_id": ""}"#);
        let settings = config.connection_settings().unwrap();
        assert_eq!(settings.region, None);
        assert_eq!(settings.endpoint_url, None);
        assert!(settings.static_credentials.is_none());
    }
}
