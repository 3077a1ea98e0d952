//! What the integration tests share: the server they need, events, an
//! output built the way the engine builds it, and a direct client to check
//! what the server stored.
//!
//! They need a real server with the Elasticsearch API: osmem-server, whose
//! URL `tests/run` exports as `EVENTSTASH_TEST_ELASTICSEARCH_URL`. Without it
//! they fail, not skip, so CI cannot pass without running them.
// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

pub mod fault_proxy;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use elasticsearch::Elasticsearch;
use elasticsearch::http::Method;
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::Transport;
use eventstash_output_elasticsearch::{ElasticsearchOutput, ElasticsearchOutputConfig};
use eventstash_plugin_api::{Event, Format, Output, OutputBatch, PluginContext};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The variable naming the test server.
pub const URL_VARIABLE: &str = "EVENTSTASH_TEST_ELASTICSEARCH_URL";

/// The test server's URL.
pub fn server_url() -> String {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{URL_VARIABLE} is not set: these tests need osmem-server. Run them with tests/run, \
             or start one with `$(.venv/bin/python -c 'import osmem_server; \
             print(osmem_server.resolve_binary())') -addr 127.0.0.1:0 -no-stdin-watch` \
             and export the url it prints"
        ),
    }
}

/// A lowercase name no other test (or earlier run against the same
/// server) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = Utc::now().timestamp_subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{nanos}x{n}", std::process::id())
}

/// 2021-01-01: ISO week 53 of 2020, so its index ends in `2020-01-53`.
pub fn new_year_2021() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2021, 1, 1, 10, 0, 0).unwrap()
}

/// `count` JSON events of `kind` with ids `<prefix>-<n>` received at `at`.
pub fn events(kind: &str, id_prefix: &str, count: usize, at: DateTime<Utc>) -> Vec<Event> {
    (0..count)
        .map(|n| {
            let data = Bytes::from(format!(r#"{{"n":{n},"text":"event number {n}"}}"#));
            Event::new(Format::Json, data, kind.into(), format!("{id_prefix}-{n}"), at)
        })
        .collect()
}

/// An output under test with its dead-letter file in a temporary directory.
pub struct TestOutput {
    pub output: ElasticsearchOutput,
    pub dead_letter_path: PathBuf,
    _dir: TempDir,
}

/// Builds an output for `hosts` from the test defaults (quick retries, a
/// private dead-letter file) and `options`, which override them.
pub fn output(hosts: &[&str], options: Value) -> TestOutput {
    let dir = tempfile::tempdir().unwrap();
    let dead_letter_path = dir.path().join("dead_letter.jsonl");
    let mut table = json!({
        "hosts": hosts,
        "retry_initial_backoff_ms": 20,
        "retry_max_backoff_ms": 500,
        "request_timeout_ms": 10_000,
        "dead_letter_path": dead_letter_path,
    });
    for (key, value) in options.as_object().expect("options are a JSON object") {
        table[key] = value.clone();
    }
    let config: ElasticsearchOutputConfig = serde_json::from_value(table).unwrap();
    let ctx = PluginContext::new("test", "elasticsearch#0");
    TestOutput {
        output: config.build(&ctx).unwrap(),
        dead_letter_path,
        _dir: dir,
    }
}

/// Writes `events` through `Output::write` in batches of `batch_size`, as
/// the engine's driver does.
pub async fn write_all(output: &ElasticsearchOutput, events: Vec<Event>, batch_size: usize) {
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let batch: Vec<Event> = events.by_ref().take(batch_size).collect();
        output.write(OutputBatch::from(batch)).await.expect("write failed");
    }
}

/// The dead-letter file's lines, or none when it was never created.
pub fn dead_letters(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(|line| serde_json::from_str(line).unwrap()).collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("cannot read {}: {error}", path.display()),
    }
}

/// Writes a template file into `dir` and returns its path.
pub fn template_file(dir: &Path, template: &Value) -> PathBuf {
    let path = dir.join("template.json");
    std::fs::write(&path, serde_json::to_vec_pretty(template).unwrap()).unwrap();
    path
}

/// A direct client of the test server, to check what it stored.
pub struct Server {
    client: Elasticsearch,
}

impl Server {
    pub fn connect() -> Server {
        let transport = Transport::single_node(&server_url()).unwrap();
        Server {
            client: Elasticsearch::new(transport),
        }
    }

    /// Status and JSON body of a request.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|value| Bytes::from(value.to_string()));
        let response = self
            .client
            .send(method, path, HeaderMap::new(), None::<&()>, body, None)
            .await
            .unwrap_or_else(|e| panic!("{method:?} {path}: {e}"));
        let status = response.status_code().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// How many documents `index` (a name or pattern) holds.
    pub async fn count(&self, index: &str) -> u64 {
        let (status, body) = self.request(Method::Get, &format!("{index}/_count"), None).await;
        assert_eq!(status, 200, "count of {index}: {body}");
        body["count"].as_u64().unwrap()
    }

    /// The stored document `id` of `index`, if any.
    pub async fn document(&self, index: &str, id: &str) -> Option<Value> {
        let (status, body) = self.request(Method::Get, &format!("{index}/_doc/{id}"), None).await;
        (status == 200).then(|| body["_source"].clone())
    }
}

/// Checks the proxy's per-id counts for `ids`: each item reached the server
/// exactly once, and was sent again only after a failure (throttled, a 5xx
/// item, a whole request failed); returns how many sends were such resends.
pub fn assert_stored_once_and_resent_only_after_failures(
    items: &std::collections::HashMap<String, fault_proxy::ItemCounts>,
    ids: impl IntoIterator<Item = String>,
) -> usize {
    let mut resent = 0;
    for id in ids {
        let counts = items.get(&id).unwrap_or_else(|| panic!("{id} never reached the proxy"));
        assert_eq!(counts.forwarded, 1, "{id} reached the server {counts:?}");
        assert_eq!(counts.refused, 0, "{id}: {counts:?}");
        assert_eq!(
            counts.received,
            1 + counts.throttled + counts.in_failed_requests,
            "{id}: {counts:?}"
        );
        resent += counts.received - 1;
    }
    resent
}
