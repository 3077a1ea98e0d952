//! End to end: every metric of the README's Observability table that
//! `tests/observability.rs` does not already check is asserted here with
//! its labels — failed, retried and dead-lettered events, the batch
//! histograms, both queue gauges of the pipeline queue and of an
//! `output <id>` queue, SIGHUP reloads by outcome, `invalidProto` and the
//! 100-kind cap falling back to `other` — and `grpc.health.v1` answers for
//! `hfx.v1.EventStash`. The Elasticsearch test needs osmem-server (started
//! by tests/run) and fails without it.

mod support;

#[path = "support/fault_http.rs"]
mod fault_http;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use eventstash_client::{Event, Format};
use fault_http::{Fault, FaultHttpProxy};
use support::*;
use tonic_health::pb::health_check_response::ServingStatus;

/// A pipeline `obs` with a metrics endpoint on a port the system picks
/// (the agent names it: [`Agent::metrics_addr`]); `body` holds its filters
/// and outputs.
fn with_metrics(body: &str) -> AgentOptions {
    let config = format!(
        "[pipeline]\nid = \"obs\"\nunhealthy_after_ms = 300\n[metrics]\nbind = \"127.0.0.1:0\"\n\
         [[inputs]]\ntype = \"grpc\"\nbind = \"127.0.0.1:{{port}}\"\n{body}"
    );
    AgentOptions::new(&config)
}

fn scrape(metrics: SocketAddr) -> String {
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of `name` with `labels` (and `pipeline="obs"`), failing the
/// test with the whole scrape when the series is missing.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("pipeline", "obs")];
    all.extend_from_slice(labels);
    metric_value(text, name, &all).unwrap_or_else(|| panic!("no {name} {all:?} in:\n{text}"))
}

/// Scrapes until `condition` holds on the text, for at most `limit`.
fn scrape_until(metrics: SocketAddr, what: &str, limit: Duration, condition: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = scrape(metrics);
        if condition(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dead_lettered_batches_and_queue_gauges_carry_their_labels() {
    let options = with_metrics(
        "[[outputs]]\ntype = \"file\"\npath = \"events/%{index}.jsonl\"\ndead_letter_path = \"dlq.jsonl\"\n",
    );
    let agent = Agent::start(options);
    let metrics = agent.metrics_addr();
    let mut client = agent.client().await;
    // Four stored; one whose kind makes a file name too long for the disk:
    // dead-lettered, while its stream still succeeds.
    let mut events: Vec<_> = (0..4).map(|n| json_event("ok-", n, "m.Ok", "{}")).collect();
    events.push(json_event("long-", 0, &"k".repeat(300), "{}"));
    store_ok(&mut client, events).await;
    // `events` becomes a regular file: a new kind's file cannot be opened,
    // the operator's fault, not the events'.
    std::fs::remove_dir_all(agent.path("events")).unwrap();
    std::fs::write(agent.path("events"), "blocker").unwrap();
    let failed = store(
        &mut client,
        (0..2).map(|n| json_event("f-", n, "m.Fail", "{}")).collect(),
    )
    .await;
    let status = failed.expect_err("a batch the output could not write was acknowledged");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    let text = scrape(metrics);
    let file = [("plugin", "file#0")];
    assert_eq!(value(&text, "eventstash_events_failed_total", &file), 2.0);
    assert_eq!(value(&text, "eventstash_events_dead_lettered_total", &file), 1.0);
    let letters = std::fs::read_to_string(agent.path("dlq.jsonl")).unwrap();
    assert_eq!(letters.lines().count(), 1, "{letters}");
    // Every write is measured, failed ones included: 5 + 2 events.
    let writes = value(&text, "eventstash_batch_events_count", &file);
    assert!(writes >= 2.0, "{writes} writes");
    assert_eq!(value(&text, "eventstash_batch_events_sum", &file), 7.0);
    assert_eq!(value(&text, "eventstash_batch_duration_seconds_count", &file), writes);
    assert!(value(&text, "eventstash_batch_duration_seconds_sum", &file) > 0.0);
    for queue in ["pipeline", "output file#0"] {
        assert_eq!(value(&text, "eventstash_queue_events", &[("queue", queue)]), 0.0);
        assert_eq!(value(&text, "eventstash_queue_bytes", &[("queue", queue)]), 0.0);
    }
    // Every received message was queued: none holds the in-flight budget.
    assert_eq!(
        value(&text, "eventstash_grpc_inflight_bytes", &[("plugin", "grpc#0")]),
        0.0
    );
}

/// The log lines containing `needle`, with their time.
fn timed_lines(log: &str, needle: &str) -> Vec<(chrono::DateTime<chrono::Utc>, String)> {
    log.lines()
        .filter(|line| line.contains(needle))
        .map(|line| {
            let stamp = line.split_whitespace().next().unwrap_or_default();
            let at = chrono::DateTime::parse_from_rfc3339(stamp)
                .unwrap_or_else(|e| panic!("no time at the start of {line:?}: {e}"));
            (at.to_utc(), line.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_retried_held_in_its_output_queue_and_logged_at_most_once_an_interval() {
    let url = std::env::var("EVENTSTASH_TEST_ELASTICSEARCH_URL")
        .expect("EVENTSTASH_TEST_ELASTICSEARCH_URL is not set: run the tests with tests/run");
    let proxy = FaultHttpProxy::start(&url, Fault::Drop).await;
    let index = format!("obs-unreachable-{}", std::process::id());
    // The README's 10 s, shortened so that an outage of a second or two
    // shows several intervals.
    let interval = Duration::from_millis(400);
    let mut options = with_metrics(&format!(
        "[[outputs]]\ntype = \"elasticsearch\"\nhosts = [\"{}\"]\nindex = \"{index}\"\n\
         retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 100\nfailure_log_interval_ms = {}\n",
        proxy.url(),
        interval.as_millis()
    ));
    // Long enough that the agent stays healthy through the outage.
    options.config = options
        .config
        .replace("unhealthy_after_ms = 300", "unhealthy_after_ms = 60000");
    let agent = tokio::task::block_in_place(|| Agent::start(options));
    let metrics = agent.metrics_addr();
    let client = agent.client().await;
    let events: Vec<_> = (0..10).map(|n| json_event("u-", n, "obs.Down", "{\"n\":1}")).collect();
    let stream = tokio::spawn(async move { store_stream(&client, tokio_stream::iter(events)).await });

    let es = [("plugin", "elasticsearch#0")];
    let queue = [("queue", "output elasticsearch#0")];
    let text = tokio::task::block_in_place(|| {
        scrape_until(metrics, "three rounds were retried", Duration::from_secs(20), |text| {
            metric_value(text, "eventstash_events_retried_total", &es).is_some_and(|n| n >= 30.0)
        })
    });
    // The ten events wait, being written, in the output's own queue.
    assert_eq!(value(&text, "eventstash_queue_events", &queue), 10.0);
    assert!(value(&text, "eventstash_queue_bytes", &queue) > 0.0, "{text}");
    assert_eq!(value(&text, "eventstash_queue_events", &[("queue", "pipeline")]), 0.0);
    assert_eq!(value(&text, "eventstash_events_retried_total", &es) % 10.0, 0.0);
    // Keep the cluster away for three log intervals.
    let unavailable = "Elasticsearch unavailable at start";
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while timed_lines(&agent.log(), unavailable).len() < 3 {
            assert!(Instant::now() < deadline, "no third line:\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert!(!stream.is_finished(), "the stream was answered during the outage");

    proxy.set(Fault::Forward);
    assert!(stream.await.unwrap().unwrap(), "the stream was not acknowledged");
    let text = scrape(metrics);
    assert_eq!(value(&text, "eventstash_events_out_total", &es), 10.0);
    assert_eq!(value(&text, "eventstash_queue_events", &queue), 0.0);
    assert_eq!(value(&text, "eventstash_queue_bytes", &queue), 0.0);

    // Logged at once, then at most once an interval, each reminder with
    // the failures held back since; the recovery once.
    tokio::task::block_in_place(|| wait_for_log(&agent, "Elasticsearch recovered"));
    let log = agent.log();
    let lines = timed_lines(&log, unavailable);
    let dropped = proxy.faulted();
    assert!(
        dropped > lines.len() * 2,
        "{dropped} connections dropped for {} lines",
        lines.len()
    );
    for pair in lines.windows(2) {
        let gap = (pair[1].0 - pair[0].0).to_std().unwrap();
        assert!(
            gap >= interval - Duration::from_millis(5),
            "lines {gap:?} apart:\n{log}"
        );
        let reminder = &pair[1].1;
        assert!(
            reminder.contains("held_back=") && !reminder.contains("held_back=0"),
            "{reminder}"
        );
    }
    assert_eq!(timed_lines(&log, "Elasticsearch still failing").len(), 0, "{log}");
    assert_eq!(timed_lines(&log, "Elasticsearch recovered").len(), 1, "{log}");
}

/// A PROTOBUF event of `kind` (a type no proto file declares).
fn unknown_proto(n: usize, kind: &str) -> Event {
    Event::bytes(Format::Protobuf, kind, vec![0x08, 0x01]).with_id(format!("p-{n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_protos_the_kind_cap_and_reloads_are_counted_with_their_labels() {
    let mut options = with_metrics(
        "[[filters]]\ntype = \"protobuf\"\nprotos = \"protos/**/*.proto\"\n\
         [[outputs]]\ntype = \"file\"\npath = \"events/all.jsonl\"\n",
    );
    options.files = vec![(
        "protos/obs/ok.proto".to_owned(),
        "syntax = \"proto3\";\npackage obs;\nmessage Ok { int32 n = 1; }\n".to_owned(),
    )];
    let agent = Agent::start(options);
    let metrics = agent.metrics_addr();
    let mut client = agent.client().await;
    // 105 kinds the filter cannot decode: the first 100 get a label each,
    // the other 5 count as `other`.
    let events = (0..105)
        .map(|n| unknown_proto(n, &format!("obs.Unknown{n:03}")))
        .collect();
    store_ok(&mut client, events).await;

    let text = scrape(metrics);
    let invalid = |kind: &str| {
        metric_value(
            &text,
            "eventstash_invalid_events_total",
            &[("kind", kind), ("reason", "invalidProto")],
        )
    };
    assert_eq!(invalid("obs.Unknown000"), Some(1.0), "{text}");
    assert_eq!(invalid("obs.Unknown099"), Some(1.0), "{text}");
    assert_eq!(invalid("obs.Unknown100"), None, "the 101st kind has a label:\n{text}");
    assert_eq!(
        value(
            &text,
            "eventstash_invalid_events_total",
            &[("kind", "other"), ("reason", "invalidProto")]
        ),
        5.0
    );
    let stored = read_documents(&agent.path("events/all.jsonl"));
    assert_eq!(stored.len(), 105);
    assert!(stored.iter().all(|d| d["invalidProto"] == true), "{:?}", stored[0]);

    let reloads = |outcome: &'static str| {
        move |text: &str| {
            let labels = [("pipeline", "obs"), ("plugin", "protobuf#0"), ("outcome", outcome)];
            metric_value(text, "eventstash_reloads_total", &labels) == Some(1.0)
        }
    };
    agent.signal("HUP");
    tokio::task::block_in_place(|| {
        scrape_until(
            metrics,
            "a reload is counted ok",
            Duration::from_secs(10),
            reloads("ok"),
        )
    });
    write_file(
        &agent.path("protos/obs/broken.proto"),
        "syntax = \"proto3\";\nmessage {\n",
    );
    agent.signal("HUP");
    let text = tokio::task::block_in_place(|| {
        scrape_until(
            metrics,
            "a reload is counted failed",
            Duration::from_secs(10),
            reloads("failed"),
        )
    });
    assert!(reloads("ok")(&text), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_panics_and_protobuf_fallbacks_carry_pipeline_and_plugin() {
    let mut options = with_metrics(
        "[[filters]]\ntype = \"fault\"\nid = \"faulty\"\nevent_id = \"boom\"\naction = \"panic\"\n\
         [[filters]]\ntype = \"protobuf\"\nid = \"decoder\"\nprotos = \"protos/**/*.proto\"\n\
         [[outputs]]\ntype = \"file\"\npath = \"events/all.jsonl\"\n",
    );
    options.files = vec![(
        "protos/obs/text.proto".to_owned(),
        "syntax = \"proto3\";\npackage obs;\nmessage Text { int32 n = 1; string s = 2; }\n".to_owned(),
    )];
    let agent = Agent::start(options);
    let mut client = agent.client().await;
    // `s` is not UTF-8: the transcoder leaves it to prost-reflect
    // (`malformed`), which flags it. The fault filter panics on `boom`.
    let not_utf8 = Event::bytes(Format::Protobuf, "obs.Text", vec![0x12, 0x01, 0xff]).with_id("bad-text");
    let boom = Event::bytes(Format::Protobuf, "obs.Text", vec![0x08, 0x01]).with_id("boom");
    let fine = Event::bytes(Format::Protobuf, "obs.Text", vec![0x08, 0x02]).with_id("fine");
    store_ok(&mut client, vec![not_utf8, boom, fine]).await;

    let text = scrape(agent.metrics_addr());
    assert_eq!(
        value(&text, "eventstash_filter_panics_total", &[("plugin", "faulty")]),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "eventstash_protobuf_fallbacks_total",
            &[("plugin", "decoder"), ("reason", "malformed")]
        ),
        1.0
    );
    let stored = read_documents(&agent.path("events/all.jsonl"));
    let flagged: Vec<_> = stored
        .iter()
        .filter(|d| d["invalidProto"] == true)
        .map(|d| d["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(flagged, ["bad-text", "boom"], "{stored:?}");
}

/// The status `grpc.health.v1` gives `service` on `addr`.
async fn service_status(addr: SocketAddr, service: &str) -> Result<ServingStatus, tonic::Code> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let answer = HealthClient::new(channel).check(request).await;
    let status = answer.map_err(|status| status.code())?.into_inner().status;
    Ok(ServingStatus::try_from(status).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_of_hfx_v1_event_stash_follows_the_agent() {
    let options = with_metrics("[[outputs]]\ntype = \"file\"\npath = \"out/%{index}.jsonl\"\n");
    let agent = tokio::task::block_in_place(|| Agent::start(options));
    let service = "hfx.v1.EventStash";
    assert_eq!(service_status(agent.addr, service).await, Ok(ServingStatus::Serving));
    assert_eq!(service_status(agent.addr, "").await, Ok(ServingStatus::Serving));
    assert_eq!(
        service_status(agent.addr, "hfx.v1.Nothing").await,
        Err(tonic::Code::NotFound)
    );

    // The output fails for longer than `unhealthy_after_ms`: not serving.
    std::fs::write(agent.path("out"), "blocker").unwrap();
    let mut client = agent.client().await;
    let failed = store(&mut client, vec![json_event("h-", 0, "k", "1")]).await;
    assert_eq!(failed.unwrap_err().code(), tonic::Code::Unavailable);
    wait_for_status(agent.addr, service, ServingStatus::NotServing).await;
    assert_eq!(service_status(agent.addr, "").await, Ok(ServingStatus::NotServing));

    // It recovers: serving again.
    std::fs::remove_file(agent.path("out")).unwrap();
    store_ok(&mut client, vec![json_event("h-", 1, "k", "1")]).await;
    wait_for_status(agent.addr, service, ServingStatus::Serving).await;
}

async fn wait_for_status(addr: SocketAddr, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = service_status(addr, service).await;
        if status == Ok(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{service} is {status:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
