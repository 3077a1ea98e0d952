//! End to end, with the test-only `fault` filter (feature `fault-injection`):
//! one event that breaks a filter never fails its neighbours, and one
//! persisted record that kills the agent cannot crash-loop it.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventstash_client::{Event, Format};
use support::*;

const PING_PROTO: &str =
    "syntax = \"proto3\";\npackage demo;\nmessage Ping {\n  string message = 1;\n  int64 sequence = 2;\n}\n";

/// `Ping { message: "hello", sequence: 7 }`.
const PING_BYTES: &[u8] = &[10, 5, b'h', b'e', b'l', b'l', b'o', 16, 7];

fn ping(id: &str) -> Event {
    Event::bytes(Format::Protobuf, "demo.Ping", Bytes::from_static(PING_BYTES)).with_id(id)
}

/// The fault filter (`action` on the event `boom`) before the protobuf
/// filter, into a file output; `queue` holds the `[queue]` keys.
fn faulty_pipeline(action: &str, queue: &str) -> AgentOptions {
    let config = format!(
        "[pipeline]\nshutdown_timeout_ms = 2000\n[queue]\n{queue}\n\
         [[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n\
         [[filters]]\ntype = \"fault\"\nevent_id = \"boom\"\naction = \"{action}\"\n\
         [[filters]]\ntype = \"protobuf\"\nprotos = \"protos/**/*.proto\"\n\
         [[outputs]]\ntype = \"file\"\npath = \"events/%{{index}}.jsonl\"\n\
         [metrics]\nbind = \"127.0.0.1:0\"\n"
    );
    let mut options = AgentOptions::new(&config);
    options.files.push(("protos/demo/ping.proto".into(), PING_PROTO.into()));
    options
}

#[tokio::test]
async fn a_filter_panic_flags_its_event_and_its_neighbours_are_filtered() {
    let agent = Agent::start(faulty_pipeline("panic", "type = \"memory\""));
    let mut client = agent.client().await;
    store_ok(&mut client, vec![ping("before"), ping("boom"), ping("after")]).await;

    let documents = read_documents(&agent.path("events/demo-ping.jsonl"));
    let by_id = |id: &str| {
        documents
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no document {id}"))
    };
    for neighbour in ["before", "after"] {
        assert_eq!(
            by_id(neighbour)["data"]["message"],
            "hello",
            "{neighbour} was not decoded"
        );
    }
    let boom = by_id("boom");
    assert_eq!(boom["invalidProto"], true, "{boom}");
    assert_eq!(boom["raw"], "CgVoZWxsbxAH");
    assert!(healthcheck(agent.addr));
}

/// Starts the agent again in its directory; true once it serves, false if
/// it died first.
fn start_again(agent: &mut Agent) -> bool {
    let log_offset = agent.log().len();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(agent.path("agent.log"))
        .unwrap();
    agent.child = Command::new(EVENTSTASH)
        .args(["run", "-c", "pipeline.toml"])
        .current_dir(agent.dir.path())
        .env("LOG_LEVEL", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if agent.child.try_wait().unwrap().is_some() {
            return false;
        }
        // The pipeline binds port 0: the new process names its port.
        if let Some(addr) = agent.listening_since(log_offset) {
            agent.addr = addr;
            if healthcheck(addr) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("agent neither served nor died:\n{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_aborts_the_agent_is_set_aside_after_a_few_restarts() {
    let mut agent = Agent::start(faulty_pipeline(
        "abort",
        "type = \"persisted\"\nack = \"queued\"\npath = \"queue\"",
    ));
    let mut client = agent.client().await;
    store_ok(&mut client, vec![ping("first")]).await;
    // Acknowledged once synced to the queue, then the filter aborts the agent.
    let _ = store(&mut client, vec![ping("boom")]).await;
    agent.wait_exit(Duration::from_secs(10));

    let mut starts = 0;
    while !start_again(&mut agent) {
        starts += 1;
        assert!(starts < 8, "the agent is crash-looping:\n{}", agent.log());
    }
    assert!(starts >= 1, "the poisoned record was never replayed");
    // Counted once, with its pipeline (this start's endpoint: the last one
    // logged).
    let poisoned = metric_value(
        &agent.metrics(),
        "eventstash_poison_records_total",
        &[("pipeline", "main")],
    );
    assert_eq!(poisoned, Some(1.0), "{}", agent.metrics());

    let mut client = agent.client().await;
    store_ok(&mut client, vec![ping("later")]).await;
    // Acknowledged once queued: the file catches up a moment later.
    let stored_ids = || -> Vec<String> {
        read_documents(&agent.path("events/demo-ping.jsonl"))
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ids = stored_ids();
    while !ids.contains(&"later".to_owned()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        ids = stored_ids();
    }
    assert!(
        ids.contains(&"first".to_owned()) && ids.contains(&"later".to_owned()),
        "{ids:?}"
    );
    assert!(!ids.contains(&"boom".to_owned()), "{ids:?}");

    let letters = read_documents(&agent.path("queue/dead-letters.jsonl"));
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["event"]["id"], "boom");
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("stopped 3 times"),
        "{}",
        letters[0]
    );
    assert!(agent.log().contains("set aside"), "{}", agent.log());

    // The queue moved on: nothing left unfinished once the output caught up.
    agent.signal("TERM");
    let (status, _) = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{}", agent.log());
    let inspect = run_ok(
        Command::new(EVENTSTASH)
            .args(["queue", "inspect", "-c", "pipeline.toml"])
            .current_dir(agent.dir.path()),
    );
    assert!(inspect.contains("unfinished: 0 events"), "{inspect}");
}
