//! A ConfigMap or Secret update reaches the running agent: the `.proto`
//! files (the protobuf filter's `watch = true`) and the producer tokens
//! (followed on disk by the gRPC input), each swapped as the kubelet swaps
//! them, against the built binary.

use std::time::{Duration, Instant};

use eventstash_client::Event;
use serde_json::{Value, json};

use crate::support::security::{assert_stored, send};
use crate::support::*;
use crate::volume::ConfigMapVolume;

/// The same wire format, field 1 renamed: which one decoded an event shows
/// in its JSON.
const PING_V2: &str =
    "syntax = \"proto3\";\npackage demo;\nmessage Ping {\n  string text = 1;\n  int64 sequence = 2;\n}\n";

/// The shipped glob (`protos/**/*.proto`, the default) over a ConfigMap
/// mount, watched.
const WATCHING_PIPELINE: &str = r#"
[pipeline]
shutdown_timeout_ms = 10000

[[inputs]]
type = "grpc"
bind = "127.0.0.1:{port}"

[[filters]]
type = "protobuf"
protos = "protos/**/*.proto"
watch = true

[[outputs]]
type = "file"
path = "events/%{index}.jsonl"
"#;

fn ping(id: &str) -> Event {
    Event::protobuf(&Ping {
        message: "hello".into(),
        sequence: 7,
    })
    .with_id(id)
}

/// The `data` of the stored event `id`, waiting for it to be written.
fn stored_data(agent: &Agent, id: &str) -> Value {
    let path = agent.path("events/demo-ping.jsonl");
    read_documents(&path)
        .into_iter()
        .find(|document| document["id"] == id)
        .unwrap_or_else(|| panic!("no document {id} in {}", path.display()))["data"]
        .clone()
}

#[tokio::test]
async fn a_configmap_swap_of_the_protos_is_reloaded_without_a_signal() {
    let mut options = AgentOptions::new(WATCHING_PIPELINE);
    // The volume lives outside the agent's directory, which Agent::start
    // makes; the pipeline names it by its absolute path, as a pod's does.
    let mount = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::create(&mount.path().join("protos"), &[("ping.proto", PING_PROTO)]);
    options.config = options
        .config
        .replace("protos/**/*.proto", &format!("{}/**/*.proto", volume.dir.display()));
    let agent = Agent::start(options);
    let mut client = agent.client().await;

    store_ok(&mut client, vec![ping("before")]).await;
    assert_eq!(
        stored_data(&agent, "before"),
        json!({"message": "hello", "sequence": "7"})
    );

    let reloads_before = agent.log().matches("proto files reloaded").count();
    volume.update(&[("ping.proto", PING_V2)]);
    wait_for_reload(&agent, reloads_before);

    store_ok(&mut client, vec![ping("after")]).await;
    assert_eq!(stored_data(&agent, "after"), json!({"text": "hello", "sequence": "7"}));

    // The next update swaps again, from the directory the first one made.
    let reloads_before = agent.log().matches("proto files reloaded").count();
    volume.update(&[("ping.proto", PING_PROTO)]);
    wait_for_reload(&agent, reloads_before);
    store_ok(&mut client, vec![ping("again")]).await;
    assert_eq!(
        stored_data(&agent, "again"),
        json!({"message": "hello", "sequence": "7"})
    );
}

/// Waits until the log says "proto files reloaded" more than `before` times,
/// and no reload failed.
fn wait_for_reload(agent: &Agent, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.log().matches("proto files reloaded").count() == before {
        assert!(
            Instant::now() < deadline,
            "the swap was not reloaded within 10 s:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !agent.log().contains("reload failed"),
        "a reload failed:\n{}",
        agent.log()
    );
}

/// The tokens file of a Secret volume, followed on disk by the gRPC input
/// (looked at every 5 s), goes through the same swap.
#[tokio::test]
async fn a_secret_swap_of_the_producer_tokens_takes_effect_without_a_signal() {
    let tokens = |token: &str| {
        format!(
            "[[producers]]\nname = \"app\"\ntoken_sha256 = \"{}\"\n",
            token_sha256(token)
        )
    };
    let mount = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::create(&mount.path().join("tokens"), &[("tokens.toml", &tokens("old-token"))]);
    let config = FILE_PIPELINE.replace(
        "bind = \"127.0.0.1:{port}\"",
        &format!(
            "bind = \"127.0.0.1:{{port}}\"\nauth = {{ tokens_file = \"{}/tokens.toml\" }}",
            volume.dir.display()
        ),
    );
    let agent = Agent::start(AgentOptions::new(&config));
    let event = |id: &str| vec![json_event(id, 1, "app.Thing", "{}")];
    assert_stored(send(&agent, None, Some("old-token"), event("before")).await);

    volume.update(&[("tokens.toml", &tokens("new-token"))]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match send(&agent, None, Some("new-token"), event("after")).await {
            Ok(true) => break,
            other => assert!(
                Instant::now() < deadline,
                "the new token is refused 15 s after the swap: {other:?}\n{}",
                agent.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = send(&agent, None, Some("old-token"), event("stale")).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
}
