//! The SQS input against a real SQS-protocol server (moto, from
//! `EVENTSTASH_TEST_SQS_URL`): messages are deleted only once the
//! pipeline says their events are stored, kept hidden while it works,
//! left to come back when it fails, released at shutdown, and not received
//! at all while the pipeline is full.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use support::{client, config, counts, gateway_messages, moto_url, queue_with, run, unique_queue, wait_for_counts};

fn ids(batches: &[eventstash_plugin_api::EventBatch]) -> BTreeSet<String> {
    batches
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_deleted_only_once_their_events_are_stored() {
    let url = moto_url();
    let sqs = client(&url);
    let queue = queue_with(&sqs, &unique_queue("delete"), &gateway_messages("g-", 45)).await;
    let mut input = run(config(&url, &queue, json!({"pollers": 3})), false);

    // Three pollers receive at once, and SQS hands a message out at least
    // once (moto's concurrent receives sometimes twice): take batches until
    // every message has come, whatever came twice.
    let mut batches = Vec::new();
    while ids(&batches).len() < 45 {
        batches.push(input.next_batch().await);
    }
    let expected: BTreeSet<String> = (0..45).map(|n| format!("g-{n}")).collect();
    assert_eq!(ids(&batches), expected);
    assert!(batches.iter().all(|batch| batch.events.len() <= 10));
    assert_eq!(batches[0].events[0].kind, "MICROSERVICE_REQUEST");
    // Received, not stored: hidden, not deleted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counts(&sqs, &queue).await, (0, 45));

    for batch in batches {
        batch.ack.delivered();
    }
    wait_for_counts(&sqs, &queue, (0, 0), Duration::from_secs(10)).await;
    input.shutdown.cancel();
    input.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_is_extended_while_the_outputs_work_and_failures_come_back() {
    let url = moto_url();
    let sqs = client(&url);
    let queue = queue_with(&sqs, &unique_queue("extend"), &gateway_messages("v-", 10)).await;
    let mut input = run(
        config(&url, &queue, json!({"pollers": 1, "visibility_timeout_seconds": 5})),
        false,
    );
    let held = input.take_events(10).await;

    // Past the 5 s visibility timeout, still hidden: nobody else gets them.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(counts(&sqs, &queue).await, (0, 10));
    assert!(input.batches.try_recv().is_err(), "a held message was handed out again");

    // Not stored: they come back once the timeout ends, to this input too.
    for batch in held {
        batch.ack.failed("disk full");
    }
    let again = input.take_events(10).await;
    assert_eq!(ids(&again), (0..10).map(|n| format!("v-{n}")).collect());
    for batch in again {
        batch.ack.delivered();
    }
    wait_for_counts(&sqs, &queue, (0, 0), Duration::from_secs(10)).await;
    input.shutdown.cancel();
    input.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deletes_what_was_stored_and_releases_the_rest_at_once() {
    let url = moto_url();
    let sqs = client(&url);
    let queue = queue_with(&sqs, &unique_queue("drain"), &gateway_messages("d-", 20)).await;
    let mut input = run(config(&url, &queue, json!({"pollers": 1, "max_messages": 10})), false);
    let mut held = input.take_events(20).await;
    let unstored = held.split_off(1);
    let unstored_ids = ids(&unstored);

    input.shutdown.cancel();
    // The drain: one batch is stored, the others are dropped unstored.
    for batch in held {
        batch.ack.delivered();
    }
    drop(unstored);
    tokio::time::timeout(Duration::from_secs(10), input.task)
        .await
        .expect("the input finished its drain")
        .unwrap()
        .unwrap();
    // Released with visibility 0: visible again at once, not after 60 s.
    let (visible, hidden) = counts(&sqs, &queue).await;
    assert_eq!((visible, hidden), (unstored_ids.len(), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_stops_the_polling() {
    let url = moto_url();
    let sqs = client(&url);
    let queue = queue_with(&sqs, &unique_queue("full"), &gateway_messages("f-", 100)).await;
    let input = run(config(&url, &queue, json!({"pollers": 2})), true);

    tokio::time::sleep(Duration::from_secs(2)).await;
    // One receive (of up to 10) per poller waits for the pipeline; the rest
    // stays queued. A standard queue may hand one message to both receives
    // (at least once: moto did, once, under a loaded test run), so the two
    // receives hide at most 20 messages, not always exactly 20.
    let (visible, hidden) = counts(&sqs, &queue).await;
    assert_eq!(visible + hidden, 100);
    assert!((10..=20).contains(&hidden), "{hidden} messages received");
    // And nothing more is received while the pipeline stays full.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(counts(&sqs, &queue).await, (visible, hidden), "the polling went on");

    input.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), input.task)
        .await
        .expect("the input stopped")
        .unwrap()
        .unwrap();
    assert_eq!(counts(&sqs, &queue).await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_stops_the_input_with_its_name() {
    let url = moto_url();
    let name = unique_queue("missing");
    let input = run(config(&url, &name, json!({})), false);
    let error = tokio::time::timeout(Duration::from_secs(10), input.task)
        .await
        .expect("the input gave up")
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(error.contains(&name) && error.contains("does not exist"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_retried_until_shutdown() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let input = run(config(&format!("http://{port}"), "event-queue", json!({})), false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!input.task.is_finished(), "an outage must not stop the agent");
    input.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), input.task)
        .await
        .expect("the input stopped")
        .unwrap()
        .unwrap();
}
