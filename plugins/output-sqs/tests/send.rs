//! The SQS output against a real SQS-protocol server: moto, whose URL
//! `tests/run` exports as `EVENTSTASH_TEST_SQS_URL` (these tests fail
//! without it). Each test sends to its own queue. Throttling and failed
//! entries come from the proxy in `support/proxy.rs`.

mod support;

use std::time::{Duration, Instant};

use eventstash_plugin_api::{Output, OutputBatch};
use serde_json::json;
use support::proxy::{Fault, FaultProxy};
use support::{client, config, create_queue, drain_queue, event, moto_url, output, unique_queue};

fn events(prefix: &str, count: usize) -> Vec<eventstash_plugin_api::Event> {
    (0..count)
        .map(|n| {
            event(
                "contact.AddressBook",
                &format!("{prefix}{n}"),
                &format!(r#"{{"n":{n}}}"#),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_as_its_document_with_kind_format_and_id_attributes() {
    let url = moto_url();
    let sqs = client(&url);
    let name = unique_queue("documents");
    let queue_url = create_queue(&sqs, &name).await;
    let (output, _) = output(config(&url, &name, json!({})));
    let sent = events("doc-", 300);

    let started = Instant::now();
    for batch in sent.chunks(100) {
        output.write(OutputBatch::from(batch.to_vec())).await.unwrap();
    }
    println!(
        "sqs output → moto: 300 events in {:.2?} (10 requests of 10 in flight)",
        started.elapsed()
    );

    let received = drain_queue(&sqs, &queue_url).await;
    assert_eq!(received.len(), sent.len());
    for event in &sent {
        let message = &received[&event.id];
        assert_eq!(message.body(), Some(serde_json::to_string(event).unwrap().as_str()));
        let attributes = message.message_attributes().unwrap();
        assert_eq!(attributes["kind"].string_value(), Some("contact.AddressBook"));
        assert_eq!(attributes["format"].string_value(), Some("JSON"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_queue_gets_the_group_template_and_the_event_id_for_deduplication() {
    let url = moto_url();
    let sqs = client(&url);
    let name = format!("{}.fifo", unique_queue("fifo"));
    let queue_url = create_queue(&sqs, &name).await;
    let (output, _) = output(config(
        &url,
        &queue_url,
        json!({"message_group_id": "group-%{[data][n]}"}),
    ));
    let sent = events("fifo-", 20);
    output.write(OutputBatch::from(sent.clone())).await.unwrap();
    // Sent again within SQS's deduplication window: stored once.
    output.write(OutputBatch::from(sent.clone())).await.unwrap();

    let mut seen = Vec::new();
    loop {
        let page = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let Some(messages) = page.messages.filter(|m| !m.is_empty()) else {
            break;
        };
        for message in messages {
            let system = message.attributes().unwrap();
            use aws_sdk_sqs::types::MessageSystemAttributeName as A;
            seen.push((
                system[&A::MessageGroupId].clone(),
                system[&A::MessageDeduplicationId].clone(),
            ));
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    seen.sort();
    let mut expected: Vec<_> = (0..20).map(|n| (format!("group-{n}"), format!("fifo-{n}"))).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_and_failed_entries_are_retried_until_every_event_is_in_the_queue() {
    let url = moto_url();
    let sqs = client(&url);
    let name = unique_queue("faults");
    let queue_url = create_queue(&sqs, &name).await;
    let proxy = FaultProxy::start(&url, vec![Fault::Throttle, Fault::FailHalf, Fault::Pass], None).await;
    let (output, _) = output(config(&proxy.url, &queue_url, json!({"max_batches_in_flight": 4})));
    let sent = events("retry-", 200);
    output.write(OutputBatch::from(sent.clone())).await.unwrap();

    assert!(FaultProxy::count(&proxy.stats.throttled_calls) > 0);
    assert!(FaultProxy::count(&proxy.stats.failed_entries) > 0);
    let received = drain_queue(&sqs, &queue_url).await;
    // Failed entries were sent again alone: every event once, none twice.
    assert_eq!(received.len(), sent.len());
    let total = (FaultProxy::count(&proxy.stats.batch_calls)) as f64;
    assert!(total > 20.0, "{total} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sqs_refuses_or_too_large_for_the_queue_go_to_the_dead_letter_file() {
    let url = moto_url();
    let sqs = client(&url);
    let name = unique_queue("refused");
    let queue_url = create_queue(&sqs, &name).await;
    let dir = tempfile::tempdir().unwrap();
    let dead_letters = dir.path().join("dlq/sqs.jsonl");
    let proxy = FaultProxy::start(&url, vec![Fault::Pass], Some("POISON")).await;
    let (output, ctx) = output(config(
        &proxy.url,
        &queue_url,
        json!({"max_message_bytes": "2KiB", "dead_letter_path": dead_letters.to_str().unwrap()}),
    ));
    let mut sent = events("ok-", 30);
    sent.push(event(
        "k",
        "too-large",
        &format!(r#"{{"blob":"{}"}}"#, "x".repeat(3000)),
    ));
    sent.push(event("k", "poison", r#"{"text":"POISON"}"#));
    output.write(OutputBatch::from(sent)).await.unwrap();

    let received = drain_queue(&sqs, &queue_url).await;
    assert_eq!(received.len(), 30);
    let text = std::fs::read_to_string(&dead_letters).unwrap();
    let letters: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(letters.len(), 2, "{text}");
    let reason = |id: &str| {
        letters
            .iter()
            .find(|letter| letter["event"]["id"] == id)
            .map(|letter| letter["reason"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert!(
        reason("too-large").contains("over the 2048-byte limit"),
        "{}",
        reason("too-large")
    );
    assert!(
        reason("poison").contains("InvalidMessageContents"),
        "{}",
        reason("poison")
    );
    assert_eq!(letters[0]["output"], "sqs#0");
    assert_eq!(ctx.health.snapshot().failing_since, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_or_a_missing_queue_holds_the_events_until_they_can_be_sent() {
    let url = moto_url();
    let sqs = client(&url);
    let name = unique_queue("late");
    // Nothing listens on the endpoint yet, and the queue does not exist.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (output, ctx) = output(config(&format!("http://{port}"), &name, json!({})));
    let write = tokio::spawn(async move { output.write(OutputBatch::from(events("late-", 25))).await });

    let health = ctx.health.clone();
    let wait_for = |needle: &'static str| {
        let health = health.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let error = health.snapshot().last_error.unwrap_or_default();
                if error.contains(needle) {
                    return error;
                }
                assert!(Instant::now() < deadline, "health never said {needle:?}: {error:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("cannot find sqs queue").await;
    assert!(!write.is_finished());

    let _proxy = FaultProxy::start_at(port, &url, vec![Fault::Pass], None).await;
    let error = wait_for("does not exist").await;
    assert!(error.contains(&name) && error.contains("queue_url"), "{error}");
    assert!(!write.is_finished());

    let queue_url = create_queue(&sqs, &name).await;
    tokio::time::timeout(Duration::from_secs(15), write)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ctx.health.snapshot().failing_since, None);
    assert_eq!(drain_queue(&sqs, &queue_url).await.len(), 25);
}
