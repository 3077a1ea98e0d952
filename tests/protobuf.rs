//! End to end: PROTOBUF payloads are decoded with .proto files read at run
//! time, and SIGHUP reloads them without a restart.

mod support;

use std::process::Command;

use eventstash_client::Event;
use serde_json::json;
use support::*;

const PIPELINE: &str = r#"
[[inputs]]
type = "grpc"
bind = "127.0.0.1:{port}"

[[filters]]
type = "protobuf"
protos = "protos/**/*.proto"

[[outputs]]
type = "file"
path = "events/%{index}.jsonl"
"#;

fn with_address_book() -> AgentOptions {
    let mut options = AgentOptions::new(PIPELINE);
    let address_book = std::fs::read_to_string(repo_root().join("protos/examples/contact/addressbook.proto")).unwrap();
    options
        .files
        .push(("protos/contact/addressbook.proto".into(), address_book));
    options
}

const REFERENCE_DATA: &str = r#"{"id":"ab-1","people":[{"name":"John Doe","email":"john.doe@foo.bar","phones":[{"number":"+55 (11) 1111-1111","type":"HOME"}]}]}"#;

#[test]
fn python_protobuf_events_are_stored_as_decoded_json() {
    let agent = Agent::start(with_address_book());
    let output = Command::new(python())
        .arg(repo_root().join("tests/python/hfx_client.py"))
        .args([
            "--addr",
            &agent.addr.to_string(),
            "--count",
            "50",
            "--format",
            "protobuf",
        ])
        .arg("--proto")
        .arg(repo_root().join("protos/examples/contact/addressbook.proto"))
        .args(["--message", "contact.AddressBook", "--payload-json", REFERENCE_DATA])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python client failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let documents = read_documents(&agent.path("events/contact-address-book.jsonl"));
    assert_eq!(documents.len(), 50);
    let reference: serde_json::Value = serde_json::from_str(REFERENCE_DATA).unwrap();
    for document in &documents {
        assert_eq!(document["format"], "PROTOBUF");
        assert_eq!(document["kind"], "contact.AddressBook");
        assert_eq!(document["data"], reference, "the reference document's data");
        assert!(document.get("invalidProto").is_none());
    }
}

fn ping_event(id: &str) -> Event {
    let ping = Ping {
        message: "hello".into(),
        sequence: 7,
    };
    Event::protobuf(&ping).with_id(id)
}

fn ping_document(agent: &Agent, id: &str) -> serde_json::Value {
    read_documents(&agent.path("events/demo-ping.jsonl"))
        .into_iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no document {id}"))
}

#[tokio::test]
async fn sighup_loads_new_protos_and_a_broken_reload_keeps_the_old_set() {
    let agent = Agent::start(with_address_book());
    let mut client = agent.client().await;

    // Unknown at start: kept, flagged.
    store_ok(&mut client, vec![ping_event("before")]).await;
    let before = ping_document(&agent, "before");
    assert_eq!(before["invalidProto"], true);
    assert!(before["raw"].is_string());

    // A new file and SIGHUP: the kind decodes, on the same connection.
    write_file(&agent.path("protos/demo/ping.proto"), PING_PROTO);
    agent.signal("HUP");
    wait_for_log(&agent, "proto files reloaded");
    store_ok(&mut client, vec![ping_event("after")]).await;
    assert_eq!(
        ping_document(&agent, "after")["data"],
        json!({"message": "hello", "sequence": "7"})
    );

    // A broken file: the reload fails with the file and line, the old set stays.
    write_file(
        &agent.path("protos/demo/broken.proto"),
        "syntax = \"proto3\";\nmessage Broken {\n  strin x = 1;\n}\n",
    );
    agent.signal("HUP");
    wait_for_log(&agent, "reload failed");
    let log = agent.log();
    assert!(log.contains("broken.proto:3:"), "{log}");
    store_ok(&mut client, vec![ping_event("still")]).await;
    assert_eq!(ping_document(&agent, "still")["data"]["message"], "hello");
    assert!(healthcheck(agent.addr), "a failed reload does not take the agent down");
}

#[test]
fn validate_names_the_broken_proto_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_file(
        &dir.path().join("protos/bad.proto"),
        "syntax = \"proto3\";\nmessage A {\n  strin x = 1;\n}\n",
    );
    std::fs::write(dir.path().join("p.toml"), PIPELINE.replace("{port}", "1")).unwrap();
    let output = Command::new(EVENTSTASH)
        .args(["validate", "-c", "p.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("p.toml: `filters[0]`"), "{stderr}");
    assert!(stderr.contains("bad.proto:3:3"), "{stderr}");
}

#[tokio::test]
async fn with_watch_a_new_proto_file_is_loaded_without_a_signal() {
    let mut options = with_address_book();
    options.config = options.config.replace(
        "protos = \"protos/**/*.proto\"",
        "protos = \"protos/**/*.proto\"\nwatch = true",
    );
    let agent = Agent::start(options);
    write_file(&agent.path("protos/demo/ping.proto"), PING_PROTO);
    wait_for_log(&agent, "proto files reloaded");
    let mut client = agent.client().await;
    store_ok(&mut client, vec![ping_event("watched")]).await;
    assert_eq!(
        ping_document(&agent, "watched")["data"],
        json!({"message": "hello", "sequence": "7"})
    );
    // Reloading reads the files; those reads must not count as changes. A
    // measuring window: no further reload may come within 1 s.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let reloads = agent.log().matches("proto files reloaded").count();
    assert!(reloads <= 2, "{reloads} reloads for one change:\n{}", agent.log());
}
