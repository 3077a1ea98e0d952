//! End to end: `hfx.v1.EventStore` served by the built binary, over moto
//! (DynamoDB) and osmem-server (Elasticsearch), which `tests/run` starts and
//! exports as `EVENTSTASH_TEST_DYNAMODB_URL` and
//! `EVENTSTASH_TEST_ELASTICSEARCH_URL`. These tests fail without them.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstash_client::Event;
use eventstash_client::proto::ReplayRequest;
use support::event_store::*;
use support::{healthcheck, read_documents};
use tonic::Code;

const AGGREGATES: usize = 4;
const WRITERS: usize = 32;

/// Change sets each writer appends: `EVENTSTASH_TEST_APPENDS_PER_WRITER`,
/// default 50, the issue's acceptance load (1,600 change sets, about 5,000
/// conflicts, two to three minutes on moto as `tests/run` starts it).
fn appends_per_writer() -> usize {
    std::env::var("EVENTSTASH_TEST_APPENDS_PER_WRITER")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50)
}

/// What one writer saw.
#[derive(Default)]
struct WriterLog {
    /// `(aggregate, version, change set id)` of each append that succeeded.
    stored: Vec<(usize, i64, String)>,
    /// `(aggregate, expected, current)` of each conflict.
    conflicts: Vec<(usize, i64, i64)>,
}

/// A tiny deterministic random source for backoff jitter.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One writer: appends [`appends_per_writer`] change sets round-robin over
/// the aggregates, each time at the version it last saw, and on ABORTED
/// takes the current version from the status and tries again.
async fn writer(agent_addr: String, writer: usize, aggregates: Arc<Vec<String>>) -> WriterLog {
    let mut client = eventstash_client::Client::connect(agent_addr)
        .await
        .unwrap()
        .event_store();
    let mut known = [-1i64; AGGREGATES];
    let mut random = Jitter(writer as u64 + 1);
    let mut log = WriterLog::default();
    for n in 0..appends_per_writer() {
        let a = (writer + n) % AGGREGATES;
        // Read the version: the change sets after the last one seen.
        let seen = known[a].max(0);
        known[a] = match read_all(&mut client, &aggregates[a], seen + 1).await {
            Ok(change_sets) => change_sets.last().map_or(seen, |c| c.version),
            Err(status) if status.code() == Code::NotFound => 0,
            Err(status) => panic!("read failed: {status:?}"),
        };
        let change_set_id = format!("w{writer}-n{n}");
        let events = vec![
            json("test.ItemAdded", &format!(r#"{{"writer":{writer},"n":{n},"part":0}}"#)),
            json("test.ItemPriced", &format!(r#"{{"writer":{writer},"n":{n},"part":1}}"#)),
        ];
        let mut streak = 0u32;
        loop {
            let request = append_request(&aggregates[a], known[a], &change_set_id, events.clone());
            match append(&mut client, request).await {
                Ok(response) => {
                    // (`already_stored` may be set: the agent retries a
                    // transaction whose answer it lost, and finds it stored.)
                    assert_eq!(response.version, known[a] + 1);
                    known[a] = response.version;
                    log.stored.push((a, response.version, change_set_id));
                    break;
                }
                Err(status) => {
                    let current = current_version(&status);
                    assert!(
                        current > known[a],
                        "conflict at expected {} reported current {current}",
                        known[a]
                    );
                    log.conflicts.push((a, known[a], current));
                    known[a] = current;
                    // Back off (exponentially, with jitter) as writers of
                    // real systems do, so that contenders take turns.
                    streak += 1;
                    let window = 10u64 << streak.min(6);
                    tokio::time::sleep(Duration::from_millis(random.next() % window)).await;
                }
            }
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_store_dense_versions_and_conflicts_name_the_current_version() {
    let tables = StoreTables::new("concurrency");
    let agent = start_agent(&tables, &[], FILE_OUTPUT).await;
    let aggregates: Arc<Vec<String>> = Arc::new((0..AGGREGATES).map(|n| unique(&format!("order{n}"))).collect());
    let started = Instant::now();
    let writers = (0..WRITERS).map(|n| tokio::spawn(writer(format!("http://{}", agent.addr), n, aggregates.clone())));
    let logs: Vec<WriterLog> = futures::future::join_all(writers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let elapsed = started.elapsed();
    let conflicts: usize = logs.iter().map(|log| log.conflicts.len()).sum();
    println!(
        "{WRITERS} writers x {} appends on {AGGREGATES} aggregates: {:.1?}, {conflicts} conflicts",
        appends_per_writer(),
        elapsed
    );

    let mut stored: HashMap<(usize, i64), String> = HashMap::new();
    let mut per_aggregate = [0i64; AGGREGATES];
    for (a, version, id) in logs.iter().flat_map(|log| log.stored.iter()) {
        assert!(
            stored.insert((*a, *version), id.clone()).is_none(),
            "two writers got version {version}"
        );
        per_aggregate[*a] += 1;
    }
    assert_eq!(stored.len(), WRITERS * appends_per_writer());

    let mut client = store_client(&agent).await;
    for (a, aggregate) in aggregates.iter().enumerate() {
        let change_sets = read_all(&mut client, aggregate, 0).await.unwrap();
        assert_eq!(change_sets.len() as i64, per_aggregate[a], "aggregate {a}");
        for (n, change_set) in change_sets.iter().enumerate() {
            assert_eq!(change_set.version, n as i64 + 1, "versions are dense");
            assert_eq!(stored[&(a, change_set.version)], change_set.change_set_id);
            let (writer, round) = change_set.change_set_id[1..].split_once("-n").unwrap();
            let kinds: Vec<&str> = change_set.events.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(kinds, ["test.ItemAdded", "test.ItemPriced"]);
            for (part, event) in change_set.events.iter().enumerate() {
                let data: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
                assert_eq!(data["writer"].to_string(), writer);
                assert_eq!(data["n"].to_string(), round);
                assert_eq!(data["part"], part);
                assert_eq!(event.id, format!("{}-{part}", change_set.change_set_id));
            }
        }
    }
    for (a, expected, current) in logs.iter().flat_map(|log| log.conflicts.iter()) {
        assert!(
            *current <= per_aggregate[*a],
            "conflict named version {current} (expected {expected})"
        );
    }
    // The events went on to the other outputs too.
    let mut handed_on = HashSet::new();
    for document in read_documents(&agent.path("events/test-item-added.jsonl")) {
        handed_on.insert(document["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(handed_on.len(), WRITERS * appends_per_writer());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_append_returns_the_first_version_and_stores_one_change_set() {
    let tables = StoreTables::new("idempotency");
    let agent = start_agent(&tables, &[], FILE_OUTPUT).await;
    let mut client = store_client(&agent).await;
    let order = unique("order");
    let first = append_request(&order, 0, "cs-first", vec![json("test.Created", r#"{"n":1}"#)]);

    let stored = append(&mut client, first.clone()).await.unwrap();
    assert_eq!((stored.version, stored.already_stored), (1, false));
    let again = append(&mut client, first.clone()).await.unwrap();
    assert_eq!((again.version, again.already_stored), (1, true));

    let second = append_request(&order, 1, "cs-second", vec![json("test.Renamed", r#"{"n":2}"#)]);
    assert_eq!(append(&mut client, second).await.unwrap().version, 2);
    // Re-sent after others appended: still the original version, no conflict.
    let late = append(&mut client, first.clone()).await.unwrap();
    assert_eq!((late.version, late.already_stored), (1, true));
    // The same id for another aggregate is refused, not stored.
    let mut elsewhere = first.clone();
    elsewhere.aggregate_id = unique("other");
    assert_eq!(
        append(&mut client, elsewhere).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // A lost response: the client gives up before the answer, then sends
    // the same append again.
    let lost = append_request(&order, 2, "cs-lost", vec![json("test.Shipped", r#"{"n":3}"#)]);
    let impatient = client.clone().with_timeout(Duration::from_millis(1));
    let _ = impatient.append(lost.clone()).await;
    let resent = append(&mut client, lost.clone()).await.unwrap();
    assert_eq!(resent.version, 3);

    let change_sets = read_all(&mut client, &order, 0).await.unwrap();
    let ids: Vec<&str> = change_sets.iter().map(|c| c.change_set_id.as_str()).collect();
    assert_eq!(ids, ["cs-first", "cs-second", "cs-lost"]);
    let from_two = read_all(&mut client, &order, 2).await.unwrap();
    assert_eq!(from_two.iter().map(|c| c.version).collect::<Vec<_>>(), [2, 3]);

    // `eventstash read` prints the same, one JSON line per change set.
    let output = std::process::Command::new(support::EVENTSTASH)
        .args(["read", "-c", "pipeline.toml", &order])
        .current_dir(agent.dir.path())
        .envs(aws_env())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let versions: Vec<u64> = lines.iter().map(|l| l["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(lines[2]["events"][0]["kind"], "test.Shipped");
    assert_eq!(lines[2]["events"][0]["data"]["n"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses_and_the_agent_stays_up() {
    let tables = StoreTables::new("bad-input");
    let agent = start_agent(&tables, &["store"], FILE_OUTPUT).await;
    let mut client = store_client(&agent).await;
    let order = unique("order");
    let event = || vec![json("test.Created", "{}")];

    let missing = read_all(&mut client, &unique("nobody"), 0).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    for expected in [-2, -100, i64::MIN, i64::MAX, 1 << 53] {
        let status = append(&mut client, append_request(&order, expected, "", event()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{expected}: {status:?}");
    }
    let status = read_all(&mut client, &order, -1).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = append(&mut client, append_request(&order, 0, "", vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("at least one event"), "{status:?}");
    let mut no_type = append_request(&order, 0, "", event());
    no_type.aggregate_type.clear();
    assert_eq!(
        append(&mut client, no_type).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let blob = format!(r#"{{"blob":"{}"}}"#, "x".repeat(100_000));
    let oversized: Vec<Event> = (0..5).map(|_| json("test.Big", &blob)).collect();
    let status = append(&mut client, append_request(&order, 0, "", oversized))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("400 KB"), "{status:?}");

    assert_eq!(
        append(&mut client, append_request(&order, 0, "", event()))
            .await
            .unwrap()
            .version,
        1
    );
    let status = append(&mut client, append_request(&order, 0, "", event()))
        .await
        .unwrap_err();
    assert_eq!(current_version(&status), 1);
    let status = append(&mut client, append_request(&order, 7, "", event()))
        .await
        .unwrap_err();
    assert_eq!(current_version(&status), 1);
    assert!(status.message().contains("version 1"), "{status:?}");
    let mut wrong_type = append_request(&order, 1, "", event());
    wrong_type.aggregate_type = "test.Invoice".into();
    assert_eq!(
        append(&mut client, wrong_type).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Any version appends wherever the aggregate is.
    assert_eq!(
        append(&mut client, append_request(&order, -1, "", event()))
            .await
            .unwrap()
            .version,
        2
    );

    for cursor in ["garbage", "eyJrIjp7fX0", "%%%"] {
        let request = ReplayRequest {
            aggregate_type: "test.Order".into(),
            cursor: cursor.into(),
            ..Default::default()
        };
        let status = replay(&mut client, request, None).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{cursor}: {status:?}");
        assert!(status.message().contains("cursor"), "{status:?}");
    }
    let by_kind = ReplayRequest {
        kind: "test.Created".into(),
        ..Default::default()
    };
    assert_eq!(
        replay(&mut client, by_kind, None).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let unknown_store = ReplayRequest {
        aggregate_type: "test.Order".into(),
        store: "nope".into(),
        ..Default::default()
    };
    assert_eq!(
        replay(&mut client, unknown_store, None).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    assert!(healthcheck(agent.addr));
    assert_eq!(read_all(&mut client, &order, 0).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_sets_replay_by_aggregate_type_in_time_order_and_resume_inside_a_change_set() {
    let tables = StoreTables::new("store-replay");
    let agent = start_agent(&tables, &["store"], FILE_OUTPUT).await;
    let mut client = store_client(&agent).await;
    let kind = unique("test.Cart");
    let carts = [unique("cart"), unique("cart")];
    for round in 0..10 {
        for (c, cart) in carts.iter().enumerate() {
            let events = (0..3)
                .map(|part| {
                    json(
                        "test.CartEvent",
                        &format!(r#"{{"cart":{c},"round":{round},"part":{part}}}"#),
                    )
                })
                .collect();
            let mut request = append_request(cart, round, "", events);
            request.aggregate_type = kind.clone();
            append(&mut client, request).await.unwrap();
        }
    }
    let query = ReplayRequest {
        aggregate_type: kind.clone(),
        page_size: 3,
        ..Default::default()
    };
    // Stop inside a change set (after its second event), then resume.
    let (head, ended) = replay(&mut client, query.clone(), Some(8)).await.unwrap();
    assert!(!ended);
    let resume = ReplayRequest {
        cursor: head.last().unwrap().cursor.clone(),
        ..query.clone()
    };
    let (tail, ended) = replay(&mut client, resume, None).await.unwrap();
    assert!(ended);
    let all: Vec<_> = head.into_iter().chain(tail).collect();
    assert_eq!(all.len(), 60);
    let mut seen = HashSet::new();
    let mut next_version: BTreeMap<String, i64> = BTreeMap::new();
    for event in &all {
        assert!(seen.insert(event.event.as_ref().unwrap().id.clone()), "replayed twice");
        let version = next_version.entry(event.aggregate_id.clone()).or_insert(1);
        // Each cart's change sets in version order, three events each.
        if *version < event.version {
            *version = event.version;
        }
        assert_eq!(event.version, *version);
        assert_eq!(event.aggregate_type, kind);
    }
    let times: Vec<&str> = all.iter().map(|e| e.timestamp.as_str()).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "not in time order");
}

/// Events in the replay tests.
const REPLAYED: usize = 20_000;

/// An agent writing to Elasticsearch (HFXEventStash's template) and to a
/// DynamoDB event table, replaying both, loaded with `REPLAYED` events of
/// one kind; the kind.
async fn loaded_agent(tables: &StoreTables, event_table: &str) -> (support::Agent, String) {
    let outputs = format!(
        r#"
[[outputs]]
id = "es"
type = "elasticsearch"
hosts = ["{es}"]
index = "evt-%{{index}}-%{{+xxxx-MM-ww}}"
template = "evt.json"
template_name = "evt"
template_overwrite = true

[[outputs]]
id = "events"
type = "dynamodb"
table = "{event_table}"
region = "us-east-1"
endpoint_url = "{moto}"
create_table = true
max_batches_in_flight = 8
# moto answers slowly while other tests load it.
request_timeout_ms = 120000
"#,
        es = elasticsearch_url(),
        moto = dynamodb_url(),
    );
    let template = std::fs::read_to_string(support::repo_root().join("templates/evt.json")).unwrap();
    let agent = start_agent_with_files(
        tables,
        &["es", "events", "store"],
        &outputs,
        vec![("evt.json".into(), template)],
    )
    .await;
    let kind = format!("replay.Test{}", unique("k").replace('-', ""));
    let mut client = agent.client().await;
    let started = Instant::now();
    for batch in 0..REPLAYED / 1000 {
        let events = (batch * 1000..(batch + 1) * 1000)
            .map(|n| support::json_event("ev-", n, &kind, &format!(r#"{{"n":{n}}}"#)))
            .collect();
        support::store_ok(&mut client, events).await;
    }
    println!(
        "loaded {REPLAYED} events into Elasticsearch and DynamoDB in {:.1?}",
        started.elapsed()
    );
    let (status, body) = elasticsearch("POST", "/evt-*/_refresh", "");
    assert_eq!(status, 200, "{body}");
    (agent, kind)
}

/// Replays `kind` from `store`, stopping after `cut` events, then resumes
/// from the last cursor; checks every event came once, in time order.
async fn replay_with_a_disconnect(agent: &support::Agent, store: &str, kind: &str, cut: usize) {
    let mut client = store_client(agent).await;
    let query = ReplayRequest {
        kind: kind.to_owned(),
        store: store.to_owned(),
        page_size: 500,
        ..Default::default()
    };
    let started = Instant::now();
    let (head, ended) = replay(&mut client, query.clone(), Some(cut)).await.unwrap();
    assert!(!ended);
    drop(client);
    let mut client = store_client(agent).await;
    let resume = ReplayRequest {
        cursor: head.last().unwrap().cursor.clone(),
        ..query
    };
    let (tail, ended) = replay(&mut client, resume, None).await.unwrap();
    let elapsed = started.elapsed();
    assert!(ended);
    println!(
        "replay from {store}: {} events in {elapsed:.1?} = {:.0} events/s",
        head.len() + tail.len(),
        (head.len() + tail.len()) as f64 / elapsed.as_secs_f64()
    );
    let all: Vec<_> = head.into_iter().chain(tail).collect();
    let ids: HashSet<&str> = all.iter().map(|e| e.event.as_ref().unwrap().id.as_str()).collect();
    assert_eq!(all.len(), REPLAYED, "{store}: events replayed");
    assert_eq!(ids.len(), REPLAYED, "{store}: every event exactly once");
    assert!(all.iter().all(|e| e.event.as_ref().unwrap().kind == kind));
    let times: Vec<&str> = all.iter().map(|e| e.timestamp.as_str()).collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "{store}: not in time order"
    );
    let first: serde_json::Value = serde_json::from_slice(&all[0].event.as_ref().unwrap().data).unwrap();
    assert!(first["n"].is_u64(), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_events_replay_from_elasticsearch_and_dynamodb_exactly_once_across_a_disconnect() {
    let tables = StoreTables::new("replay");
    let event_table = unique("replay-events");
    let (agent, kind) = loaded_agent(&tables, &event_table).await;
    let before = agent.peak_rss_kib();
    replay_with_a_disconnect(&agent, "es", &kind, 7_321).await;
    replay_with_a_disconnect(&agent, "events", &kind, 12_345).await;
    let growth = agent.peak_rss_kib().saturating_sub(before);
    println!("agent peak memory grew {growth} KiB during the replays");
    // Pages of 500 stream through a bounded channel: a replay holds a page,
    // not the result set (20,000 documents would be several times this).
    assert!(growth < 48 * 1024, "peak memory grew {growth} KiB");

    // Operators get the same from the command line, with a cursor to resume.
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(support::EVENTSTASH)
            .args(["replay", "-c", "pipeline.toml"])
            .args(args)
            .current_dir(agent.dir.path())
            .envs(aws_env())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        (
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (lines, stderr) = cli(&["--source", "es", "--kind", &kind, "--limit", "3"]);
    let lines: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["event"]["kind"], kind.as_str());
    let cursor = lines[2]["cursor"].as_str().unwrap();
    assert!(stderr.contains(cursor), "{stderr}");
    let (rest, _) = cli(&["--source", "events", "--kind", &kind, "--page-size", "1000"]);
    assert_eq!(rest.lines().count(), REPLAYED);
    let (resumed, _) = cli(&["--source", "es", "--kind", &kind, "--cursor", cursor, "--limit", "2"]);
    let resumed: Vec<serde_json::Value> = resumed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_ne!(resumed[0]["event"]["id"], lines[2]["event"]["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_tokens_govern_what_is_appended_read_and_replayed() {
    let tokens: String = [
        ("writer", "writer-token", r#"kinds = ["order.*"]"#),
        (
            "reader",
            "reader-token",
            r#"kinds = []
read_kinds = ["order.Placed"]"#,
        ),
        (
            "auditor",
            "auditor-token",
            r#"kinds = []
read_kinds = ["*"]"#,
        ),
    ]
    .iter()
    .map(|(name, token, rules)| {
        let hash = support::token_sha256(token);
        format!("[[producers]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\n{rules}\n\n")
    })
    .collect();
    let tables = StoreTables::new("store-auth");
    let agent = start_agent_with_input(
        &tables,
        &["store"],
        FILE_OUTPUT,
        vec![("tokens.toml".to_owned(), tokens)],
        r#"auth = { tokens_file = "tokens.toml" }"#,
    )
    .await;
    let mut client = store_client(&agent).await;
    let aggregate = unique("order");
    let aggregate_type = unique("test.AuthOrder");
    let request = |expected: i64, kinds: &[&str]| {
        let events = kinds.iter().map(|kind| json(kind, r#"{"n":1}"#)).collect();
        let mut request = append_request(&aggregate, expected, "", events);
        request.aggregate_type = aggregate_type.clone();
        request
    };

    let mut writer = store_client_with_token(&agent, "writer-token").await;
    let mut reader = store_client_with_token(&agent, "reader-token").await;
    let refused = append(&mut client, request(0, &["order.Placed"])).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = append(&mut reader, request(0, &["order.Placed"])).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "a reader appended: {refused:?}");

    for (expected, kind) in [(0, "order.Placed"), (1, "order.Shipped")] {
        let appended = append(&mut writer, request(expected, &[kind])).await.unwrap();
        assert_eq!(appended.version, expected + 1);
    }
    // A kind outside the writer's globs: nothing of the change set is stored.
    let refused = append(&mut writer, request(2, &["order.Paid", "billing.Charged"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("billing.Charged"), "{}", refused.message());

    let read = |token: &'static str| {
        let agent = &agent;
        let aggregate = aggregate.clone();
        async move {
            let client = store_client_with_token(agent, token).await;
            let mut stream = client.read(&aggregate, 0).await.map_err(support::into_status)?;
            let mut versions = Vec::new();
            let ended = loop {
                match stream.next().await {
                    Ok(Some(change_set)) => versions.push(change_set.version),
                    Ok(None) => break None,
                    Err(error) => break Some(support::into_status(error).code()),
                }
            };
            Ok::<_, tonic::Status>((versions, ended))
        }
    };
    // The auditor reads both change sets, and no third one was stored.
    assert_eq!(read("auditor-token").await.unwrap(), (vec![1, 2], None));
    // The reader gets the change set it may read, then is refused.
    assert_eq!(
        read("reader-token").await.unwrap(),
        (vec![1], Some(Code::PermissionDenied))
    );
    // The writer may read nothing.
    assert_eq!(read("writer-token").await.unwrap_err().code(), Code::PermissionDenied);

    let replay_as = |token: &'static str, query: ReplayRequest| {
        let agent = &agent;
        async move {
            let mut client = store_client_with_token(agent, token).await;
            replay(&mut client, query, None).await.map(|(events, _)| events)
        }
    };
    let by_type = ReplayRequest {
        aggregate_type: aggregate_type.clone(),
        ..Default::default()
    };
    let audited = replay_as("auditor-token", by_type.clone()).await.unwrap();
    let kinds: Vec<_> = audited
        .iter()
        .map(|e| e.event.as_ref().unwrap().kind.as_str())
        .collect();
    assert_eq!(kinds, ["order.Placed", "order.Shipped"]);
    assert!(audited.iter().all(|event| event.source == "writer"), "{audited:?}");
    // Kinds the reader may not read are left out of a replay by type...
    let read_back = replay_as("reader-token", by_type).await.unwrap();
    let kinds: Vec<_> = read_back
        .iter()
        .map(|e| e.event.as_ref().unwrap().kind.as_str())
        .collect();
    assert_eq!(kinds, ["order.Placed"]);
    // ...and a replay of such a kind is refused.
    let by_kind = ReplayRequest {
        kind: "order.Shipped".to_owned(),
        ..Default::default()
    };
    let refused = replay_as("reader-token", by_kind).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The other outputs record the producer as `source`, too.
    for index in ["order-placed", "order-shipped"] {
        let documents = read_documents(&agent.dir.path().join(format!("events/{index}.jsonl")));
        assert_eq!(documents.len(), 1, "{documents:?}");
        assert_eq!(documents[0]["source"], "writer", "{documents:?}");
    }
    assert!(!agent.dir.path().join("events/order-paid.jsonl").exists());
}

/// The status `grpc.health.v1` gives `service`.
async fn service_status(agent: &support::Agent, service: &str) -> i32 {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", agent.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    health.check(request).await.unwrap().into_inner().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_store_service_is_not_serving_until_its_tables_are_ready() {
    use tonic_health::pb::health_check_response::ServingStatus;
    // A store no request reaches: the agent serves StoreEvent, not appends.
    let unreachable = support::free_port();
    let tables = StoreTables::new("health");
    let config = format!(
        "[[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\nevent_store = \"store\"\n{}\n{FILE_OUTPUT}",
        tables.toml(&format!("http://127.0.0.1:{unreachable}"))
    );
    let mut options = support::AgentOptions::new(&config);
    options.env = aws_env();
    let agent = tokio::task::block_in_place(|| support::Agent::start(options));
    assert_eq!(service_status(&agent, "").await, ServingStatus::Serving as i32);
    assert_eq!(
        service_status(&agent, "hfx.v1.EventStore").await,
        ServingStatus::NotServing as i32
    );

    // With its tables in reach, it turns SERVING.
    let ready = start_agent(&StoreTables::new("health-ready"), &[], FILE_OUTPUT).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while service_status(&ready, "hfx.v1.EventStore").await != ServingStatus::Serving as i32 {
        assert!(Instant::now() < deadline, "never SERVING:\n{}", ready.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
