//! What the SQS input's integration tests share: the moto server they need
//! (`EVENTSTASH_TEST_SQS_URL`, set by `tests/run`; the tests fail without
//! it), unique queues, input configs, a pipeline stand-in whose acks the
//! test settles, and the queue's message counts.

#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use eventstash_input_sqs::{SqsInput, SqsInputConfig};
use eventstash_plugin_api::{
    BoxError, CancellationToken, EventBatch, EventSink, Input, InputContext, PluginContext, SinkError,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

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

/// Creates a queue holding `bodies`, and returns its URL.
pub async fn queue_with(client: &Client, name: &str, bodies: &[String]) -> String {
    let url = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(id, body)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(id.to_string())
                    .message_body(body)
                    .build()
                    .expect("entry")
            })
            .collect();
        let sent = client
            .send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send");
        assert!(sent.failed.is_empty(), "{:?}", sent.failed);
    }
    url
}

/// Gateway messages with ids `{prefix}{n}`.
pub fn gateway_messages(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            json!({"requestId": format!("req-{n}"), "timestamp": "2020-05-01T20:00:00Z", "id": format!("{prefix}{n}"),
                   "type": "MICROSERVICE_REQUEST", "source": "Gateway", "data": {"n": n}})
            .to_string()
        })
        .collect()
}

/// An input config for `queue` at `endpoint` with test credentials, fast
/// retries and short polls, and `extra` options on top.
pub fn config(endpoint: &str, queue: &str, extra: Value) -> SqsInputConfig {
    let mut options = json!({
        "queue_url": queue,
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "access_key_id": "test",
        "secret_access_key": "test",
        "wait_time_seconds": 1,
        "retry_initial_backoff_ms": 5,
        "retry_max_backoff_ms": 200,
        "request_timeout_ms": 5000,
    });
    let (Value::Object(options_map), Value::Object(extra)) = (&mut options, extra) else {
        panic!("extra options must be a JSON object");
    };
    options_map.extend(extra);
    serde_json::from_value(options).expect("test config is valid")
}

/// The pipeline as the input sees it: every batch goes to the test, which
/// settles (or drops) its ack; `blocked` never takes a batch, like a full
/// pipeline queue.
pub struct TestSink {
    batches: Option<mpsc::UnboundedSender<EventBatch>>,
}

#[async_trait]
impl EventSink for TestSink {
    async fn send(&self, batch: EventBatch) -> Result<(), SinkError> {
        match &self.batches {
            Some(batches) => batches.send(batch).map_err(|_| SinkError::Closed),
            None => std::future::pending().await,
        }
    }

    fn max_batch_events(&self) -> usize {
        1000
    }
}

/// A running input and what the test controls it with.
pub struct RunningInput {
    pub batches: mpsc::UnboundedReceiver<EventBatch>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), BoxError>>,
}

/// Builds and runs the input; `blocked` makes its pipeline never take a batch.
pub fn run(config: SqsInputConfig, blocked: bool) -> RunningInput {
    let input: SqsInput = config.build().expect("test config builds");
    let (sender, batches) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let ctx = InputContext {
        context: PluginContext::new("tests", "sqs#0"),
        sink: Box::new(TestSink {
            batches: (!blocked).then_some(sender),
        }),
        shutdown: shutdown.clone(),
        serving: tokio::sync::watch::channel(true).1,
    };
    let task = tokio::spawn(Box::new(input).run(ctx));
    RunningInput {
        batches,
        shutdown,
        task,
    }
}

impl RunningInput {
    /// The next batch the input hands to the pipeline.
    pub async fn next_batch(&mut self) -> EventBatch {
        tokio::time::timeout(Duration::from_secs(20), self.batches.recv())
            .await
            .expect("the input sent no batch for 20 s")
            .expect("the input stopped")
    }

    /// Receives batches until they hold `events` events in all.
    pub async fn take_events(&mut self, events: usize) -> Vec<EventBatch> {
        let mut batches = Vec::new();
        let mut seen = 0;
        while seen < events {
            let batch = self.next_batch().await;
            seen += batch.events.len();
            batches.push(batch);
        }
        assert_eq!(seen, events, "more events than expected");
        batches
    }
}

/// The queue's visible and in-flight message counts.
pub async fn counts(client: &Client, url: &str) -> (usize, usize) {
    let attributes = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("attributes")
        .attributes
        .expect("attributes");
    let count = |name| attributes[&name].parse::<usize>().expect("a count");
    (
        count(QueueAttributeName::ApproximateNumberOfMessages),
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Waits until the queue's counts are `expected`.
pub async fn wait_for_counts(client: &Client, url: &str, expected: (usize, usize), limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = counts(client, url).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue counts stayed {now:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
