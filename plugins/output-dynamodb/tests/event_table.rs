//! The DynamoDB output against a real DynamoDB-protocol server: moto, whose
//! URL `tests/run` exports as `EVENTSTASH_TEST_DYNAMODB_URL` (these tests
//! fail without it). Each test writes its own table. Throttling, unprocessed
//! items and refused requests come from the proxy in `support/proxy.rs`.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, BillingMode, KeyType};
use eventstash_plugin_api::{Output, OutputBatch};
use serde_json::{Value, json};
use support::proxy::{Fault, FaultProxy};
use support::{client, config, count_in_index, count_items, event, moto_url, output, unique_table};

const KINDS: [&str; 4] = [
    "contact.AddressBook",
    "billing.Invoice",
    "billing.Payment",
    "audit.Login",
];
const SOURCES: [&str; 5] = ["web", "mobile", "batch", "partner", "admin"];

fn test_event(n: usize) -> eventstash_plugin_api::Event {
    // Written as text: the number is wider than any Rust integer serde_json
    // takes, and the output must keep it exactly.
    let data = format!(
        concat!(
            r#"{{"requestId":"req-{n}","source":"{source}","n":{n},"#,
            r#""big":12345678901234567890123,"#,
            r#""payload":{{"name":"Zoë","tags":["a","b"],"empty":"","none":null}}}}"#
        ),
        n = n,
        source = SOURCES[n % SOURCES.len()]
    );
    support::event_text(KINDS[n % KINDS.len()], &format!("evt-{n}"), &data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_become_ten_thousand_items_readable_by_type_and_source() {
    let url = moto_url();
    let table = unique_table("ten-thousand");
    let output = output(config(
        &url,
        &table,
        json!({"create_table": true, "source": "%{[data][source]}", "max_batches_in_flight": 8}),
    ));
    let events: Vec<_> = (0..10_000).map(test_event).collect();

    let started = Instant::now();
    for batch in events.chunks(1000) {
        output.write(OutputBatch::from(batch.to_vec())).await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "dynamodb output → moto: 10000 events in {elapsed:.2?} = {:.0} events/s \
         (batches of 1000, 8 requests of 25 in flight)",
        10_000.0 / elapsed.as_secs_f64()
    );

    let reader = client(&url);
    assert_eq!(count_items(&reader, &table).await, 10_000);
    let mut by_type = 0;
    for kind in KINDS {
        let count = count_in_index(&reader, &table, "Type-Index", "Type", kind).await;
        assert_eq!(count, 2_500, "{kind}");
        by_type += count;
    }
    assert_eq!(by_type, 10_000);
    let mut by_source = 0;
    for source in SOURCES {
        let count = count_in_index(&reader, &table, "Source-Index", "Source", source).await;
        assert_eq!(count, 2_000, "{source}");
        by_source += count;
    }
    assert_eq!(by_source, 10_000);
}

#[tokio::test]
async fn items_hold_the_event_with_native_types_and_exact_numbers() {
    let url = moto_url();
    let table = unique_table("item-shape");
    let output = output(config(&url, &table, json!({"create_table": true})));
    let data = concat!(
        r#"{"requestId":"r-1","big":12345678901234567890123,"fine":1.0000000000000000001,"#,
        r#""text":"日本 😀","empty":"","list":[1,true,null,{"x":[]}]}"#
    );
    let event = support::event_text("contact.AddressBook", "e-1", data);
    let timestamp = event.timestamp();
    output.write(OutputBatch::from(vec![event])).await.unwrap();

    let item = client(&url)
        .get_item()
        .table_name(&table)
        .key("RequestId", AttributeValue::S("e-1".into()))
        .key("Timestamp", AttributeValue::S(timestamp))
        .send()
        .await
        .unwrap()
        .item
        .expect("the item is stored under (id, @timestamp)");
    let s = |text: &str| AttributeValue::S(text.to_owned());
    assert_eq!(item["Id"], s("e-1"));
    assert_eq!(item["Type"], s("contact.AddressBook"));
    assert_eq!(item["Source"], s("tests"));
    let data = item["Data"].as_m().unwrap();
    assert_eq!(data["big"], AttributeValue::N("12345678901234567890123".into()));
    assert_eq!(data["fine"], AttributeValue::N("1.0000000000000000001".into()));
    assert_eq!(data["text"], s("日本 😀"));
    assert_eq!(data["empty"], s(""));
    let list = data["list"].as_l().unwrap();
    assert_eq!(list[0], AttributeValue::N("1".into()));
    assert_eq!(list[1], AttributeValue::Bool(true));
    assert_eq!(list[2], AttributeValue::Null(true));
    assert_eq!(list[3].as_m().unwrap()["x"], AttributeValue::L(vec![]));
}

#[tokio::test]
async fn create_table_makes_the_table_with_both_indexes_on_demand() {
    let url = moto_url();
    let table = unique_table("create");
    let output = output(config(&url, &table, json!({"create_table": true})));
    output.write(OutputBatch::from(vec![test_event(1)])).await.unwrap();

    let described = client(&url)
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let key = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| {
        schema
            .iter()
            .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        key(described.key_schema()),
        [
            ("RequestId".to_owned(), KeyType::Hash),
            ("Timestamp".to_owned(), KeyType::Range)
        ]
    );
    let mut indexes: Vec<_> = described
        .global_secondary_indexes()
        .iter()
        .map(|index| (index.index_name().unwrap().to_owned(), key(index.key_schema())))
        .collect();
    indexes.sort();
    assert_eq!(
        indexes,
        [
            (
                "Source-Index".to_owned(),
                vec![
                    ("Source".to_owned(), KeyType::Hash),
                    ("Timestamp".to_owned(), KeyType::Range)
                ]
            ),
            (
                "Type-Index".to_owned(),
                vec![
                    ("Type".to_owned(), KeyType::Hash),
                    ("Timestamp".to_owned(), KeyType::Range)
                ]
            ),
        ]
    );
    assert_eq!(
        described
            .billing_mode_summary()
            .and_then(|summary| summary.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
}

#[tokio::test]
async fn throttled_and_unprocessed_batches_are_retried_until_every_event_is_stored() {
    let url = moto_url();
    let table = unique_table("throttled");
    let proxy = FaultProxy::start(
        &url,
        vec![Fault::Throttle, Fault::Unprocessed, Fault::Pass, Fault::Unprocessed],
        None,
    )
    .await;
    let output = output(config(&proxy.url, &table, json!({"create_table": true})));
    let events: Vec<_> = (0..1_000).map(test_event).collect();

    for batch in events.chunks(250) {
        output.write(OutputBatch::from(batch.to_vec())).await.unwrap();
    }

    // `write` returned: everything must be in the table already.
    assert_eq!(count_items(&client(&url), &table).await, 1_000);
    let stats = &proxy.stats;
    assert!(FaultProxy::count(&stats.throttled_calls) > 0);
    assert!(FaultProxy::count(&stats.unprocessed_items) > 0);
    println!(
        "proxy: {} BatchWriteItem calls, {} throttled, {} items handed back unprocessed",
        FaultProxy::count(&stats.batch_calls),
        FaultProxy::count(&stats.throttled_calls),
        FaultProxy::count(&stats.unprocessed_items)
    );
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_retried_until_every_event_is_stored() {
    let url = moto_url();
    let table = unique_table("outage");
    let proxy = FaultProxy::start(
        &url,
        vec![
            Fault::ServerError,
            Fault::Disconnect,
            Fault::Pass,
            Fault::Disconnect,
            Fault::ServerError,
        ],
        None,
    )
    .await;
    let dead_letters = tempfile::tempdir().unwrap();
    let dead_letter_path = dead_letters.path().join("dead.jsonl");
    let extra = json!({"create_table": true, "dead_letter_path": dead_letter_path});
    let output = output(config(&proxy.url, &table, extra));
    let events: Vec<_> = (0..500).map(test_event).collect();

    for batch in events.chunks(100) {
        output.write(OutputBatch::from(batch.to_vec())).await.unwrap();
    }

    // `write` returned: everything is stored, nothing was given up on.
    assert_eq!(count_items(&client(&url), &table).await, 500);
    assert!(!dead_letter_path.exists(), "a transient failure was dead-lettered");
    let stats = &proxy.stats;
    let (errors, drops) = (
        FaultProxy::count(&stats.server_errors),
        FaultProxy::count(&stats.disconnects),
    );
    // 20 BatchWriteItem calls at least (25 items each), 4 in 5 failing.
    assert!(
        errors >= 8 && drops >= 8,
        "{errors} 500s and {drops} dropped connections"
    );
}

#[tokio::test]
async fn an_event_over_400_kb_goes_to_the_dead_letter_file_with_the_reason() {
    let url = moto_url();
    let table = unique_table("too-large");
    let dir = tempfile::tempdir().unwrap();
    let dead_letters = dir.path().join("dlq/dynamodb.jsonl");
    let output = output(config(
        &url,
        &table,
        json!({"create_table": true, "dead_letter_path": dead_letters}),
    ));
    let large = event("blob.Upload", "large-1", &json!({"blob": "x".repeat(500 * 1024)}));
    let events = vec![test_event(1), large, test_event(2)];

    output.write(OutputBatch::from(events)).await.unwrap();

    assert_eq!(count_items(&client(&url), &table).await, 2);
    let text = std::fs::read_to_string(&dead_letters).unwrap();
    let letters: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["output"], "dynamodb#0");
    assert_eq!(letters[0]["event"]["id"], "large-1");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("over DynamoDB's 409600-byte (400 KB) item limit"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_item_dynamodb_refuses_is_dead_lettered_alone_and_its_batch_is_stored() {
    let url = moto_url();
    let table = unique_table("refused");
    let proxy = FaultProxy::start(&url, vec![Fault::Pass], Some("poison-pill")).await;
    let dir = tempfile::tempdir().unwrap();
    let dead_letters = dir.path().join("dynamodb.jsonl");
    let output = output(config(
        &proxy.url,
        &table,
        json!({"create_table": true, "dead_letter_path": dead_letters}),
    ));
    let mut events: Vec<_> = (0..40).map(test_event).collect();
    events[7] = event("bad.Kind", "poison-pill", &json!({"requestId": "p"}));

    output.write(OutputBatch::from(events)).await.unwrap();

    assert_eq!(count_items(&client(&url), &table).await, 39);
    let text = std::fs::read_to_string(&dead_letters).unwrap();
    let letters: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 1, "{text}");
    assert_eq!(letters[0]["event"]["id"], "poison-pill");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("ValidationException"), "{reason}");
}

#[tokio::test]
async fn an_event_whose_key_renders_empty_is_dead_lettered_alone_and_its_batch_stored() {
    let url = moto_url();
    let table = unique_table("empty-key");
    let dir = tempfile::tempdir().unwrap();
    let dead_letters = dir.path().join("dynamodb.jsonl");
    let output = output(config(
        &url,
        &table,
        json!({
            "create_table": true,
            "dead_letter_path": dead_letters,
            "partition_key": {"name": "RequestId", "value": "%{[data][requestId]}"},
        }),
    ));
    let mut events: Vec<_> = (0..30).map(test_event).collect();
    // moto, like DynamoDB, refuses a whole BatchWriteItem for one empty key.
    events[3] = event("bad.Key", "empty-key", &json!({"requestId": ""}));

    output.write(OutputBatch::from(events)).await.unwrap();

    assert_eq!(count_items(&client(&url), &table).await, 29);
    let text = std::fs::read_to_string(&dead_letters).unwrap();
    let letters: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 1, "{text}");
    assert_eq!(letters[0]["event"]["id"], "empty-key");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("`RequestId` is empty"), "{reason}");
}

#[tokio::test]
async fn an_item_dynamodb_finds_invalid_is_found_by_sending_alone_and_dead_lettered() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, GlobalSecondaryIndex, KeySchemaElement, Projection, ProjectionType, ScalarAttributeType,
    };
    let url = moto_url();
    let table = unique_table("empty-index-key");
    let reader = client(&url);
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    // An operator's own index on an attribute the output fills from a
    // template: only DynamoDB (here moto) knows an empty value is invalid.
    let tenant_index = GlobalSecondaryIndex::builder()
        .index_name("Tenant-Index")
        .key_schema(key("Tenant", KeyType::Hash))
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()
        .unwrap();
    reader
        .create_table()
        .table_name(&table)
        .attribute_definitions(attribute("RequestId"))
        .attribute_definitions(attribute("Timestamp"))
        .attribute_definitions(attribute("Tenant"))
        .key_schema(key("RequestId", KeyType::Hash))
        .key_schema(key("Timestamp", KeyType::Range))
        .global_secondary_indexes(tenant_index)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dead_letters = dir.path().join("dynamodb.jsonl");
    let output = output(config(
        &url,
        &table,
        json!({
            "dead_letter_path": dead_letters,
            "partition_key": {"name": "RequestId", "value": "%{[data][requestId]}"},
            "attributes": {"Tenant": "%{[data][source]}"},
        }),
    ));
    let mut events: Vec<_> = (0..30).map(test_event).collect();
    events[11] = event("bad.Tenant", "no-tenant", &json!({"requestId": "r-x", "source": ""}));

    output.write(OutputBatch::from(events)).await.unwrap();

    assert_eq!(count_items(&reader, &table).await, 29);
    let text = std::fs::read_to_string(&dead_letters).unwrap();
    let letters: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 1, "{text}");
    assert_eq!(letters[0]["event"]["id"], "no-tenant");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.contains("ValidationException"), "{reason}");
    assert!(reason.contains("Tenant"), "{reason}");
}

#[tokio::test]
async fn a_missing_table_holds_the_write_until_it_exists() {
    let url = moto_url();
    let table = unique_table("missing");
    let output = output(config(&url, &table, json!({})));
    let write = output.write(OutputBatch::from(vec![test_event(1), test_event(2)]));
    tokio::pin!(write);

    let waited = tokio::time::timeout(Duration::from_millis(1500), &mut write).await;
    assert!(waited.is_err(), "write returned although the table is missing");

    // An operator creates the table; the waiting write then goes through.
    let creator = support::output(config(&url, &table, json!({"create_table": true})));
    creator.write(OutputBatch::from(vec![test_event(3)])).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .expect("write finishes once the table exists")
        .unwrap();
    assert_eq!(count_items(&client(&url), &table).await, 3);
}

#[tokio::test]
async fn a_table_keyed_differently_is_reported_and_not_written_to() {
    use aws_sdk_dynamodb::types::{AttributeDefinition, KeySchemaElement, ScalarAttributeType};
    let url = moto_url();
    let table = unique_table("wrong-key");
    let reader = client(&url);
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    reader
        .create_table()
        .table_name(&table)
        .attribute_definitions(attribute("RequestId", ScalarAttributeType::S))
        .attribute_definitions(attribute("Timestamp", ScalarAttributeType::N))
        .key_schema(key("RequestId", KeyType::Hash))
        .key_schema(key("Timestamp", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let context = eventstash_plugin_api::PluginContext::new("tests", "dynamodb#0");
    let output = config(&url, &table, json!({})).build(&context).unwrap();

    let write = output.write(OutputBatch::from(vec![test_event(1)]));
    let waited = tokio::time::timeout(Duration::from_millis(1500), write).await;

    assert!(waited.is_err(), "write returned although the table's key is wrong");
    let health = context.health.snapshot();
    assert!(health.failing_since.is_some());
    let problem = health.last_error.unwrap();
    assert!(
        problem.contains("keyed by `RequestId` (S) + `Timestamp` (N)"),
        "{problem}"
    );
    assert_eq!(count_items(&reader, &table).await, 0);
}
