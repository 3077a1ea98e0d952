//! End to end: a slow output fills its bounded queue and the producer is
//! slowed down by HTTP/2 flow control; memory stays bounded and nothing is
//! lost.

mod support;

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use support::*;

const EVENTS: usize = 20_000;
const PAYLOAD: usize = 8 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_output_slows_the_producer_and_loses_nothing() {
    // Queues of 100 events; the stdout output writes into a pipe that this
    // test stops reading for a while.
    let mut agent = Agent::start(stdout_pipeline("", "max_events = 100"));
    let stdout = agent.child.stdout.take().unwrap();

    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let payload = format!("\"{}\"", "x".repeat(PAYLOAD));
    let events = tokio_stream::iter(0..EVENTS).map(move |n| {
        counter.fetch_add(1, Ordering::Relaxed);
        json_event("bp-", n, "k", &payload)
    });
    let client = agent.client().await;
    let stream = tokio::spawn(async move { store_stream(&client, events).await });

    // Nobody reads: the producer must be held back, well short of the
    // 160 MB it wants to send.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent_while_stalled = sent.load(Ordering::Relaxed);
    assert!(
        sent_while_stalled < EVENTS / 4,
        "producer was not slowed: {sent_while_stalled} of {EVENTS} events taken while the output was stalled"
    );
    let stalled_rss = agent.peak_rss_kib();

    // Now read everything.
    let reader = std::thread::spawn(move || {
        let mut ids = HashSet::new();
        for line in BufReader::new(stdout).lines() {
            let document: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            ids.insert(document["id"].as_str().unwrap().to_owned());
            if ids.len() == EVENTS {
                break;
            }
        }
        ids
    });
    let response = stream.await.unwrap().expect("stream acknowledged");
    assert!(response);
    let ids = reader.join().unwrap();
    assert_eq!(ids.len(), EVENTS, "every event came out");

    let peak_rss = agent.peak_rss_kib();
    println!("sent while stalled: {sent_while_stalled}; peak RSS stalled {stalled_rss} KiB, overall {peak_rss} KiB");
    // 20,000 events of 8 KiB are 160 MiB; a bounded agent holds a few MiB of them.
    assert!(peak_rss < 64 * 1024, "peak RSS {peak_rss} KiB: memory is not bounded");
}
