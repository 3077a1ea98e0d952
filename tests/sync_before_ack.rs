//! End to end, with the test-only sync hold (feature `fault-injection`,
//! `plugins/api/src/sync_hold.rs`): a producer's `success` comes only after
//! the sync that makes its events durable — the file output's `fdatasync`
//! (`sync = true`, the default) and the persisted queue's, in both sync
//! modes. Each test holds the sync, shows that the events were written and
//! the sync reached, that no answer comes while it is held, and that the
//! answer comes once it is let go. An agent that answered before syncing
//! would answer while the sync is held, and fail the test.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// Long enough for an answer that does not wait for the sync to arrive on
/// this machine many times over (an acknowledged stream takes a few ms).
const NO_ANSWER_WINDOW: Duration = Duration::from_millis(500);

/// Sends `events` events in one stream while syncs at `point` are held;
/// checks that the sync is reached and that the stream is not answered
/// until the sync is let go, then that it is answered with success.
async fn answered_only_after_the_sync(agent: &Agent, hold: &SyncHold, point: &str, prefix: &str) {
    let syncs_before = hold.syncs(point).len();
    hold.hold(point);
    let mut client = agent.client().await;
    let events: Vec<_> = (0..50).map(|n| json_event(prefix, n, "k", "{\"x\":1}")).collect();
    let mut stream = tokio::spawn(async move { store(&mut client, events).await });

    hold.wait_for_syncs(point, syncs_before + 1);
    let early = tokio::time::timeout(NO_ANSWER_WINDOW, &mut stream).await;
    assert!(
        early.is_err(),
        "the producer was answered while the sync at {point} was held: {early:?}"
    );
    hold.release(point);
    let answer = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("no answer after the sync was let go")
        .unwrap();
    assert_eq!(answer.ok(), Some(true), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_output_acknowledges_only_after_its_sync() {
    let hold = SyncHold::new();
    let mut options = AgentOptions::new(FILE_PIPELINE);
    options.env.push(hold.env());
    let agent = Agent::start(options);
    answered_only_after_the_sync(&agent, &hold, "file-output", "fo-").await;
    // The held sync was the file's: the events were written before it.
    assert!(
        hold.syncs("file-output")
            .iter()
            .all(|line| line == "file-output k.jsonl")
    );
    assert_eq!(read_documents(&agent.path("events/k.jsonl")).len(), 50);
}

/// The file pipeline on a persisted queue (`ack = "queued"`, the default)
/// with `sync` set as given.
fn persisted(sync: &str) -> AgentOptions {
    AgentOptions::new(&format!(
        "[queue]\ntype = \"persisted\"\nsync = \"{sync}\"\nsync_interval_ms = 100\n{FILE_PIPELINE}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_persisted_queue_acknowledges_only_after_its_sync() {
    let hold = SyncHold::new();
    let mut options = persisted("batch");
    options.env.push(hold.env());
    let agent = Agent::start(options);
    answered_only_after_the_sync(&agent, &hold, "queue", "pq-").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_persisted_queue_with_interval_syncs_acknowledges_only_after_its_sync() {
    let hold = SyncHold::new();
    let mut options = persisted("interval");
    options.env.push(hold.env());
    let agent = Agent::start(options);
    answered_only_after_the_sync(&agent, &hold, "queue", "iv-").await;

    // Interval syncing is observed: one stream after another, each waits
    // for the next periodic sync (100 ms apart), and each is answered
    // after a sync of its own.
    let syncs_before = hold.syncs("queue").len();
    let mut client = agent.client().await;
    let started = Instant::now();
    for stream in 0..5 {
        let prefix = format!("iv-seq-{stream}-");
        store_ok(&mut client, (0..10).map(|n| json_event(&prefix, n, "k", "1")).collect()).await;
    }
    let took = started.elapsed();
    let syncs = hold.syncs("queue").len() - syncs_before;
    println!("interval sync: 5 streams one after another took {took:?}, {syncs} queue syncs");
    assert!(syncs >= 5, "{syncs} syncs for 5 streams answered one after another");
    assert!(
        took >= Duration::from_millis(4 * 90),
        "5 streams in {took:?}: their acks did not wait for syncs 100 ms apart"
    );
}
