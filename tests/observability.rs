//! End to end: `/metrics` counts what happened, health tells the truth, and
//! an outage does not flood the log.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;

/// The file pipeline with a metrics endpoint on a port the system picks
/// (see [`Agent::metrics_addr`]) and outputs declared unhealthy after 300 ms
/// of failures.
fn observed_pipeline(path: &str) -> AgentOptions {
    let config = format!(
        "[pipeline]\nunhealthy_after_ms = 300\n[metrics]\nbind = \"127.0.0.1:0\"\n[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n[[outputs]]\ntype = \"file\"\npath = \"{path}\"\n"
    );
    AgentOptions::new(&config)
}

fn scrape(metrics: SocketAddr) -> String {
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    body
}

fn health(metrics: SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = http_get(metrics, "/health");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /health {body:?}: {e}")),
    )
}

#[tokio::test]
async fn metrics_count_events_in_out_and_invalid_payloads() {
    let options = observed_pipeline("events/%{index}.jsonl");
    let agent = Agent::start(options);
    let metrics = agent.metrics_addr();
    let mut client = agent.client().await;
    let events: Vec<_> = (0..500).map(|n| json_event("m-", n, "k", "{\"ok\":1}")).collect();
    store_ok(&mut client, events).await;
    let bad: Vec<_> = (0..3).map(|n| json_event("bad-", n, "broken.Kind", "{nope")).collect();
    store_ok(&mut client, bad).await;

    let text = scrape(metrics);
    let input = [("pipeline", "main"), ("plugin", "grpc#0")];
    let output = [("pipeline", "main"), ("plugin", "file#0")];
    assert_eq!(
        metric_value(&text, "eventstash_events_in_total", &input),
        Some(503.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "eventstash_events_out_total", &output),
        Some(503.0),
        "{text}"
    );
    let invalid = [("kind", "broken.Kind"), ("reason", "invalidJson")];
    assert_eq!(
        metric_value(&text, "eventstash_invalid_events_total", &invalid),
        Some(3.0),
        "{text}"
    );
    let queue = [("pipeline", "main"), ("queue", "pipeline")];
    assert_eq!(
        metric_value(&text, "eventstash_queue_events", &queue),
        Some(0.0),
        "{text}"
    );
    assert!(metric_value(&text, "eventstash_batch_duration_seconds_count", &output).unwrap() >= 1.0);
    assert!(metric_value(&text, "eventstash_grpc_stream_duration_seconds_count", &input).unwrap() >= 2.0);
    assert_eq!(
        metric_value(&text, "eventstash_grpc_streams_open", &input),
        Some(0.0),
        "{text}"
    );
}

fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_while_an_output_fails_and_back_when_it_recovers() {
    let options = observed_pipeline("out/%{index}.jsonl");
    let agent = Agent::start(options);
    let metrics = agent.metrics_addr();
    assert!(healthcheck(agent.addr));
    let (status, report) = health(metrics);
    assert_eq!((status, report["serving"].as_bool()), (200, Some(true)), "{report}");

    // `out` is a regular file: the output cannot create its directory.
    std::fs::write(agent.path("out"), "blocker").unwrap();
    let mut client = agent.client().await;
    let failed = store(&mut client, vec![json_event("h-", 0, "k", "1")]).await;
    let status = failed.expect_err("a stream whose output failed was acknowledged");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not stored"), "{status:?}");
    wait_until("health is NOT_SERVING", Duration::from_secs(5), || {
        !healthcheck(agent.addr)
    });
    let (status, report) = health(metrics);
    assert_eq!(status, 503);
    assert_eq!(report["outputs"][0]["state"], "failing", "{report}");
    assert!(
        report["outputs"][0]["last_error"].as_str().unwrap().contains("out"),
        "{report}"
    );

    // The disk is fixed: the next write succeeds and health comes back.
    std::fs::remove_file(agent.path("out")).unwrap();
    store_ok(&mut client, vec![json_event("h-", 1, "k", "1")]).await;
    wait_until("health is SERVING again", Duration::from_secs(5), || {
        healthcheck(agent.addr)
    });
    assert_eq!(health(metrics).1["outputs"][0]["state"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_draining_during_shutdown() {
    let mut options = observed_pipeline("events/%{index}.jsonl");
    options.config = options
        .config
        .replace("[pipeline]\n", "[pipeline]\nshutdown_timeout_ms = 10000\n");
    let mut agent = Agent::start(options);
    let metrics = agent.metrics_addr();
    let client = agent.client().await;
    let slow = futures::StreamExt::then(tokio_stream::iter(0..20), |n| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        json_event("d-", n, "k", "1")
    });
    let stream = tokio::spawn(async move { store_stream(&client, slow).await });
    let input = [("pipeline", "main"), ("plugin", "grpc#0")];
    tokio::task::block_in_place(|| {
        wait_until("the stream is open", Duration::from_secs(5), || {
            metric_value(&scrape(metrics), "eventstash_grpc_streams_open", &input) == Some(1.0)
        })
    });
    agent.signal("TERM");
    tokio::task::block_in_place(|| {
        wait_until("/health says draining", Duration::from_secs(5), || {
            health(metrics).1["state"] == "draining"
        })
    });
    let (status, report) = health(metrics);
    assert_eq!(status, 503, "{report}");
    assert!(
        !stream.is_finished(),
        "the drain came after the stream: nothing was observed"
    );
    assert!(stream.await.unwrap().unwrap());
    let (exit, _) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0));
}

/// The driver's error lines for batches it could not store.
fn failure_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("output could not store a batch"))
        .map(str::to_owned)
        .collect()
}

/// The `suppressed=N` count of a throttled log line.
fn held_back(line: &str) -> u64 {
    let at = line.find("suppressed=").unwrap_or_else(|| panic!("no count in {line}"));
    let digits: String = line[at + "suppressed=".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuing_output_outage_logs_one_line_per_interval_with_the_count_held_back() {
    let options = observed_pipeline("out/%{index}.jsonl");
    let agent = Agent::start(options);
    std::fs::write(agent.path("out"), "blocker").unwrap();
    let lines_before = agent.log().lines().count();
    let mut client = agent.client().await;
    let started = Instant::now();
    let mut failures = 0;
    // Fail one-event streams until the output logs its reminder, which the
    // throttle allows 5 s after the first line.
    while failure_lines(&agent.log()).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no second line after {failures} failures:\n{}",
            agent.log()
        );
        let status = store(&mut client, vec![json_event("o-", failures, "k", "1")])
            .await
            .expect_err("a stream the output could not store was acknowledged");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        failures += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let log = agent.log();
    let lines = failure_lines(&log);
    println!("{failures} failed streams in {elapsed:?}; the reminder: {}", lines[1]);
    assert!(failures > 50, "the outage was not exercised: {failures} failures");
    assert!(
        elapsed >= Duration::from_millis(4_500),
        "the reminder came after {elapsed:?}"
    );
    assert_eq!(held_back(&lines[0]), 0, "{}", lines[0]);
    // Every failure between the two lines is counted as held back.
    let held = held_back(&lines[1]);
    assert!(
        held >= 1 && held <= failures as u64 - 2,
        "{held} held back of {failures}: {}",
        lines[1]
    );
    let total = log.lines().count() - lines_before;
    assert!(total <= 10, "{total} log lines for a {elapsed:?} outage:\n{log}");
}

#[tokio::test]
async fn huge_producer_kinds_do_not_blow_up_the_metrics() {
    let options = observed_pipeline("events/all.jsonl");
    let agent = Agent::start(options);
    let metrics = agent.metrics_addr();
    let mut client = agent.client().await;
    for n in 0..20 {
        let kind = format!("{n:03}{}", "k".repeat(256 * 1024));
        store_ok(&mut client, vec![json_event("huge-", n, &kind, "{nope")]).await;
    }
    let text = scrape(metrics);
    assert!(
        text.len() < 64 * 1024,
        "/metrics is {} bytes after 20 events with 256 KiB kinds",
        text.len()
    );
    let label = format!("000{}", "k".repeat(125));
    let invalid = [("kind", label.as_str()), ("reason", "invalidJson")];
    assert_eq!(
        metric_value(&text, "eventstash_invalid_events_total", &invalid),
        Some(1.0)
    );
}
