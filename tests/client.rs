//! End to end: `eventstash-client` against the built binary — the batching
//! sender's flush, the resend-safety of refusals and outages, TLS with a
//! producer token through the builder, and typed appends to the event
//! store (over moto, `EVENTSTASH_TEST_DYNAMODB_URL`, started by tests/run).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use eventstash_client::{Append, BatchOptions, BatchingSender, Client, Event, ExpectedVersion};
use support::security::{ClientTls, TestCa, secure_file_pipeline, start_tls_agent, tls_files};
use support::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batching_sender_has_stored_every_event_when_flush_returns() {
    let agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let options = BatchOptions {
        max_events: 150,
        max_in_flight: 3,
        ..BatchOptions::default()
    };
    let sender = BatchingSender::new(agent.client().await, options);
    for n in 0..1_000 {
        let event = Event::json("client.Batch", &serde_json::json!({ "n": n }));
        sender.send(event.with_id(format!("b-{n}"))).await.unwrap();
    }
    sender.flush().await.unwrap();
    // Acknowledged means written: the file holds them all before close.
    let documents = read_documents(&agent.path("events/client-batch.jsonl"));
    let ids: HashSet<&str> = documents.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!((documents.len(), ids.len()), (1_000, 1_000));
    sender.close().await.unwrap();
}

#[tokio::test]
async fn an_agent_that_cannot_be_reached_is_resend_safe() {
    let error = Client::builder(format!("127.0.0.1:{}", free_port()))
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, eventstash_client::Error::Connect { .. }), "{error:?}");
    assert!(error.is_resend_safe());
}

#[tokio::test]
async fn a_wrong_token_is_refused_as_not_resend_safe_and_the_right_one_is_stored() {
    let ca = TestCa::new("test CA");
    let mut files = tls_files(&ca, &ca.server(), &[]);
    let hash = token_sha256("s3cret");
    files.push((
        "tokens.toml".to_owned(),
        format!("[[producers]]\nname = \"billing\"\ntoken_sha256 = \"{hash}\"\n"),
    ));
    let input = r#"tls = { cert_file = "tls/server.crt", key_file = "tls/server.key" }
auth = { tokens_file = "tokens.toml" }"#;
    let mut options = AgentOptions::new(&secure_file_pipeline(input));
    options.files = files;
    let agent = start_tls_agent(options, &ClientTls::ca());
    let producer = |token: &str| {
        Client::builder(agent.addr.to_string())
            .ca_file(agent.path("tls/ca.crt"))
            .domain("localhost")
            .token(token)
            .connect()
    };
    let event = || Event::json("client.Tls", &serde_json::json!({"paid": true})).with_id("t-1");

    let refused = producer("wrong").await.unwrap().store([event()]).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::Unauthenticated), "{refused:?}");
    assert!(!refused.is_resend_safe());

    producer("s3cret").await.unwrap().store([event()]).await.unwrap();
    let documents = read_documents(&agent.path("events/client-tls.jsonl"));
    assert_eq!(documents.len(), 1);
    assert_eq!(documents[0]["source"], "billing");
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_appends_move_the_version_and_a_conflict_names_the_current_one() {
    use support::event_store::{FILE_OUTPUT, StoreTables, start_agent, unique};
    let tables = StoreTables::new("client");
    let agent = start_agent(&tables, &["store"], FILE_OUTPUT).await;
    let store = agent.client().await.event_store();
    let order = unique("order");
    let append = |expected, change_set: &str| Append {
        aggregate_id: order.clone(),
        aggregate_type: "client.Order".to_owned(),
        expected,
        change_set_id: change_set.to_owned(),
        events: vec![Event::json("client.OrderPlaced", &serde_json::json!({"order": 1}))],
    };

    let first = store
        .append(append(ExpectedVersion::NoAggregate, "cs-1"))
        .await
        .unwrap();
    assert_eq!((first.version, first.already_stored), (1, false));
    let conflict = store
        .append(append(ExpectedVersion::NoAggregate, "cs-2"))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Some(Code::Aborted), "{conflict:?}");
    assert_eq!(conflict.current_version(), Some(1));
    assert!(!conflict.is_resend_safe(), "a conflict needs a reload, not a resend");
    let second = store.append(append(ExpectedVersion::Exactly(1), "cs-2")).await.unwrap();
    assert_eq!(second.version, 2);
    let resent = store.append(append(ExpectedVersion::Exactly(1), "cs-2")).await.unwrap();
    assert_eq!((resent.version, resent.already_stored), (2, true));

    let change_sets = store.read_all(&order, 0).await.unwrap();
    let ids: Vec<&str> = change_sets.iter().map(|c| c.change_set_id.as_str()).collect();
    assert_eq!(ids, ["cs-1", "cs-2"]);
}
