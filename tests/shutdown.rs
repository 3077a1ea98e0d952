//! End to end: SIGTERM and SIGINT drain in-flight streams within the
//! shutdown timeout while health says NOT_SERVING and new streams are
//! refused; a drain that cannot finish (timeout or a second signal) exits 1
//! and logs, per queue, how many events it lost.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use support::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Starts a producer streaming 2,000 events over about two seconds, signals
/// the agent with `signal` while it runs, and checks the drain: health turns
/// NOT_SERVING (seen on a watch opened before, so a closed port cannot pass
/// for it), a new stream is refused while the old one is still in flight,
/// the old one is acknowledged, every event is stored, exit 0.
async fn signal_drains_the_stream_in_flight(signal: &str) {
    let mut agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let client = agent.client().await;
    let mut watch = HealthClient::new(client.channel())
        .watch(HealthCheckRequest {
            service: "hfx.v1.EventStash".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let producer = client.clone();
    let slow_events = tokio_stream::iter(0..2000).then(|n| async move {
        if n % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        json_event("term-", n, "k", &format!("{{\"n\":{n}}}"))
    });
    let stream = tokio::spawn(async move { store_stream(&producer, slow_events).await });
    // The stream is in flight once its first events are in the file.
    let path = agent.path("events/k.jsonl");
    wait_until("the first events stored", Duration::from_secs(10), || {
        std::fs::read_to_string(&path).is_ok_and(|text| !text.is_empty())
    });
    agent.signal(signal);

    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("health watch said nothing after the signal")
        .unwrap()
        .expect("health watch ended without NOT_SERVING");
    assert_eq!(next.status(), ServingStatus::NotServing);

    // A new stream, on the producer's own client and on a new connection,
    // is refused while the old stream is still being received.
    // Refused by the agent ("shutting down": UNAVAILABLE), for want of a
    // connection once its listener is closed (UNAVAILABLE), or by its HTTP/2
    // layer: the connection's GOAWAY, which the client reports as a
    // transport error (CANCELLED or INTERNAL, "connection closed" or
    // "GoAway"). Below, none of their events was stored.
    let refused = |outcome: &Result<bool, tonic::Status>| match outcome {
        Err(status) if status.code() == tonic::Code::Unavailable => true,
        Err(status) => std::error::Error::source(status)
            .is_some_and(|source| source.downcast_ref::<tonic::transport::Error>().is_some()),
        Ok(_) => false,
    };
    let late = store(&mut client.clone(), vec![json_event("late-", 0, "k", "1")]).await;
    assert!(
        refused(&late),
        "a new stream on an open client was not refused while draining: {late:?}"
    );
    let fresh = match eventstash_client::Client::connect(agent.addr.to_string()).await {
        Ok(mut fresh) => store(&mut fresh, vec![json_event("late-", 1, "k", "1")]).await,
        Err(error) => Err(into_status(error)),
    };
    assert!(
        refused(&fresh),
        "a new connection's stream was not refused while draining: {fresh:?}"
    );
    assert!(
        !stream.is_finished(),
        "the in-flight stream ended before the new streams were tried: the test proves nothing"
    );

    let response = stream
        .await
        .unwrap()
        .expect("the in-flight stream is finished, not cut");
    assert!(response);
    let (status, _) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", agent.log());

    let documents = read_documents(&agent.path("events/k.jsonl"));
    let ids: HashSet<&str> = documents.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2000, "every acknowledged event is in the file");
    assert!(
        !ids.iter().any(|id| id.starts_with("late-")),
        "a refused stream's event was stored"
    );
    assert!(agent.log().contains("drained"), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_stream_finishes_it_refuses_new_ones_and_exits_zero() {
    signal_drains_the_stream_in_flight("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_like_sigterm() {
    signal_drains_the_stream_in_flight("INT").await;
}

#[tokio::test]
async fn sigterm_exits_promptly_even_while_a_frozen_client_keeps_its_connection() {
    let mut agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let mut client = agent.client().await;
    store_ok(&mut client, vec![json_event("idle-", 0, "k", "1")]).await;
    // `wait_exit` blocks this test's only thread: the client's connection
    // stays open and cannot answer the server's GOAWAY, like a frozen client.
    agent.signal("TERM");
    let (status, took) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    assert!(took < Duration::from_secs(5), "an idle drain took {took:?}");
}

/// The file pipeline with two 1 KB-event batches' worth of room, the
/// metrics endpoint on a port of its own, and the drain timeout from
/// `SHUTDOWN_TIMEOUT`.
const HELD_FILE_PIPELINE: &str = r#"
[pipeline]
shutdown_timeout_ms = "${SHUTDOWN_TIMEOUT:15000}"
batch_size = 100

[metrics]
bind = "127.0.0.1:0"

[[inputs]]
type = "grpc"
bind = "127.0.0.1:{port}"

[[outputs]]
type = "file"
path = "events/%{index}.jsonl"
"#;

/// Starts an agent whose file output's syncs are held, sends `events`
/// events in one stream and waits until every one of them is in the
/// pipeline (none can be stored: the first batch waits in its sync).
async fn agent_with_held_output(
    shutdown_timeout_ms: u64,
    events: usize,
) -> (Agent, SyncHold, tokio::task::JoinHandle<Result<bool, tonic::Status>>) {
    let hold = SyncHold::new();
    hold.hold("file-output");
    let mut options = AgentOptions::new(HELD_FILE_PIPELINE);
    options.env.push(hold.env());
    options
        .env
        .push(("SHUTDOWN_TIMEOUT".into(), shutdown_timeout_ms.to_string()));
    let agent = Agent::start(options);
    let mut client = agent.client().await;
    let payload = format!("\"{}\"", "x".repeat(1000));
    let batch: Vec<_> = (0..events).map(|n| json_event("stuck-", n, "k", &payload)).collect();
    let stream = tokio::spawn(async move { store(&mut client, batch).await });
    hold.wait_for_syncs("file-output", 1);
    wait_until("every event in the pipeline", Duration::from_secs(10), || {
        metric_value(&agent.metrics(), "eventstash_events_in_total", &[]) == Some(events as f64)
    });
    (agent, hold, stream)
}

/// The events the log says each queue lost, by queue.
fn lost_per_queue(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter(|line| line.contains("events lost: not yet written"))
        .map(|line| {
            let field = |key: &str| {
                let start = line.find(key).unwrap_or_else(|| panic!("no {key} in {line}")) + key.len();
                line[start..].to_owned()
            };
            let queue = field(" queue=");
            let queue = queue[..queue.find(" events=").unwrap()].to_owned();
            let events = field(" events=");
            let events = events.split_whitespace().next().unwrap().parse().unwrap();
            (queue, events)
        })
        .collect()
}

/// The total of the closing "drain incomplete" line.
fn lost_total(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|line| line.contains("drain incomplete: events in memory queues are lost"))
        .unwrap_or_else(|| panic!("no drain-incomplete line:\n{log}"));
    let start = line.find(" events=").unwrap() + " events=".len();
    line[start..].split_whitespace().next().unwrap().parse().unwrap()
}

/// Checks the lost-event report against the `sent` events, none of which
/// was stored: per queue (the pipeline's and the output's), and in total.
fn assert_lost_counted(log: &str, sent: u64) {
    let per_queue = lost_per_queue(log);
    let queues: Vec<&str> = per_queue.iter().map(|(queue, _)| queue.as_str()).collect();
    assert!(
        queues.contains(&"output file#0"),
        "no count for the output's queue: {per_queue:?}\n{log}"
    );
    assert!(
        per_queue
            .iter()
            .all(|(queue, _)| queue == "pipeline" || queue == "output file#0"),
        "{per_queue:?}"
    );
    let summed: u64 = per_queue.iter().map(|(_, events)| events).sum();
    assert_eq!(
        summed, sent,
        "per-queue counts {per_queue:?} do not add up to the events sent\n{log}"
    );
    assert_eq!(lost_total(log), sent, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_the_timeout_exits_one_and_counts_the_lost_events() {
    let (mut agent, _hold, stream) = agent_with_held_output(1000, 500).await;

    agent.signal("TERM");
    let (status, took) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    assert!(
        took < Duration::from_secs(4),
        "the 1 s timeout was not honoured: {took:?}"
    );
    let log = agent.log();
    assert!(log.contains("shutdown timeout of 1s passed"), "{log}");
    assert_lost_counted(&log, 500);
    // The producer was never told its events were stored.
    assert!(!matches!(stream.await.unwrap(), Ok(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_drain_with_exit_one_and_counts_the_lost_events() {
    // A 60 s timeout: only the second signal can end this drain early.
    let (mut agent, _hold, stream) = agent_with_held_output(60_000, 300).await;

    agent.signal("TERM");
    wait_for_log(&agent, "drain started");
    let started = Instant::now();
    agent.signal("INT");
    let (status, _) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the second signal was not honoured"
    );
    let log = agent.log();
    assert!(log.contains("reason=\"second signal\""), "{log}");
    assert_lost_counted(&log, 300);
    assert!(!matches!(stream.await.unwrap(), Ok(true)));
}
