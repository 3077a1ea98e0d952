//! End to end: the persisted queue never loses an acknowledged event —
//! through kill -9, an unfinished drain, and a damaged queue file.

mod support;

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// The support file pipeline on a persisted queue.
fn persisted_file_pipeline(queue: &str) -> String {
    format!("[queue]\ntype = \"persisted\"\n{queue}\n{FILE_PIPELINE}")
}

/// Ids in the file output, skipping a line a kill cut short.
fn ids_in_file(agent: &Agent) -> HashSet<String> {
    let text = std::fs::read_to_string(agent.path("events/k.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|doc| doc["id"].as_str().map(str::to_owned))
        .collect()
}

/// Producers streaming 100-event streams until the agent goes away,
/// remembering every id whose stream was acknowledged.
async fn produce_until_killed(
    agent: &Agent,
    round: usize,
    acked: Arc<Mutex<HashSet<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut producers = Vec::new();
    for producer in 0..4 {
        let mut client = agent.client().await;
        let acked = acked.clone();
        producers.push(tokio::spawn(async move {
            for stream in 0.. {
                let prefix = format!("r{round}-p{producer}-s{stream}-");
                let events: Vec<_> = (0..100).map(|n| json_event(&prefix, n, "k", "{\"x\":1}")).collect();
                match store(&mut client, events).await {
                    Ok(true) => acked.lock().unwrap().extend((0..100).map(|n| format!("{prefix}{n}"))),
                    _ => return,
                }
            }
        }));
    }
    producers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_repeated_kill_9_under_load() {
    let mut agent = Agent::start(AgentOptions::new(&persisted_file_pipeline("max_events = 20000")));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let pauses = [450, 800, 300];
    for (round, pause) in pauses.into_iter().enumerate() {
        let producers = produce_until_killed(&agent, round, acked.clone()).await;
        // Load for a while, then the kill: a window, not a wait for a state.
        tokio::time::sleep(Duration::from_millis(pause)).await;
        agent.signal("KILL");
        agent.wait_exit(Duration::from_secs(10));
        for producer in producers {
            producer.await.unwrap();
        }
        agent.restart(&[], false);
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 1000,
        "too little load to prove anything: {} acknowledged",
        acked.len()
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = ids_in_file(&agent);
    while !acked.is_subset(&found) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        found = ids_in_file(&agent);
    }
    let missing: Vec<_> = acked.difference(&found).take(5).collect();
    println!(
        "kill -9 x3: {} events acknowledged, {} distinct ids stored, {} missing",
        acked.len(),
        found.len(),
        acked.difference(&found).count()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {missing:?}\n{}",
        agent.log()
    );
}

/// Reads a child's stdout to its end in a thread, collecting document ids.
fn collect_ids(stdout: impl Read + Send + 'static) -> std::thread::JoinHandle<HashSet<String>> {
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
            .filter_map(|doc| doc["id"].as_str().map(str::to_owned))
            .collect()
    })
}

async fn store_stalled_batch(agent: &Agent, prefix: &str) -> HashSet<String> {
    let mut client = agent.client().await;
    let payload = format!("\"{}\"", "y".repeat(500));
    let events: Vec<_> = (0..2000).map(|n| json_event(prefix, n, "k", &payload)).collect();
    // Acknowledged once synced to the queue, though the output is stalled.
    store_ok(&mut client, events).await;
    (0..2000).map(|n| format!("{prefix}{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_drain_exits_one_and_the_next_start_delivers_the_rest() {
    let mut options = stdout_pipeline(
        "shutdown_timeout_ms = \"${SHUTDOWN_TIMEOUT:15000}\"",
        "type = \"persisted\"",
    );
    options.env.push(("SHUTDOWN_TIMEOUT".into(), "1000".into()));
    let mut agent = Agent::start(options);
    // stdout is a pipe nobody reads yet: the output stalls once it is full.
    let first_stdout = agent.child.stdout.take().unwrap();
    let sent = store_stalled_batch(&agent, "drain-").await;

    agent.signal("TERM");
    let (status, _) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(1),
        "an incomplete drain must say so:\n{}",
        agent.log()
    );
    assert!(agent.log().contains("remain in the persisted queue"), "{}", agent.log());

    let inspect = std::process::Command::new(EVENTSTASH)
        .args(["queue", "inspect", "-c", "pipeline.toml"])
        .current_dir(agent.dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert!(report.contains("output stdout#0: finished up to seq"), "{report}");
    assert!(!report.contains("unfinished: 0 events"), "{report}");

    restart_and_expect_delivered(&mut agent, first_stdout, &sent, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_queue_tail_is_skipped_and_the_good_records_delivered() {
    let mut agent = Agent::start(stdout_pipeline("", "type = \"persisted\""));
    let first_stdout = agent.child.stdout.take().unwrap();
    let sent = store_stalled_batch(&agent, "torn-").await;
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(10));

    // A write torn by a crash: half a record's header at the end.
    let queue = agent.path("data/queue/main");
    let newest = std::fs::read_dir(&queue)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a queue segment");
    let mut segment = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
    std::io::Write::write_all(&mut segment, &[0x40, 0x00, 0x00, 0x00, 0xde, 0xad]).unwrap();
    drop(segment);

    restart_and_expect_delivered(&mut agent, first_stdout, &sent, Some("skipped a damaged part"));
}

/// Reads what the stopped agent's stdout output already delivered, starts
/// it again reading its stdout, and checks every `sent` id came out of one
/// run or the other (after the log says `expect_log`, if given).
fn restart_and_expect_delivered(
    agent: &mut Agent,
    first_stdout: std::process::ChildStdout,
    sent: &HashSet<String>,
    expect_log: Option<&str>,
) {
    let before = collect_ids(first_stdout).join().unwrap();
    agent.restart(&[], true);
    let after = collect_ids(agent.child.stdout.take().unwrap());
    if let Some(needle) = expect_log {
        wait_for_log(agent, needle);
    }
    agent.signal("TERM");
    let (status, _) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "a clean drain exits 0:\n{}", agent.log());
    let delivered: HashSet<String> = before.union(&after.join().unwrap()).cloned().collect();
    let found = sent.intersection(&delivered).count();
    assert!(sent.is_subset(&delivered), "{found} of {} delivered", sent.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_persisted_queue_holds_the_producer_and_loses_nothing() {
    let mut agent = Agent::start(stdout_pipeline(
        "",
        "type = \"persisted\"\nmax_events = 100\n[metrics]\nbind = \"127.0.0.1:0\"",
    ));
    let stdout = agent.child.stdout.take().unwrap();
    const EVENTS: usize = 20_000;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let payload = format!("\"{}\"", "x".repeat(8 * 1024));
    let events = futures::StreamExt::map(tokio_stream::iter(0..EVENTS), move |n| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        json_event("full-", n, "k", &payload)
    });
    let client = agent.client().await;
    let stream = tokio::spawn(async move { store_stream(&client, events).await });
    // The queue fills to its 100 unfinished events, then the producer is
    // held: it takes no more.
    let unfinished = || queue_gauge(&agent.metrics(), "persisted").0;
    wait_until("the persisted queue to fill", Duration::from_secs(15), || {
        unfinished() >= 90.0
    });
    let held_at = wait_until_held(&sent);
    let depth = unfinished();
    assert!(depth >= 90.0, "the queue drained while the producer was held: {depth}");
    assert!(held_at < EVENTS / 4, "producer not held: {held_at} events taken");

    let reader = collect_ids(stdout);
    assert!(stream.await.unwrap().expect("acknowledged"));
    let peak_rss = agent.peak_rss_kib();
    agent.signal("TERM");
    let (status, _) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "a clean drain exits 0:\n{}", agent.log());
    let ids = reader.join().unwrap();
    println!("persisted queue full: held after {held_at} events, {depth} unfinished; peak RSS {peak_rss} KiB");
    assert_eq!(ids.len(), EVENTS, "every event came out");
    assert!(peak_rss < 64 * 1024, "peak RSS {peak_rss} KiB: memory is not bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_streams_cleanly_and_keeps_what_was_acknowledged() {
    let mut options = stdout_pipeline("", "type = \"persisted\"");
    options.file_size_limit_kib = Some(256);
    let mut agent = Agent::start(options);
    let reader = collect_ids(agent.child.stdout.take().unwrap());
    let mut client = agent.client().await;
    let payload = format!("\"{}\"", "z".repeat(500));
    let mut acked = HashSet::new();
    let mut failure = None;
    for stream in 0..100 {
        let prefix = format!("df-{stream}-");
        let events: Vec<_> = (0..100).map(|n| json_event(&prefix, n, "k", &payload)).collect();
        match store(&mut client, events).await {
            Ok(true) => acked.extend((0..100).map(|n| format!("{prefix}{n}"))),
            other => {
                failure = Some(other);
                break;
            }
        }
    }
    let failure = failure.expect("the queue file never hit its size limit");
    let status = failure.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(!acked.is_empty());
    assert!(healthcheck(agent.addr), "the agent stays up after a full disk");
    agent.signal("TERM");
    let (exit, _) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "a clean drain exits 0:\n{}", agent.log());
    let delivered = reader.join().unwrap();
    println!("disk full after {} acknowledged events: {status:?}", acked.len());
    assert!(
        acked.is_subset(&delivered),
        "{} of {} acknowledged delivered",
        acked.intersection(&delivered).count(),
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_syncs_and_delivered_acks_work_end_to_end() {
    let config = persisted_file_pipeline("ack = \"delivered\"\nsync = \"interval\"\nsync_interval_ms = 100");
    let hold = SyncHold::new();
    let mut options = AgentOptions::new(&config);
    options.env.push(hold.env());
    let mut agent = Agent::start(options);
    let mut client = agent.client().await;
    let events: Vec<_> = (0..300).map(|n| json_event("iv-", n, "k", "1")).collect();
    store_ok(&mut client, events).await;
    // With ack = "delivered" the file already holds them when the ack comes,
    // and the queue synced them (the sync hold saw it).
    assert_eq!(ids_in_file(&agent).len(), 300);
    let queue_syncs = hold.syncs("queue");
    assert!(!queue_syncs.is_empty(), "the persisted queue never synced");
    assert!(queue_syncs.iter().all(|line| line.ends_with(".seg")), "{queue_syncs:?}");
    agent.signal("TERM");
    let (status, _) = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "a clean drain exits 0:\n{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_replay_comes_in_order_before_new_events() {
    // The file output's sync is held: what the first run queued is never
    // finished, so all of it is replayed after kill -9.
    let hold = SyncHold::new();
    hold.hold("file-output");
    let mut options = AgentOptions::new(&persisted_file_pipeline(""));
    options.env.push(hold.env());
    let mut agent = Agent::start(options);
    let mut client = agent.client().await;
    for stream in 0..4 {
        let prefix = format!("old-{stream}-");
        store_ok(
            &mut client,
            (0..250).map(|n| json_event(&prefix, n, "k", "1")).collect(),
        )
        .await;
    }
    hold.wait_for_syncs("file-output", 1);
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(10));
    // Lines the held batch wrote before its sync stay in the page cache.
    let written_before = std::fs::read_to_string(agent.path("events/k.jsonl"))
        .unwrap_or_default()
        .len();

    agent.restart(&[], false);
    let mut client = agent.client().await;
    store_ok(&mut client, (0..100).map(|n| json_event("new-", n, "k", "1")).collect()).await;
    let path = agent.path("events/k.jsonl");
    wait_until("the replay and the new events", Duration::from_secs(10), || {
        std::fs::read_to_string(&path).unwrap_or_default()[written_before..]
            .lines()
            .count()
            >= 1100
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: Vec<String> = complete_line_ids(&text[written_before..]).collect();
    let mut expected: Vec<String> = (0..4)
        .flat_map(|stream| (0..250).map(move |n| format!("old-{stream}-{n}")))
        .collect();
    expected.extend((0..100).map(|n| format!("new-{n}")));
    assert_eq!(ids.len(), expected.len(), "{}", agent.log());
    let first_wrong = ids.iter().zip(&expected).position(|(got, want)| got != want);
    assert_eq!(
        first_wrong, None,
        "after the restart the file does not hold the replay in order, then the new events"
    );
}

#[test]
fn a_second_agent_on_the_same_queue_directory_exits_2_naming_it_and_the_holder() {
    let shared = tempfile::tempdir().unwrap();
    let queue = shared.path().join("queue");
    let pipeline = persisted_file_pipeline(&format!("path = {:?}", queue.display().to_string()));
    let first = Agent::start(AgentOptions::new(&pipeline));

    let second = tempfile::tempdir().unwrap();
    std::fs::write(second.path().join("pipeline.toml"), pipeline.replace("{port}", "0")).unwrap();
    let mut child = std::process::Command::new(EVENTSTASH)
        .args(["run", "-c", "pipeline.toml"])
        .current_dir(second.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("a second agent is running on a queue directory another agent holds");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert_eq!(status.code(), Some(2), "second agent was not refused:\n{log}");
    assert!(
        log.contains(&queue.display().to_string()),
        "the directory is not named:\n{log}"
    );
    assert!(
        log.contains(&format!("pid {}", first.pid())),
        "the other process is not named:\n{log}"
    );
    assert!(healthcheck(first.addr), "the first agent must keep running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_starting_while_the_replay_is_held_then_serving() {
    // The file output's syncs are held, so the persisted records stay
    // unfinished; two kill -9s make the third start replay carefully, one
    // record at a time, each waiting for the output (up to 10 s): a replay
    // that takes as long as the test holds the sync.
    let hold = SyncHold::new();
    let config = format!(
        "[queue]\ntype = \"persisted\"\nack = \"queued\"\npath = \"queue\"\n\
         [metrics]\nbind = \"127.0.0.1:0\"\n{FILE_PIPELINE}"
    );
    let mut options = AgentOptions::new(&config);
    options.env = vec![hold.env()];
    let mut agent = Agent::start(options);
    hold.hold("file-output");
    let mut client = agent.client().await;
    for n in 0..3 {
        store_ok(&mut client, vec![json_event("held-", n, "k", "{}")]).await;
    }
    hold.wait_for_syncs("file-output", 1);
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(10));
    agent.restart(&[hold.env()], false);
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(10));

    let offset = agent.relaunch(&[hold.env()]);
    let since = |agent: &Agent| agent.log().get(offset..).unwrap_or_default().to_owned();
    let mut metrics = None;
    wait_until(
        "the metrics endpoint of the third start",
        Duration::from_secs(10),
        || {
            metrics = logged_addr(&since(&agent), "metrics and health endpoint listening");
            metrics.is_some()
        },
    );
    let metrics = metrics.unwrap();
    wait_until("the careful replay", Duration::from_secs(10), || {
        hold.syncs("file-output").len() >= 3
    });
    // Replaying: /health says starting with 503, /metrics (the liveness
    // probe) answers, and no input listens yet.
    let state = |body: &str| -> String {
        let report: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        report["state"].as_str().unwrap_or_default().to_owned()
    };
    let (status, body) = http_get(metrics, "/health");
    assert_eq!(status, 503, "{body}");
    assert_eq!(state(&body), "starting", "{body}");
    assert_eq!(http_get(metrics, "/metrics").0, 200);
    assert_eq!(agent.listening_since(offset), None, "{}", since(&agent));

    hold.release("file-output");
    wait_until("the agent to serve after the replay", Duration::from_secs(30), || {
        http_get(metrics, "/health").0 == 200
    });
    let (_, body) = http_get(metrics, "/health");
    assert_eq!(state(&body), "running", "{body}");
    let addr = agent.listening_since(offset).expect("serving, but no input listens");
    assert!(healthcheck(addr), "gRPC health is not SERVING");
    wait_until("the replayed events in the file", Duration::from_secs(10), || {
        ["held-0", "held-1", "held-2"]
            .iter()
            .all(|id| ids_in_file(&agent).contains(*id))
    });
}
