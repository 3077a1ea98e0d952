//! End to end: a slow output fills its bounded queue — by events or by
//! bytes — and the producer is held back by HTTP/2 flow control: the
//! queues' gauges show them full while the producer takes no more events;
//! memory stays bounded, nothing is lost, and order is kept with several
//! filter workers.

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

/// The pipeline queue's and the stdout output queue's (events, bytes).
fn queue_gauges(agent: &Agent) -> [(f64, f64); 2] {
    let text = agent.metrics();
    ["pipeline", "output stdout#0"].map(|queue| queue_gauge(&text, queue))
}

/// Events read slowly once the producer is held, so that the queues' gauges
/// are sampled while the batches received after the stall pass through.
const PACED_EVENTS: usize = 2000;

/// Streams `events` events of 8 KiB at an agent whose stdout output nobody
/// reads, with the `queue` keys given; shows that a queue filled to its
/// bound (`full` says when the gauges count as full) and that the producer
/// was then held; then reads everything, the first [`PACED_EVENTS`]
/// slowly while sampling the gauges, and checks that neither queue's
/// events gauge ever passed `most_events` (if given), that nothing was lost
/// and memory stayed bounded. While the producer is held its stream's
/// 1 MiB window fills; the first room then takes all of it as one received
/// batch of about 126 events, which a smaller bound catches if that batch
/// is queued whole.
async fn stalled_output_holds_the_producer(
    queue: &str,
    events: usize,
    most_events: Option<f64>,
    full: impl Fn([(f64, f64); 2]) -> bool,
) {
    let total = events;
    let mut agent = Agent::start(stdout_pipeline(
        "",
        &format!("{queue}\n[metrics]\nbind = \"127.0.0.1:0\""),
    ));
    let stdout = agent.child.stdout.take().unwrap();

    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let payload = format!("\"{}\"", "x".repeat(PAYLOAD));
    let events = tokio_stream::iter(0..total).map(move |n| {
        counter.fetch_add(1, Ordering::Relaxed);
        json_event("bp-", n, "k", &payload)
    });
    let client = agent.client().await;
    let stream = tokio::spawn(async move { store_stream(&client, events).await });

    // Nobody reads: the queues fill to their bound, and then the producer
    // takes no more events, far short of the 160 MB it wants to send.
    wait_until("the queues to fill", Duration::from_secs(15), || {
        full(queue_gauges(&agent))
    });
    let held_at = wait_until_held(&sent);
    let gauges = queue_gauges(&agent);
    assert!(
        full(gauges),
        "the queues drained while the producer was held: {gauges:?}"
    );
    assert!(
        held_at < total / 4,
        "producer was not held back: {held_at} of {total} events taken"
    );
    let stalled_rss = agent.peak_rss_kib();

    // Now read everything: the first events slowly (pacing, not
    // synchronisation: 10 ms per 16 events), sampling the gauges meanwhile.
    let reader = std::thread::spawn(move || {
        let mut ids = HashSet::new();
        for line in BufReader::new(stdout).lines() {
            let document: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            ids.insert(document["id"].as_str().unwrap().to_owned());
            if ids.len() == total {
                break;
            }
            if most_events.is_some() && ids.len() < PACED_EVENTS && ids.len() % 16 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        ids
    });
    let mut most_seen = [0.0f64; 2];
    let mut samples = 0;
    while let Some(bound) = most_events
        && !reader.is_finished()
    {
        for (most, (taken, _)) in most_seen.iter_mut().zip(queue_gauges(&agent)) {
            *most = most.max(taken);
        }
        samples += 1;
        assert!(
            most_seen.iter().all(|&most| most <= bound),
            "a queue's events gauge passed {bound}: (pipeline, output) {most_seen:?}"
        );
    }
    assert!(
        most_events.is_none() || samples >= 20,
        "only {samples} samples of the gauges while reading"
    );
    let response = stream.await.unwrap().expect("stream acknowledged");
    assert!(response);
    let ids = reader.join().unwrap();
    assert_eq!(ids.len(), total, "every event came out");

    let peak_rss = agent.peak_rss_kib();
    println!(
        "{queue}: held after {held_at} events, queues (events, bytes) {gauges:?}; most events while reading {most_seen:?} in {samples} samples; peak RSS stalled {stalled_rss} KiB, overall {peak_rss} KiB"
    );
    // 20,000 events of 8 KiB are 160 MiB; a bounded agent holds a few MiB of them.
    assert!(peak_rss < 64 * 1024, "peak RSS {peak_rss} KiB: memory is not bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_output_fills_its_queue_and_holds_the_producer_losing_nothing() {
    // Queues of 100 events: the output's queue and the pipeline queue
    // behind it both fill.
    stalled_output_holds_the_producer("max_events = 100", EVENTS, None, |[pipeline, output]| {
        pipeline.0 >= 90.0 && output.0 >= 90.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_bounds_the_queues_and_holds_the_producer() {
    // 10,000 events of room but 256 KiB: about 30 of these 8 KiB events
    // fill a queue, so only the byte bound can be what holds the producer.
    // Each is larger than 8 KiB, so a queue holds at most 32, and its
    // events gauge shows at most 64: those and a part of at most 256 KiB
    // waiting for room (it takes its events' room first). A received batch
    // larger than 256 KiB queued whole — the 126-event batch after the
    // stall, were it not split — passes that.
    let most = (2 * 256 * 1024 / PAYLOAD) as f64;
    stalled_output_holds_the_producer("max_bytes = \"256KiB\"", 4000, Some(most), |[pipeline, output]| {
        let near_full = |bytes: f64| bytes >= 0.8 * 256.0 * 1024.0;
        near_full(pipeline.1) && near_full(output.1) && pipeline.0 < 200.0 && output.0 < 200.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_with_several_filter_workers() {
    // Four workers filter small batches at once; four producers stream
    // concurrently. Each producer's events must come out in its order.
    let config = FILE_PIPELINE.replace(
        "shutdown_timeout_ms = 10000",
        "shutdown_timeout_ms = 10000\nworkers = 4\nbatch_size = 7",
    ) + "\n[[filters]]\ntype = \"protobuf\"\nprotos = \"protos/**/*.proto\"\n";
    let mut options = AgentOptions::new(&config);
    let address_book = std::fs::read_to_string(repo_root().join("protos/examples/contact/addressbook.proto")).unwrap();
    options
        .files
        .push(("protos/contact/addressbook.proto".into(), address_book));
    let agent = Agent::start(options);
    let mut producers = Vec::new();
    for producer in 0..4 {
        let client = agent.client().await;
        producers.push(tokio::spawn(async move {
            let prefix = format!("w{producer}-");
            let events =
                tokio_stream::iter(0..500).map(move |n| json_event(&prefix, n, "k", &format!("{{\"n\":{n}}}")));
            store_stream(&client, events).await
        }));
    }
    for producer in producers {
        assert_eq!(producer.await.unwrap().ok(), Some(true));
    }
    let ids: Vec<String> = read_documents(&agent.path("events/k.jsonl"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2000);
    for producer in 0..4 {
        let prefix = format!("w{producer}-");
        let order: Vec<usize> = ids
            .iter()
            .filter_map(|id| id.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            order,
            (0..500).collect::<Vec<_>>(),
            "producer {producer}'s events out of order"
        );
    }
}
