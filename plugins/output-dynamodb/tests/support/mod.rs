//! What the DynamoDB output's integration tests share: the moto server they
//! need, unique tables, output configs, test events, and a client to read
//! the table back. The fault-injecting proxy is in [`proxy`].
//!
//! The server comes from `EVENTSTASH_TEST_DYNAMODB_URL`, which `tests/run`
//! sets after starting `moto_server`. Without it the tests fail: a test that
//! silently skips in CI proves nothing.

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

pub mod proxy;

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use bytes::Bytes;
use eventstash_output_dynamodb::{DynamoDbOutput, DynamoDbOutputConfig};
use eventstash_plugin_api::{Event, Format, PluginContext};
use serde_json::{Value, json};

/// The moto server's URL, or a panic that says how to get one.
pub fn moto_url() -> String {
    match std::env::var("EVENTSTASH_TEST_DYNAMODB_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "EVENTSTASH_TEST_DYNAMODB_URL is not set: these tests need a DynamoDB-protocol \
             server. Run tests/run, or start `.venv/bin/moto_server -H 127.0.0.1 -p 0` and \
             export the URL it prints."
        ),
    }
}

/// A table name no other test (or earlier run against the same server) uses.
pub fn unique_table(purpose: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{purpose}-{}-{nanos}-{n}", std::process::id())
}

/// An output config for `table` at `endpoint` with test credentials, fast
/// retries, and `extra` options on top (a JSON object of TOML keys).
pub fn config(endpoint: &str, table: &str, extra: Value) -> DynamoDbOutputConfig {
    let mut options = json!({
        "table": table,
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "access_key_id": "test",
        "secret_access_key": "test",
        "retry_initial_backoff_ms": 5,
        "retry_max_backoff_ms": 100,
    });
    let (Value::Object(options_map), Value::Object(extra)) = (&mut options, extra) else {
        panic!("extra options must be a JSON object");
    };
    options_map.extend(extra);
    serde_json::from_value(options).expect("test config is valid")
}

/// Builds the output as the engine would, for pipeline `tests`.
pub fn output(config: DynamoDbOutputConfig) -> DynamoDbOutput {
    config
        .build(&PluginContext::new("tests", "dynamodb#0"))
        .expect("test config builds")
}

/// A JSON event as the gRPC input makes it.
pub fn event(kind: &str, id: &str, data: &Value) -> Event {
    event_text(kind, id, &data.to_string())
}

/// A JSON event from the payload's text, as the producer sent it.
pub fn event_text(kind: &str, id: &str, data: &str) -> Event {
    Event::new(
        Format::Json,
        Bytes::from(data.to_owned()),
        kind.to_owned(),
        id.to_owned(),
        chrono::Utc::now(),
    )
}

/// A plain client of the server, for reading back what the output wrote.
pub fn client(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

/// How many items the table holds.
pub async fn count_items(client: &Client, table: &str) -> usize {
    let mut count = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .select(Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        count += page.count() as usize;
        start = page.last_evaluated_key;
        if start.is_none() {
            return count;
        }
    }
}

/// How many items an index holds under `key_value` of its partition key
/// `key_name`, following pages.
pub async fn count_in_index(client: &Client, table: &str, index: &str, key_name: &str, key_value: &str) -> usize {
    let mut count = 0;
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .index_name(index)
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", key_name)
            .expression_attribute_values(":v", AttributeValue::S(key_value.to_owned()))
            .select(Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("query");
        count += page.count() as usize;
        start = page.last_evaluated_key;
        if start.is_none() {
            return count;
        }
    }
}
