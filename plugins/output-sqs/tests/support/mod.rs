//! What the SQS output's integration tests share: the moto server they
//! need, unique queues, output configs, test events, and a client to read
//! the queue back. The fault-injecting proxy is in [`proxy`].
//!
//! The server comes from `EVENTSTASH_TEST_SQS_URL` (moto serves SQS beside
//! DynamoDB), which `tests/run` sets after starting `moto_server`. Without
//! it the tests fail: a test that silently skips in CI proves nothing.

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

pub mod proxy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use bytes::Bytes;
use eventstash_output_sqs::{SqsOutput, SqsOutputConfig};
use eventstash_plugin_api::{Event, Format, PluginContext};
use serde_json::{Value, json};

/// The moto server's URL, or a panic that says how to get one.
pub fn moto_url() -> String {
    match std::env::var("EVENTSTASH_TEST_SQS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "EVENTSTASH_TEST_SQS_URL is not set: these tests need an SQS-protocol server. Run \
             tests/run, or start `.venv/bin/moto_server -H 127.0.0.1 -p 0` and export the URL it prints."
        ),
    }
}

/// A queue name no other test (or earlier run against the same server) uses.
pub fn unique_queue(purpose: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{purpose}-{}-{nanos}-{n}", std::process::id())
}

/// A plain client of the server.
pub fn client(endpoint: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

/// Creates a queue (FIFO if the name ends in `.fifo`) and returns its URL.
pub async fn create_queue(client: &Client, name: &str) -> String {
    let mut request = client.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    request
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

/// An output config for `queue` at `endpoint` with test credentials, fast
/// retries, and `extra` options on top (a JSON object of TOML keys).
pub fn config(endpoint: &str, queue: &str, extra: Value) -> SqsOutputConfig {
    let mut options = json!({
        "queue_url": queue,
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "access_key_id": "test",
        "secret_access_key": "test",
        "retry_initial_backoff_ms": 5,
        "retry_max_backoff_ms": 100,
        "request_timeout_ms": 5000,
    });
    let (Value::Object(options_map), Value::Object(extra)) = (&mut options, extra) else {
        panic!("extra options must be a JSON object");
    };
    options_map.extend(extra);
    serde_json::from_value(options).expect("test config is valid")
}

/// Builds the output as the engine would, for pipeline `tests`.
pub fn output(config: SqsOutputConfig) -> (SqsOutput, PluginContext) {
    let ctx = PluginContext::new("tests", "sqs#0");
    let output = config.build(&ctx).expect("test config builds");
    (output, ctx)
}

/// A JSON event as the gRPC input makes it.
pub fn event(kind: &str, id: &str, data: &str) -> Event {
    Event::new(
        Format::Json,
        Bytes::from(data.to_owned()),
        kind.to_owned(),
        id.to_owned(),
        chrono::Utc::now(),
    )
}

/// Receives (and deletes) every message until the queue has been empty
/// for a moment; returns them by the `id` attribute.
pub async fn drain_queue(client: &Client, url: &str) -> HashMap<String, Message> {
    let mut messages = HashMap::new();
    let mut empty_receives = 0;
    while empty_receives < 2 {
        let output = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let received = output.messages.unwrap_or_default();
        if received.is_empty() {
            empty_receives += 1;
            continue;
        }
        empty_receives = 0;
        let mut deletes = Vec::new();
        for message in received {
            let receipt = message.receipt_handle().expect("receipt");
            deletes.push(
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(deletes.len().to_string())
                    .receipt_handle(receipt)
                    .build()
                    .expect("entry"),
            );
            let id = message.message_attributes().expect("attributes")["id"]
                .string_value()
                .expect("id")
                .to_owned();
            messages.insert(id, message);
        }
        client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(deletes))
            .send()
            .await
            .expect("delete");
    }
    messages
}
