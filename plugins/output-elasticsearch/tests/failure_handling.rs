//! Failures a real cluster produces under load, injected by the fault proxy
//! (`support::fault_proxy`) in front of osmem-server: nothing may be lost or
//! duplicated, rejected events must reach the dead-letter file with their
//! reason, one event the cluster can never take must not fail the others of
//! its batch, and `write` may return only once every event has its outcome.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventstash_plugin_api::{Event, Format, Output, OutputBatch};
use serde_json::json;
use support::fault_proxy::FaultProxy;
use support::{Server, dead_letters, events, new_year_2021, output, server_url, unique, write_all};

#[tokio::test]
async fn a_storm_of_throttled_items_loses_and_duplicates_nothing() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("storm");
    // Short waits: the storm lasts 40 rounds, each waiting its backoff.
    let options = json!({"index": index, "retry_max_backoff_ms": 100});
    let under_test = output(&[proxy.url()], options);
    // Every second item of the next 40 requests is throttled (not stored):
    // only those may be sent again, until each is stored once.
    proxy.faults(|f| {
        f.throttle_rounds = 40;
        f.throttle_every = 2;
    });
    write_all(&under_test.output, events("kind", "s", 3_000, new_year_2021()), 500).await;

    let stats = proxy.stats();
    let throttled = stats.throttled_items.load(Ordering::Relaxed);
    assert!(throttled >= 1_000, "only {throttled} items were throttled");
    assert_eq!(server.count(&index).await, 3_000);
    assert!(dead_letters(&under_test.dead_letter_path).is_empty());
    // `_count` cannot show a duplicate (`_id` makes a resent item overwrite
    // itself), so the proxy's per-id counts must: every item reached the
    // server exactly once, and was sent again exactly as often as it was
    // throttled, so a stored item was never resent.
    let items = stats.item_counts();
    assert_eq!(items.len(), 3_000);
    let mut resent = 0;
    for n in 0..3_000 {
        let id = format!("s-{n}");
        let counts = items[&id];
        assert_eq!(counts.forwarded, 1, "{id} reached the server {counts:?}");
        assert_eq!(counts.received, 1 + counts.throttled, "{id}: {counts:?}");
        resent += counts.received - 1;
    }
    assert_eq!(resent, throttled, "only the throttled items were sent again");
}

#[tokio::test]
async fn whole_requests_answered_429_or_503_are_sent_again() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("whole");
    let under_test = output(&[proxy.url()], json!({"index": index}));
    proxy.faults(|f| f.fail_bulk.extend([503, 429, 503, 502, 429]));
    write_all(&under_test.output, events("kind", "w", 1_000, new_year_2021()), 250).await;

    assert_eq!(proxy.stats().failed_requests.load(Ordering::Relaxed), 5);
    assert_eq!(server.count(&index).await, 1_000);
}

#[tokio::test]
async fn a_refused_bulk_request_fails_the_batch() {
    let proxy = FaultProxy::start(&server_url()).await;
    let under_test = output(&[proxy.url()], json!({"index": unique("refused")}));
    proxy.faults(|f| f.fail_bulk.push_back(400));
    let error = under_test
        .output
        .write(OutputBatch::from(events("kind", "r", 10, new_year_2021())))
        .await
        .expect_err("a 400 for the whole request cannot be fixed by sending it again");
    let message = error.to_string();
    assert!(message.contains("400"), "{message}");
    assert!(dead_letters(&under_test.dead_letter_path).is_empty());
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_split_in_halves_until_each_part_fits() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("split");
    let under_test = output(&[proxy.url()], json!({"index": index}));
    // About 200 bytes per event: 1,000 events need ten or more requests.
    let limit = 20_000;
    proxy.faults(|f| f.max_bulk_bytes = Some(limit));

    let batch = OutputBatch::from(events("kind", "p", 1_000, new_year_2021()));
    under_test
        .output
        .write(batch)
        .await
        .expect("a 413 is answered by smaller requests, not by failing the batch");

    assert_eq!(server.count(&index).await, 1_000);
    assert!(dead_letters(&under_test.dead_letter_path).is_empty());
    let stats = proxy.stats();
    assert!(stats.too_large_requests.load(Ordering::Relaxed) > 0);
    assert!(stats.largest_forwarded.load(Ordering::Relaxed) <= limit);
}

#[tokio::test]
async fn an_event_over_the_size_limit_on_its_own_is_dead_lettered_and_its_batch_stored() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("huge");
    let under_test = output(&[proxy.url()], json!({"index": index}));
    proxy.faults(|f| f.max_bulk_bytes = Some(50_000));
    let mut batch = events("kind", "h", 40, new_year_2021());
    let huge = format!(r#"{{"blob":"{}"}}"#, "x".repeat(60_000));
    batch[13] = Event::new(
        Format::Json,
        Bytes::from(huge),
        "kind".into(),
        "huge-1".into(),
        new_year_2021(),
    );

    under_test.output.write(OutputBatch::from(batch)).await.unwrap();

    assert_eq!(server.count(&index).await, 39);
    assert!(server.document(&index, "huge-1").await.is_none());
    let letters = dead_letters(&under_test.dead_letter_path);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["event"]["id"], "huge-1");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("413"), "{reason}");
}

#[tokio::test]
async fn a_document_id_elasticsearch_would_refuse_the_whole_request_for_is_dead_lettered_alone() {
    let server = Server::connect();
    let index = unique("longid");
    let under_test = output(&[&server_url()], json!({"index": index}));
    // Elasticsearch fails a whole bulk request with a 400
    // (action_request_validation_exception) when one `_id` is over 512 bytes.
    let mut batch = events("kind", "i", 10, new_year_2021());
    let long_id = "i".repeat(513);
    batch[4] = Event::new(
        Format::Json,
        Bytes::from_static(b"{}"),
        "kind".into(),
        long_id.clone(),
        new_year_2021(),
    );

    under_test.output.write(OutputBatch::from(batch)).await.unwrap();

    assert_eq!(server.count(&index).await, 9);
    let letters = dead_letters(&under_test.dead_letter_path);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["event"]["id"], long_id.as_str());
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("512"), "{reason}");

    // A batch of nothing but such events sends no request at all.
    let alone = Event::new(
        Format::Json,
        Bytes::from_static(b"{}"),
        "kind".into(),
        "j".repeat(600),
        new_year_2021(),
    );
    under_test.output.write(OutputBatch::from(vec![alone])).await.unwrap();
    assert_eq!(dead_letters(&under_test.dead_letter_path).len(), 2);
}

#[tokio::test]
async fn an_unreachable_cluster_at_start_is_waited_for_template_included() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("late");
    let dir = tempfile::tempdir().unwrap();
    let template_name = unique("late-tpl");
    let template = support::template_file(
        dir.path(),
        &json!({"index_patterns": [format!("{index}*")], "mappings": {}}),
    );
    let under_test = output(
        &[proxy.url()],
        json!({"index": index, "template": template, "template_name": template_name}),
    );
    let outage = Duration::from_secs(3);
    proxy.go_down_for(outage).await;
    let started = Instant::now();
    write_all(&under_test.output, events("kind", "l", 200, new_year_2021()), 200).await;

    assert!(started.elapsed() >= outage - Duration::from_millis(200));
    assert_eq!(server.count(&index).await, 200);
    let (status, _) = server
        .request(
            elasticsearch::http::Method::Get,
            &format!("_template/{template_name}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "the template was not installed after the outage");
}

#[tokio::test]
async fn faults_together_lose_nothing_and_write_returns_after_every_outcome() {
    let server = Server::connect();
    let proxy = FaultProxy::start(&server_url()).await;
    let index = unique("together");
    let max_backoff = Duration::from_millis(500);
    let options = json!({"index": index, "retry_max_backoff_ms": max_backoff.as_millis() as u64});
    let under_test = output(&[proxy.url()], options);
    let total = 4_000;
    let rejected = ["t-17", "t-2500"];
    proxy.faults(|f| {
        f.throttle_rounds = 10;
        f.throttle_every = 4;
        f.fail_bulk.extend([503, 429]);
        f.reject_ids.extend(rejected.iter().map(|id| id.to_string()));
    });
    let all = events("kind", "t", total, new_year_2021());
    let halves: Vec<Vec<_>> = all.chunks(total / 2).map(<[_]>::to_vec).collect();

    // The first half is written with faults; an outage hits as soon as the
    // second half's first request is seen, so its later writes meet it.
    write_all(&under_test.output, halves[0].clone(), 500).await;
    let before = proxy.stats().bulk_requests.load(Ordering::Relaxed);
    let second = write_all(&under_test.output, halves[1].clone(), 500);
    let outage = Duration::from_secs(5);
    let go_down = async {
        while proxy.stats().bulk_requests.load(Ordering::Relaxed) == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        proxy.go_down_for(outage).await;
        Instant::now()
    };
    let ((), down_at) = tokio::join!(second, go_down);
    assert!(
        down_at.elapsed() >= outage - Duration::from_millis(200),
        "the outage hit no write"
    );

    // `write` has returned: every outcome must already be final.
    let requests = proxy.stats().bulk_requests.load(Ordering::Relaxed);
    let letters = dead_letters(&under_test.dead_letter_path);
    let mut lettered: Vec<&str> = letters
        .iter()
        .map(|letter| letter["event"]["id"].as_str().unwrap())
        .collect();
    lettered.sort();
    assert_eq!(lettered, rejected);
    for letter in &letters {
        let reason = letter["reason"].as_str().unwrap();
        assert!(reason.starts_with("400 mapper_parsing_exception"), "{reason}");
    }
    assert_eq!(server.count(&index).await, (total - rejected.len()) as u64);
    for id in rejected {
        assert!(server.document(&index, id).await.is_none(), "{id} was stored");
    }
    let stats = proxy.stats();
    assert!(stats.throttled_items.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.failed_requests.load(Ordering::Relaxed), 2);
    assert_only_failed_items_were_resent(&stats.item_counts(), total, &rejected);
    // Nothing is still being retried in the background: a pending retry
    // waits at most `max_backoff`, so one would have been sent by now.
    tokio::time::sleep(max_backoff + Duration::from_secs(1)).await;
    assert_eq!(proxy.stats().bulk_requests.load(Ordering::Relaxed), requests);
}

/// Checks the proxy's per-id counts after `faults_together…`: every send of
/// an item is accounted for (forwarded, throttled, refused, or in a whole
/// request failed with 429/5xx); a refused item is never sent again; a
/// stored item is not sent again, except for the items of the one request
/// the outage cut off after it had been forwarded (the output never got its
/// answer, so it rightly sends them again), all in the second half.
fn assert_only_failed_items_were_resent(
    items: &std::collections::HashMap<String, support::fault_proxy::ItemCounts>,
    total: usize,
    rejected: &[&str],
) {
    assert_eq!(items.len(), total);
    let mut stored_twice = Vec::new();
    for (id, counts) in items {
        let accounted = counts.forwarded + counts.throttled + counts.refused + counts.in_failed_requests;
        assert_eq!(counts.received, accounted, "{id}: {counts:?}");
        if rejected.contains(&id.as_str()) {
            assert_eq!(
                (counts.refused, counts.forwarded, counts.throttled),
                (1, 0, 0),
                "{id}: {counts:?}"
            );
        } else {
            assert!(counts.forwarded >= 1, "{id} never reached the server: {counts:?}");
            let n: usize = id.trim_start_matches("t-").parse().unwrap();
            if n < total / 2 {
                // The first half met no outage.
                assert_eq!(counts.forwarded, 1, "{id}: {counts:?}");
            } else if counts.forwarded > 1 {
                stored_twice.push(id.clone());
            }
        }
    }
    assert!(
        stored_twice.len() <= 500,
        "{} items reached the server twice, more than the one request an outage can cut: {stored_twice:?}",
        stored_twice.len()
    );
}
