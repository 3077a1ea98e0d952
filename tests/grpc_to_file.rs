//! End to end: producers stream events over gRPC and the file output holds
//! exactly what was acknowledged, in the HFXEventStash document shape.

mod support;

use std::collections::HashSet;
use std::io::Write as _;
use std::net::TcpStream;
use std::process::Command;

use bytes::Bytes;
use eventstash_client::{Event, Format};
use support::*;

#[tokio::test]
async fn rust_client_streams_10000_events_and_all_land_with_their_ids() {
    let agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let mut client = agent.client().await;
    let events: Vec<_> = (0..10_000)
        .map(|n| {
            json_event(
                "rs-",
                n,
                "contact.AddressBook",
                &format!(r#"{{"n":{n},"name":"John Doe"}}"#),
            )
        })
        .collect();
    store_ok(&mut client, events).await;

    let documents = read_documents(&agent.path("events/contact-address-book.jsonl"));
    assert_eq!(documents.len(), 10_000);
    let ids: HashSet<&str> = documents.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10_000);
    for (n, document) in documents.iter().enumerate() {
        assert_eq!(
            document["id"],
            format!("rs-{n}"),
            "events of one stream keep their order"
        );
        assert_eq!(document["index"], "contact-address-book");
        assert_eq!(document["kind"], "contact.AddressBook");
        assert_eq!(document["format"], "JSON");
        assert_eq!(document["data"]["n"], n);
        let timestamp = document["@timestamp"].as_str().unwrap();
        assert!(chrono_like(timestamp), "bad @timestamp {timestamp}");
    }
}

fn chrono_like(timestamp: &str) -> bool {
    timestamp.len() == 24 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn empty_kind_and_id_get_the_protocol_defaults() {
    let agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let mut client = agent.client().await;
    let event = Event::bytes(Format::Json, "", Bytes::from_static(b"{\"a\":1}"));
    store_ok(&mut client, vec![event]).await;
    let documents = read_documents(&agent.path("events/event.jsonl"));
    assert_eq!(documents[0]["kind"], "event");
    assert_eq!(documents[0]["index"], "event");
    assert_eq!(documents[0]["id"].as_str().unwrap().len(), 36, "a UUID id");
}

#[test]
fn python_grpcio_client_with_only_the_proto_file_is_acknowledged() {
    let agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let script = repo_root().join("tests/python/hfx_client.py");
    let output = Command::new(python())
        .arg(&script)
        .args([
            "--addr",
            &agent.addr.to_string(),
            "--count",
            "500",
            "--kind",
            "python.Event",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["success"], true);

    let documents = read_documents(&agent.path("events/python-event.jsonl"));
    let ids: HashSet<String> = documents.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    let expected: HashSet<String> = (0..500).map(|n| format!("py-{n}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(documents[7]["data"]["source"], "python");
}

#[tokio::test]
async fn invalid_payloads_are_flagged_not_dropped() {
    let agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let mut client = agent.client().await;
    let mut events = vec![
        json_event("bad-", 0, "k", "{\"ok\":true}"),
        json_event("bad-", 1, "k", "{not json"),
    ];
    events.push(Event::bytes(Format::Json, "k", Bytes::from_static(b"\xff\xfe")).with_id("bad-2"));
    events.push(Event::bytes(Format::Protobuf, "k", Bytes::from_static(&[8, 150, 1])).with_id("bad-3"));
    store_ok(&mut client, events).await;

    let documents = read_documents(&agent.path("events/k.jsonl"));
    assert_eq!(documents.len(), 4);
    assert_eq!(documents[0]["data"]["ok"], true);
    assert_eq!(documents[1]["plain"], "{not json");
    assert_eq!(documents[1]["invalidJson"], true);
    assert_eq!(documents[2]["invalidJson"], true);
    assert_eq!(documents[2]["raw"], "//4=");
    assert_eq!(documents[3]["format"], "PROTOBUF");
    assert_eq!(documents[3]["raw"], "CJYB");
}

#[tokio::test]
async fn json_other_readers_reject_is_flagged_and_every_line_reads_back_in_python() {
    let agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let mut client = agent.client().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let events = vec![
        json_event("strict-", 0, "k", &deep),
        json_event("strict-", 1, "k", r#"{"s":"\ud800"}"#),
        json_event("strict-", 2, "k", r#"{"s":"\ud83d\ude00","n":[[[1]]]}"#),
    ];
    store_ok(&mut client, events).await;

    let documents = read_documents(&agent.path("events/k.jsonl"));
    assert_eq!(documents.len(), 3);
    assert_eq!(documents[0]["invalidJson"], true);
    assert_eq!(documents[0]["plain"].as_str().map(str::len), Some(200_000));
    assert_eq!(documents[1]["invalidJson"], true);
    assert_eq!(documents[1]["plain"], r#"{"s":"\ud800"}"#);
    assert_eq!(documents[2]["data"]["s"], "\u{1f600}");
    let script =
        "import json, sys\nfor line in open(sys.argv[1], encoding='utf-8'):\n    json.loads(line)\nprint('ok')";
    let checked = run_ok(
        Command::new(python())
            .args(["-c", script])
            .arg(agent.path("events/k.jsonl")),
    );
    assert_eq!(checked.trim(), "ok");
}

#[tokio::test]
async fn oversized_message_gets_resource_exhausted_and_the_agent_keeps_serving() {
    let config = FILE_PIPELINE.replace(
        "bind = \"127.0.0.1:{port}\"",
        "bind = \"127.0.0.1:{port}\"\nmax_message_size = \"64KiB\"",
    );
    let agent = Agent::start(AgentOptions::new(&config));
    let mut client = agent.client().await;
    let big = format!("\"{}\"", "x".repeat(100 * 1024));
    // Ten events, then the oversized one, then one that must not be read.
    let mut events: Vec<_> = (0..10).map(|n| json_event("before-", n, "k", "1")).collect();
    events.push(json_event("big-", 0, "k", &big));
    events.push(json_event("after-", 0, "k", "1"));
    let status = store(&mut client, events).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    let mut client = agent.client().await;
    store_ok(&mut client, vec![json_event("small-", 0, "k", "1")]).await;
    // The events before the oversized one are kept, in order; nothing of
    // it or after it.
    let ids: Vec<String> = read_documents(&agent.path("events/k.jsonl"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = (0..10).map(|n| format!("before-{n}")).collect();
    expected.push("small-0".into());
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn garbage_on_the_port_does_not_take_the_server_down() {
    let agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    for garbage in [
        &b"\x00\x01\x02 definitely not http/2 \xff\xfe"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(agent.addr).unwrap();
        stream.write_all(garbage).unwrap();
        drop(stream);
    }
    // A connection that opens and never speaks.
    let _silent = TcpStream::connect(agent.addr).unwrap();

    let mut client = agent.client().await;
    store_ok(&mut client, vec![json_event("after-", 0, "k", "1")]).await;
    assert!(healthcheck(agent.addr));
}

#[tokio::test]
async fn a_failing_output_gives_an_error_status_never_success() {
    // The output directory is a regular file: every write fails.
    let config = FILE_PIPELINE.replace("events/%{index}.jsonl", "blocker/%{index}.jsonl");
    let agent = Agent::start(AgentOptions::new(&config));
    std::fs::write(agent.path("blocker"), "not a directory").unwrap();
    let mut client = agent.client().await;
    let status = store(&mut client, vec![json_event("x-", 0, "k", "1")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not stored"), "{status:?}");
}

#[tokio::test]
async fn reflection_lists_the_services_without_a_proto_file() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let agent = Agent::start(AgentOptions::new(FILE_PIPELINE));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", agent.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains("hfx.v1.EventStash"), "{names:?}");
    assert!(names.contains("grpc.health.v1.Health"), "{names:?}");
}
