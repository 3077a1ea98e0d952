//! Kubernetes: the manifests under `deploy/kubernetes/` and what the agent
//! must do to live in a pod.
//!
//! - A ConfigMap update reaches the agent. The kubelet never rewrites a
//!   mounted ConfigMap's files: it writes a new timestamped directory and
//!   swaps a `..data` symlink to it (its "atomic writer"). `ConfigMapVolume`
//!   below does exactly that, and the built binary must decode with the new
//!   `.proto` files after the swap, without a signal.
//! - Every overlay renders (`kubectl kustomize`), every rendered object
//!   passes the Kubernetes schemas offline (`kubernetes-validate` from
//!   `.venv`), and the manifests agree with the code: ports, probes, paths
//!   in the image, the grace period against the shutdown timeout. Without
//!   `kubectl` or the validator these tests fail; they never skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use eventstash_client::Event;
use serde_json::{Value, json};
use support::*;

// ---------------------------------------------------------------------------
// The kubelet's atomic writer, reproduced.

/// A directory laid out as the kubelet lays out a mounted ConfigMap:
///
/// ```text
/// protos/..2026_11_26_03_40_00.000000001/ping.proto   the data
/// protos/..data -> ..2026_11_26_03_40_00.000000001
/// protos/ping.proto -> ..data/ping.proto
/// ```
struct ConfigMapVolume {
    /// The mount point.
    dir: PathBuf,
    /// The timestamped directory `..data` points at now.
    current: String,
    /// Makes each timestamped directory's name unique.
    generation: u32,
}

impl ConfigMapVolume {
    fn create(dir: &Path, files: &[(&str, &str)]) -> ConfigMapVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = ConfigMapVolume {
            dir: dir.to_owned(),
            current: String::new(),
            generation: 0,
        };
        volume.current = volume.write_timestamped(files);
        std::os::unix::fs::symlink(&volume.current, dir.join("..data")).unwrap();
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        volume
    }

    /// The update, step by step as the kubelet takes it: the new data in a
    /// new timestamped directory, a `..data_tmp` symlink to it renamed over
    /// `..data` (the one atomic step), links for new keys, then the old
    /// directory removed.
    fn update(&mut self, files: &[(&str, &str)]) {
        let new = self.write_timestamped(files);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
            }
        }
        std::fs::remove_dir_all(self.dir.join(&self.current)).unwrap();
        self.current = new;
    }

    fn write_timestamped(&mut self, files: &[(&str, &str)]) -> String {
        self.generation += 1;
        let name = format!("..2026_11_26_03_4{}_00.00000000{}", self.generation, self.generation);
        let data = self.dir.join(&name);
        std::fs::create_dir(&data).unwrap();
        for (file, text) in files {
            std::fs::write(data.join(file), text).unwrap();
        }
        name
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(int64, tag = "2")]
    sequence: i64,
}

impl prost::Name for Ping {
    const NAME: &'static str = "Ping";
    const PACKAGE: &'static str = "demo";
}

const PING_V1: &str = "syntax = \"proto3\";\npackage demo;\nmessage Ping {\n  string message = 1;\n  int64 sequence = 2;\n}\n";
/// The same wire format, field 1 renamed: which one decoded an event shows
/// in its JSON.
const PING_V2: &str = "syntax = \"proto3\";\npackage demo;\nmessage Ping {\n  string text = 1;\n  int64 sequence = 2;\n}\n";

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
    let mut volume = ConfigMapVolume::create(&mount.path().join("protos"), &[("ping.proto", PING_V1)]);
    options.config = options
        .config
        .replace("protos/**/*.proto", &format!("{}/**/*.proto", volume.dir.display()));
    let agent = Agent::start(options);
    let mut client = agent.client().await;

    store_ok(&mut client, vec![ping("before")]).await;
    assert_eq!(stored_data(&agent, "before"), json!({"message": "hello", "sequence": "7"}));

    let reloads_before = agent.log().matches("proto files reloaded").count();
    volume.update(&[("ping.proto", PING_V2)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.log().matches("proto files reloaded").count() == reloads_before {
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

    store_ok(&mut client, vec![ping("after")]).await;
    assert_eq!(stored_data(&agent, "after"), json!({"text": "hello", "sequence": "7"}));
}
