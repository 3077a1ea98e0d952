//! End to end: a pipeline with two file outputs, `fast` and `slow`, whose
//! syncs the test holds (feature `fault-injection`, the sync hold in
//! `plugins/api/src/sync_hold.rs`). With the memory queue a producer is
//! answered `success` only once every output stored its events, and an
//! output failing fails the stream; with the persisted queue a held output
//! does not hold back the other, and a restart resends only to the output
//! that had not finished.

mod support;

use std::time::Duration;

use support::*;

/// Two file outputs, `fast` into `events/fast-<index>.jsonl` and `slow`
/// into `slow_dir/slow-<index>.jsonl`, after `queue` keys.
fn two_outputs(queue: &str) -> String {
    format!(
        "[pipeline]\nshutdown_timeout_ms = 1000\n[queue]\n{queue}\n\
         [[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n\
         [[outputs]]\nid = \"fast\"\ntype = \"file\"\npath = \"events/fast-%{{index}}.jsonl\"\n\
         [[outputs]]\nid = \"slow\"\ntype = \"file\"\npath = \"slow_dir/slow-%{{index}}.jsonl\"\n"
    )
}

/// The ids in a JSON-lines file, in order (none if it does not exist).
fn ids(agent: &Agent, relative: &str) -> Vec<String> {
    std::fs::read_to_string(agent.path(relative))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|doc| doc["id"].as_str().map(str::to_owned))
        .collect()
}

fn events(prefix: &str, count: usize) -> Vec<eventstash_client::Event> {
    (0..count).map(|n| json_event(prefix, n, "k", "{\"x\":1}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_comes_only_after_every_output_stored() {
    let hold = SyncHold::new();
    hold.hold("file-output-slow-k.jsonl");
    let mut options = AgentOptions::new(&two_outputs(""));
    options.env.push(hold.env());
    let agent = Agent::start(options);
    let mut client = agent.client().await;
    let mut stream = tokio::spawn(async move { store(&mut client, events("both-", 100)).await });

    // `fast` stored (and synced) every event; `slow` is held in its sync.
    wait_until("the fast output to store all 100", Duration::from_secs(10), || {
        ids(&agent, "events/fast-k.jsonl").len() == 100
    });
    wait_until("the slow output's sync", Duration::from_secs(10), || {
        hold.syncs("file-output")
            .iter()
            .any(|line| line.ends_with("slow-k.jsonl"))
    });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut stream).await;
    assert!(early.is_err(), "answered before the slow output stored: {early:?}");

    hold.release("file-output-slow-k.jsonl");
    let answer = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.ok(), Some(true));
    assert_eq!(ids(&agent, "slow_dir/slow-k.jsonl").len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_output_failing_fails_the_stream_while_the_other_stores() {
    let agent = Agent::start(AgentOptions::new(&two_outputs("")));
    // The slow output's directory is a regular file: its writes fail.
    std::fs::write(agent.path("slow_dir"), "not a directory").unwrap();
    let mut client = agent.client().await;
    let status = store(&mut client, events("half-", 20)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not stored"), "{status:?}");
    // The other output stored them all, untroubled.
    let fast = ids(&agent, "events/fast-k.jsonl");
    let expected: Vec<String> = (0..20).map(|n| format!("half-{n}")).collect();
    assert_eq!(fast, expected);
}

/// `queue inspect`'s line for output `id`.
fn inspect_line(agent: &Agent, id: &str) -> String {
    let report = run_ok(
        std::process::Command::new(EVENTSTASH)
            .args(["queue", "inspect", "-c", "pipeline.toml"])
            .current_dir(agent.dir.path()),
    );
    report
        .lines()
        .find(|line| line.contains(&format!("output {id}:")))
        .unwrap_or_else(|| panic!("no line for {id}: {report}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_persisted_queue_a_held_output_holds_back_no_other_and_only_it_gets_the_replay() {
    let hold = SyncHold::new();
    hold.hold("file-output-slow-k.jsonl");
    let mut options = AgentOptions::new(&two_outputs("type = \"persisted\""));
    options.env.push(hold.env());
    let mut agent = Agent::start(options);
    let mut client = agent.client().await;
    // Acknowledged once on disk (ack = "queued"), whatever `slow` does.
    for stream in 0..4 {
        store_ok(&mut client, events(&format!("pq-{stream}-"), 50)).await;
    }
    // `fast` gets all 200 while `slow` sits in its first sync.
    wait_until("the fast output to store all 200", Duration::from_secs(10), || {
        ids(&agent, "events/fast-k.jsonl").len() == 200
    });
    let slow_syncs = hold
        .syncs("file-output")
        .iter()
        .filter(|l| l.ends_with("slow-k.jsonl"))
        .count();
    assert_eq!(slow_syncs, 1, "the slow output went on past its held sync");
    // The queue's progress file says so too: fast finished, slow did not.
    wait_until("fast's progress on disk", Duration::from_secs(10), || {
        inspect_line(&agent, "fast").contains("pending 0 events")
    });
    assert!(!inspect_line(&agent, "slow").contains("pending 0 events"));

    // Killed with slow's sync still held; started again without the hold.
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(10));
    agent.restart(&[], false);
    wait_until("the slow output to store all 200", Duration::from_secs(10), || {
        let mut slow = ids(&agent, "slow_dir/slow-k.jsonl");
        slow.sort();
        slow.dedup();
        slow.len() == 200
    });
    wait_until("slow's progress on disk", Duration::from_secs(10), || {
        inspect_line(&agent, "slow").contains("pending 0 events")
    });
    // Nothing was resent to the output that had finished.
    assert_eq!(ids(&agent, "events/fast-k.jsonl").len(), 200, "{}", agent.log());
}
