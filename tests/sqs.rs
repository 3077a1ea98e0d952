//! End to end through the binary, against moto's SQS and DynamoDB (both on
//! `EVENTSTASH_TEST_SQS_URL`, started by tests/run): front agents (gRPC →
//! SQS) and store agents (SQS → DynamoDB), each started from a pipeline
//! file with nothing but environment variables, as an operator runs
//! several agents on one machine.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::sqs::{
    AgentSpec, aws_env, boto, create_queue, protos_glob, queue_counts, sqs_url, start_agent, stop_agent,
};
use support::*;

const PRODUCERS: usize = 4;
const EVENTS_PER_STREAM: usize = 50;
/// How fast the producers send, together. Moto's SQS scans the whole queue
/// for every message it hands out, so a deep queue slows it to a crawl;
/// at this rate the store agents keep the queue nearly empty.
const EVENTS_PER_SECOND: u64 = 40;

/// Events per producer: 250 by default (1,000 in all), or
/// `EVENTSTASH_SQS_E2E_EVENTS` / 4. Moto's SQS scans the whole queue (held
/// messages included) several times for every message it hands out, so it
/// manages a few dozen messages a second with two store agents; 20,000
/// (`EVENTSTASH_SQS_E2E_EVENTS=20000`) take over eight minutes there.
fn events_per_producer() -> usize {
    let total = std::env::var("EVENTSTASH_SQS_E2E_EVENTS")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .unwrap_or(1_000);
    (total / PRODUCERS).div_ceil(EVENTS_PER_STREAM) * EVENTS_PER_STREAM
}

/// A store agent keyed by the event itself (`RequestId` = id, `Timestamp`
/// = `@timestamp`), as pipelines/dynamodb.toml: an event handed out twice
/// lands on the same item only if its id and `@timestamp` crossed SQS
/// unchanged, which is what this checks.
const STORE_BY_EVENT: &str = r#"
[pipeline]
id = "store"
batch_size = 500
batch_delay_ms = 20

[[inputs]]
type = "sqs"
queue_url = "${SQS_QUEUE_URL}"
pollers = 2
wait_time_seconds = 1
visibility_timeout_seconds = 5
max_in_flight_messages = 20

[[outputs]]
type = "dynamodb"
table = "${DYNAMODB_TABLE}"
create_table = true
dead_letter_path = "${EVENTSTASH_DATA_DIR}/dead-letters/dynamodb.jsonl"
max_batches_in_flight = 4
concurrency = 2
"#;

fn shipped(name: &str) -> PathBuf {
    repo_root().join("pipelines").join(name)
}

fn env(pairs: &[(&str, &str)], url: &str) -> Vec<(String, String)> {
    let mut env = aws_env(url);
    env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_reaches_dynamodb_once_through_sqs_when_a_store_agent_is_killed() {
    let sent = events_survive_a_store_agent_killed_midway("event").await;
    assert!(
        sent.requests * 10 >= sent.events,
        "one message per event, 10 per request: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_events_reach_dynamodb_once_through_sqs_when_a_store_agent_is_killed() {
    let sent = events_survive_a_store_agent_killed_midway("packed").await;
    // One message per event would take at least one request per 10 events.
    assert!(
        sent.requests * 10 < sent.events,
        "the front agent did not pack: {sent:?}"
    );
    assert!(
        sent.billed >= sent.requests,
        "every call is billed at least once: {sent:?}"
    );
}

/// What a front agent sent, from its own metrics.
#[derive(Debug)]
struct Sent {
    /// Events acknowledged to the producers.
    events: usize,
    /// `SendMessageBatch` calls.
    requests: usize,
    /// The same calls as SQS bills them (per 64 KiB of payload).
    billed: usize,
}

/// A front agent sending with `codec` (`SQS_CODEC`) to two store agents,
/// one of them killed with `kill -9` halfway: every acknowledged event must
/// be stored once, and the queue must end empty.
async fn events_survive_a_store_agent_killed_midway(codec: &str) -> Sent {
    let url = sqs_url();
    let run = unique_suffix();
    let queue = create_queue(&url, &format!("e2e-{codec}-{run}"));
    let table = format!("e2e-sqs-{codec}-{run}");
    let store_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(store_file.path(), STORE_BY_EVENT).unwrap();

    let front_env = env(
        &[
            ("SQS_QUEUE_URL", &queue),
            ("PROTOS_GLOB", &protos_glob()),
            ("SQS_CODEC", codec),
        ],
        &url,
    );
    let mut front = start_agent(AgentSpec {
        pipeline: &shipped("grpc-to-sqs.toml"),
        env: front_env,
        ready_log: None,
        pipe_stdout: false,
    });
    let store_env = env(&[("SQS_QUEUE_URL", &queue), ("DYNAMODB_TABLE", &table)], &url);
    let store = |env: &[(String, String)]| {
        start_agent(AgentSpec {
            pipeline: store_file.path(),
            env: env.to_vec(),
            ready_log: Some("sqs input receiving"),
            pipe_stdout: false,
        })
    };
    let mut survivor = store(&store_env);
    let victim = store(&store_env);

    let per_producer = events_per_producer();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let mut client = front.client().await;
        let acknowledged = acknowledged.clone();
        producers.push(tokio::spawn(async move {
            let every = Duration::from_millis(1000 * (EVENTS_PER_STREAM * PRODUCERS) as u64 / EVENTS_PER_SECOND);
            // Staggered, so that the producers' streams do not arrive together.
            tokio::time::sleep(every * producer as u32 / PRODUCERS as u32).await;
            let mut pace = tokio::time::interval(every);
            for first in (0..per_producer).step_by(EVENTS_PER_STREAM) {
                pace.tick().await;
                let events = (first..first + EVENTS_PER_STREAM)
                    .map(|n| json_event(&format!("p{producer}-"), n, "e2e.Sqs", &format!(r#"{{"n":{n}}}"#)))
                    .collect();
                store_ok(&mut client, events).await;
                acknowledged.fetch_add(EVENTS_PER_STREAM, Ordering::Relaxed);
            }
        }));
    }
    let half = PRODUCERS * per_producer / 2;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.load(Ordering::Relaxed) < half {
        assert!(
            Instant::now() < deadline,
            "half the events not acknowledged within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.signal("KILL");
    for producer in producers {
        producer.await.unwrap();
    }
    let total = acknowledged.load(Ordering::Relaxed);
    assert_eq!(total, PRODUCERS * per_producer);

    // Wait for the queue to empty (the victim's messages come back after
    // their 5 s visibility timeout), then read every item's id.
    let started = std::time::Instant::now();
    let script = r#"
queue, table, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.time() + 120
def counts():
    a = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])
def ids():
    found, start = [], None
    while True:
        args = dict(TableName=table, ProjectionExpression="Id")
        if start: args["ExclusiveStartKey"] = start
        page = db.scan(**args)
        found += [item["Id"]["S"] for item in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start: return found
while time.time() < deadline:
    if counts() == (0, 0) and db.describe_table(TableName=table)["Table"]["ItemCount"] >= total:
        break
    time.sleep(0.5)
items = ids()
print(json.dumps({"queue": counts(), "items": len(items), "ids": sorted(set(items))}))
"#;
    let report: serde_json::Value =
        serde_json::from_str(&boto(&url, script, &[&queue, &table, &total.to_string()])).unwrap();
    let stored: HashSet<String> = report["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<String> = (0..PRODUCERS)
        .flat_map(|p| (0..per_producer).map(move |n| format!("p{p}-{n}")))
        .filter(|id| !stored.contains(id))
        .collect();
    let problems = |agent: &Agent| {
        let log = agent.log();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing, e.g. {:?}; queue {}; survivor's log:\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        report["queue"],
        problems(&survivor)
    );
    assert_eq!(report["items"], total, "an event was stored under two keys");
    assert_eq!(report["queue"], serde_json::json!([0, 0]), "the queue is not empty");
    println!(
        "{total} events ({codec} messages) through gRPC → SQS → 2 store agents → DynamoDB; queue empty {:.1?} after the last ack",
        started.elapsed()
    );
    let sent = Sent {
        events: total,
        requests: sqs_metric(front.metrics_addr(), SQS_REQUESTS, "SendMessageBatch"),
        billed: sqs_metric(front.metrics_addr(), SQS_BILLED_REQUESTS, "SendMessageBatch"),
    };
    stop_agent(&mut survivor, Duration::from_secs(15));
    stop_agent(&mut front, Duration::from_secs(15));
    println!("front agent: {sent:?}");
    sent
}

const SQS_REQUESTS: &str = "eventstash_sqs_requests_total";
const SQS_BILLED_REQUESTS: &str = "eventstash_sqs_billed_requests_total";

/// An agent's SQS counter for one request type, from its `/metrics`.
fn sqs_metric(metrics: std::net::SocketAddr, name: &str, request: &str) -> usize {
    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    metric_value(&text, name, &[("request", request)])
        .unwrap_or_else(|| panic!("no {name}{{request={request}}}:\n{text}")) as usize
}

#[test]
fn gateway_messages_sent_straight_to_sqs_land_as_the_items_the_lambda_wrote() {
    let url = sqs_url();
    let run = unique_suffix();
    let queue = create_queue(&url, &format!("gateway-{run}"));
    let table = format!("gateway-{run}");
    // As the gateway publishes them (`aws sqs send-message --message-body
    // file://message.json`), and one message that is no event at all.
    let send = r#"
queue = sys.argv[1]
for i in range(20):
    body = {"requestId": "req-%d" % (i // 4), "timestamp": "2020-05-01T20:00:0%dZ" % (i % 4), "id": "evt-%d" % i,
            "type": "MICROSERVICE_REQUEST" if i % 2 == 0 else "MICROSERVICE_RESPONSE", "source": "Gateway",
            "data": {"Name": "Microservice A", "n": i}}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body, indent=2))
sqs.send_message(QueueUrl=queue, MessageBody="this is not an event")
"#;
    boto(&url, send, &[&queue]);
    let mut agent = start_agent(AgentSpec {
        pipeline: &shipped("sqs-to-dynamodb.toml"),
        env: env(
            &[
                ("SQS_QUEUE_URL", &queue),
                ("DYNAMODB_TABLE", &table),
                ("DYNAMODB_CREATE_TABLE", "true"),
            ],
            &url,
        ),
        ready_log: Some("sqs input receiving"),
        pipe_stdout: false,
    });

    let read = r##"
queue, table = sys.argv[1], sys.argv[2]
deadline = time.time() + 30
while time.time() < deadline:
    a = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    if a["ApproximateNumberOfMessages"] == "0" and a["ApproximateNumberOfMessagesNotVisible"] == "0":
        break
    time.sleep(0.2)
items = db.scan(TableName=table)["Items"]
def count(index, key, value):
    return db.query(TableName=table, IndexName=index, KeyConditionExpression="#k = :v",
                    ExpressionAttributeNames={"#k": key}, ExpressionAttributeValues={":v": {"S": value}},
                    Select="COUNT")["Count"]
print(json.dumps({"items": items, "by_source": count("Source-Index", "Source", "Gateway"),
                  "by_type": count("Type-Index", "Type", "MICROSERVICE_REQUEST"), "queue": [a["ApproximateNumberOfMessages"], a["ApproximateNumberOfMessagesNotVisible"]]}))
"##;
    let report: serde_json::Value = serde_json::from_str(&boto(&url, read, &[&queue, &table])).unwrap();
    assert_eq!(report["queue"], serde_json::json!(["0", "0"]), "{}", agent.log());
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), 20, "{report}");
    for item in items {
        let id = item["Id"]["S"].as_str().unwrap();
        let n: usize = id.trim_start_matches("evt-").parse().unwrap();
        assert_eq!(item["RequestId"]["S"], format!("req-{}", n / 4));
        assert_eq!(
            item["Timestamp"]["S"],
            format!("2020-05-01T20:00:0{}Z", n % 4),
            "as sent"
        );
        let kind = ["MICROSERVICE_REQUEST", "MICROSERVICE_RESPONSE"][n % 2];
        assert_eq!(item["Type"]["S"], kind);
        assert_eq!(item["Source"]["S"], "Gateway");
        // `Data` is the message's `data`, in native types.
        let data = &item["Data"]["M"];
        assert_eq!(data["Name"]["S"], "Microservice A");
        assert_eq!(data["n"]["N"], n.to_string());
        assert!(data.get("requestId").is_none(), "{data}");
    }
    assert_eq!(report["by_source"], 20);
    assert_eq!(report["by_type"], 10);

    // The message that is no event was kept, flagged, with the reason.
    let letters = read_documents(&agent.path("data/dead-letters/dynamodb.jsonl"));
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["event"]["plain"], "this is not an event");
    assert_eq!(letters[0]["event"]["invalidJson"], true);
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("RequestId"),
        "{}",
        letters[0]
    );
    stop_agent(&mut agent, Duration::from_secs(15));
}

#[test]
fn sigterm_never_deletes_a_message_that_was_not_stored() {
    let url = sqs_url();
    let queue = create_queue(&url, &format!("drain-{}", unique_suffix()));
    let fill = r#"
queue = sys.argv[1]
for first in range(0, 300, 10):
    entries = [{"Id": str(i), "MessageBody": json.dumps({"requestId": "r", "timestamp": "2020-05-01T20:00:00Z",
               "id": "drain-%d" % (first + i), "type": "T", "source": "s", "data": {"pad": "x" * 300}})} for i in range(10)]
    sqs.send_message_batch(QueueUrl=queue, Entries=entries)
"#;
    boto(&url, fill, &[&queue]);
    let pipeline = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        pipeline.path(),
        "[pipeline]\nid = \"drain\"\nshutdown_timeout_ms = 3000\n[[inputs]]\ntype = \"sqs\"\nqueue_url = \"${SQS_QUEUE_URL}\"\n\
         wait_time_seconds = 1\nvisibility_timeout_seconds = 5\n[[outputs]]\ntype = \"stdout\"\n",
    )
    .unwrap();
    // Nobody reads the agent's stdout: its output stalls once the pipe is
    // full, with messages received and not stored.
    let mut agent = start_agent(AgentSpec {
        pipeline: pipeline.path(),
        env: env(&[("SQS_QUEUE_URL", &queue)], &url),
        ready_log: Some("sqs input receiving"),
        pipe_stdout: true,
    });
    // Received: the pipe (64 KiB) cannot take the 300 messages' 120 KB, so
    // some are still unstored when the drain's deadline passes.
    wait_until("messages received", Duration::from_secs(30), || {
        queue_counts(&url, &queue).1 > 0
    });
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(15));
    let mut written = String::new();
    std::io::Read::read_to_string(&mut agent.child.stdout.take().unwrap(), &mut written).unwrap();
    // The drain ends at its deadline with the output's write still blocked
    // on the full pipe, so the text can end in part of a line: that event
    // was not stored (its message must come back), and only complete lines
    // count. Every complete line must parse.
    let stored: HashSet<String> = complete_line_ids(&written).collect();

    // What was not deleted comes back within the visibility timeout.
    let left = r#"
queue, ids, deadline = sys.argv[1], set(), time.time() + 60
def counts():
    a = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])
while counts()[1] and time.time() < deadline:
    time.sleep(0.2)
while time.time() < deadline:
    page = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
    if not page and counts()[0] == 0:
        break
    ids |= {json.loads(m["Body"])["id"] for m in page}
print(json.dumps(sorted(ids)))
"#;
    let remaining: HashSet<String> = serde_json::from_str::<Vec<String>>(&boto(&url, left, &[&queue]))
        .unwrap()
        .into_iter()
        .collect();
    let all: HashSet<String> = (0..300).map(|n| format!("drain-{n}")).collect();
    let deleted: HashSet<&String> = all.difference(&remaining).collect();
    assert!(
        !stored.is_empty() && !remaining.is_empty(),
        "stored {}, left {}",
        stored.len(),
        remaining.len()
    );
    let unstored_but_deleted: Vec<_> = deleted.iter().filter(|id| !stored.contains(**id)).collect();
    assert!(
        unstored_but_deleted.is_empty(),
        "deleted without being stored: {unstored_but_deleted:?}"
    );
    assert_eq!(stored.union(&remaining).count(), 300, "an event was lost");
}

#[test]
fn a_missing_queue_stops_the_agent_at_start_and_says_which() {
    let url = sqs_url();
    let name = format!("missing-{}", unique_suffix());
    let pipeline = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        pipeline.path(),
        format!("[[inputs]]\ntype = \"sqs\"\nqueue_url = \"{name}\"\n[[outputs]]\ntype = \"stdout\"\n"),
    )
    .unwrap();
    let output = std::process::Command::new(EVENTSTASH)
        .args(["run", "-c"])
        .arg(pipeline.path())
        .envs(aws_env(&url))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "an input failure must exit 1:\n{log}");
    assert!(log.contains(&format!("sqs queue {name} does not exist")), "{log}");
    assert!(log.contains("input failed; stopping the agent"), "{log}");

    // `validate` says so too, without starting anything.
    let validate = |pipeline: &std::path::Path| {
        std::process::Command::new(EVENTSTASH)
            .args(["validate", "-c"])
            .arg(pipeline)
            .envs(aws_env(&url))
            .output()
            .unwrap()
    };
    let output = validate(pipeline.path());
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains(&format!("sqs queue {name} does not exist")), "{said}");
    // The same for a front agent's output, and both pass once the queue exists.
    let front = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        front.path(),
        format!("[[inputs]]\ntype = \"grpc\"\n[[outputs]]\ntype = \"sqs\"\nqueue_url = \"{name}\"\n"),
    )
    .unwrap();
    let output = validate(front.path());
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains(&format!("sqs queue {name} does not exist")), "{said}");
    create_queue(&url, &name);
    for pipeline in [pipeline.path(), front.path()] {
        let output = validate(pipeline);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_message_with_one_poison_event_is_deleted_and_only_that_event_is_dead_lettered() {
    let url = sqs_url();
    let run = unique_suffix();
    let queue = create_queue(&url, &format!("poison-{run}"));
    let table = format!("poison-{run}");
    let mut front = start_agent(AgentSpec {
        pipeline: &shipped("grpc-to-sqs.toml"),
        env: env(
            &[
                ("SQS_QUEUE_URL", &queue),
                ("PROTOS_GLOB", &protos_glob()),
                ("SQS_CODEC", "packed"),
            ],
            &url,
        ),
        ready_log: None,
        pipe_stdout: false,
    });
    // 100 events in gateway shape through gRPC, one stream; event 37 has no
    // `requestId`, so the store agent's table (keyed by it) cannot take it.
    const POISON: usize = 37;
    let events = (0..100)
        .map(|n| {
            let request = match n {
                POISON => String::new(),
                n => format!(r#""requestId":"req-{n}","#),
            };
            let data = format!(
                r#"{{{request}"timestamp":"2020-05-01T20:00:00Z","id":"pk-{n}","type":"T","source":"Gateway","data":{{"n":{n}}}}}"#
            );
            json_event("pk-", n, "T", &data)
        })
        .collect();
    store_ok(&mut front.client().await, events).await;
    let requests = sqs_metric(front.metrics_addr(), SQS_REQUESTS, "SendMessageBatch");
    assert!(requests < 10, "100 events took {requests} requests: not packed");
    // Two gateway messages sent straight to the same queue, as a gateway does.
    let send = r#"
queue = sys.argv[1]
for i in range(2):
    body = {"requestId": "gw-%d" % i, "timestamp": "2020-05-01T20:00:00Z", "id": "gw-%d" % i, "type": "T",
            "source": "Gateway", "data": {"n": i}}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))
"#;
    boto(&url, send, &[&queue]);

    let mut store = start_agent(AgentSpec {
        pipeline: &shipped("sqs-to-dynamodb.toml"),
        env: env(
            &[
                ("SQS_QUEUE_URL", &queue),
                ("DYNAMODB_TABLE", &table),
                ("DYNAMODB_CREATE_TABLE", "true"),
                ("SQS_VISIBILITY_TIMEOUT", "30"),
            ],
            &url,
        ),
        ready_log: Some("sqs input receiving"),
        pipe_stdout: false,
    });
    // Empty well within the 30 s visibility timeout: the packed message was
    // deleted, not left to come back for its poison event.
    let read = r#"
queue, table = sys.argv[1], sys.argv[2]
deadline = time.time() + 20
while time.time() < deadline:
    a = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    counts = [int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])]
    if counts == [0, 0]:
        break
    time.sleep(0.2)
ids = sorted(item["Id"]["S"] for item in db.scan(TableName=table)["Items"])
print(json.dumps({"queue": counts, "ids": ids}))
"#;
    let report: serde_json::Value = serde_json::from_str(&boto(&url, read, &[&queue, &table])).unwrap();
    assert_eq!(report["queue"], serde_json::json!([0, 0]), "{}", store.log());
    let stored: HashSet<String> = report["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = (0..100)
        .filter(|&n| n != POISON)
        .map(|n| format!("pk-{n}"))
        .chain((0..2).map(|n| format!("gw-{n}")))
        .collect();
    assert_eq!(stored, expected);
    let letters = read_documents(&store.path("data/dead-letters/dynamodb.jsonl"));
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["event"]["id"], format!("pk-{POISON}"));
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("RequestId"),
        "{}",
        letters[0]
    );
    stop_agent(&mut store, Duration::from_secs(15));
    stop_agent(&mut front, Duration::from_secs(15));
}
