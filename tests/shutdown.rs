//! End to end: SIGTERM drains in-flight streams within the shutdown timeout,
//! and a drain that cannot finish says how many events it lost.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;
use support::*;

#[tokio::test]
async fn sigterm_during_a_stream_finishes_it_and_exits_zero() {
    let mut agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let client = agent.client().await;
    // A producer that sends 2,000 events over about two seconds.
    let slow_events = tokio_stream::iter(0..2000).then(|n| async move {
        if n % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        json_event("term-", n, "k", &format!("{{\"n\":{n}}}"))
    });
    let stream = tokio::spawn(async move { store_stream(&client, slow_events).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.signal("TERM");

    // New producers are turned away while the old stream finishes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!healthcheck(agent.addr), "health must not say SERVING during the drain");

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
    assert!(agent.log().contains("drained"), "{}", agent.log());
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

#[tokio::test]
async fn a_drain_past_the_timeout_exits_one_and_counts_the_lost_events() {
    // stdout is a pipe this test never reads: the output blocks for good.
    let mut options = stdout_pipeline("shutdown_timeout_ms = \"${SHUTDOWN_TIMEOUT:15000}\"", "");
    options.env.push(("SHUTDOWN_TIMEOUT".into(), "1000".into()));
    let mut agent = Agent::start(options);
    let mut client = agent.client().await;
    let payload = format!("\"{}\"", "x".repeat(1000));
    let events: Vec<_> = (0..500).map(|n| json_event("stuck-", n, "k", &payload)).collect();
    let stream = tokio::spawn(async move { store(&mut client, events).await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    agent.signal("TERM");
    let (status, took) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    assert!(
        took < Duration::from_secs(4),
        "the 1 s timeout was not honoured: {took:?}"
    );
    let log = agent.log();
    assert!(log.contains("events lost"), "{log}");
    assert!(log.contains("drain incomplete"), "{log}");
    // The producer was never told its events were stored.
    assert!(!matches!(stream.await.unwrap(), Ok(true)));
}
