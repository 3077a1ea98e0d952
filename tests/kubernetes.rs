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
use support::security::{assert_stored, send};
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

const PING_V1: &str =
    "syntax = \"proto3\";\npackage demo;\nmessage Ping {\n  string message = 1;\n  int64 sequence = 2;\n}\n";
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
    let mut volume = ConfigMapVolume::create(&mount.path().join("protos"), &[("ping.proto", PING_V1)]);
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
    volume.update(&[("ping.proto", PING_V1)]);
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

// ---------------------------------------------------------------------------
// The manifests.

/// The Kubernetes versions every rendered object is validated against: the
/// oldest the manifests support (they use the `sleep` preStop action and
/// `grpc` probes) and the newest `kubernetes-validate` knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.32.0", "1.37.0"];

/// The highest peak resident memory measured under load (README: 29 MiB
/// in the Benchmark table, persisted queue; 21 MiB on the node agent's
/// pipeline, Kubernetes): what a pod needs besides its configured bounds.
const MEASURED_PEAK_RSS_MIB: u64 = 29;

/// The directories under `deploy/kubernetes` that render on their own
/// (`kind: Kustomization`; components do not).
fn overlays() -> Vec<PathBuf> {
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(repo_root().join("deploy/kubernetes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| {
            std::fs::read_to_string(dir.join("kustomization.yaml"))
                .is_ok_and(|text| text.lines().any(|line| line == "kind: Kustomization"))
        })
        .collect();
    overlays.sort();
    let names: Vec<_> = overlays.iter().map(|dir| dir.file_name().unwrap().to_owned()).collect();
    for expected in [
        "base",
        "node-agent",
        "front-store",
        "persisted-queue",
        "node-agent-servicemonitor",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "no overlay {expected}: {names:?}"
        );
    }
    overlays
}

/// `kubectl kustomize DIR`: fails the test when kubectl is missing.
fn render(overlay: &Path) -> String {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(overlay)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {kubectl} ({e}): install kubectl (.ci/run does) or set KUBECTL"));
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        overlay.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The objects of a multi-document YAML text, through PyYAML in `.venv`.
fn parse_yaml(yaml: &str) -> Vec<Value> {
    use std::io::Write as _;
    let mut child = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "PyYAML could not read the rendered manifests");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The `kubernetes-validate` of `.venv` (tests/python/requirements.txt).
fn validator() -> PathBuf {
    let validator = Path::new(&python()).with_file_name("kubernetes-validate");
    assert!(
        validator.exists(),
        "{} is missing: tests/run installs it from tests/python/requirements.txt",
        validator.display()
    );
    validator
}

fn name_of(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap(),
        object["metadata"]["name"].as_str().unwrap()
    )
}

/// Kubernetes' own API groups (`v1`, `apps/v1`, `*.k8s.io/...`), which the
/// validator has schemas for; anything else comes from a CRD.
fn is_builtin(object: &Value) -> bool {
    let api_version = object["apiVersion"].as_str().unwrap();
    match api_version.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

#[test]
fn every_overlay_renders_and_passes_the_kubernetes_schemas() {
    let validator = validator();
    for overlay in overlays() {
        let yaml = render(&overlay);
        let objects = parse_yaml(&yaml);
        assert!(!objects.is_empty(), "{} renders nothing", overlay.display());
        let rendered = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(rendered.path(), &yaml).unwrap();
        let builtin = objects.iter().filter(|object| is_builtin(object)).count();
        for version in KUBERNETES_VERSIONS {
            let output = Command::new(&validator)
                .args(["--strict", "--kubernetes-version", version])
                .arg(rendered.path())
                .output()
                .unwrap();
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                output.status.success(),
                "{} fails Kubernetes {version}:\n{report}",
                overlay.display()
            );
            assert_eq!(
                report.matches("passed for resource").count(),
                builtin,
                "{}: not every object passed Kubernetes {version}:\n{report}",
                overlay.display()
            );
        }
        for custom in objects.iter().filter(|object| !is_builtin(object)) {
            check_service_monitor(custom, &objects);
        }
    }
}

/// The one custom resource shipped: a ServiceMonitor must select at least
/// one Service, and every Service it selects must have its port.
fn check_service_monitor(monitor: &Value, objects: &[Value]) {
    assert_eq!(
        monitor["kind"],
        "ServiceMonitor",
        "unexpected custom resource {}",
        name_of(monitor)
    );
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let wanted = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    let selected: Vec<&Value> = objects
        .iter()
        .filter(|object| object["kind"] == "Service")
        .filter(|service| {
            let labels = &service["metadata"]["labels"];
            wanted.iter().all(|(key, value)| &labels[key] == value)
        })
        .collect();
    assert!(!selected.is_empty(), "{} selects no Service", name_of(monitor));
    for service in selected {
        let ports = service["spec"]["ports"].as_array().unwrap();
        assert!(
            ports.iter().any(|p| p["name"] == port),
            "{} selects {}, which has no port {port}",
            name_of(monitor),
            name_of(service)
        );
    }
}

/// A workload's pod, as the consistency checks need it.
struct Pod<'a> {
    workload: &'a Value,
    spec: &'a Value,
    container: &'a Value,
}

impl<'a> Pod<'a> {
    fn of(workload: &'a Value) -> Pod<'a> {
        let spec = &workload["spec"]["template"]["spec"];
        let containers = spec["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{}: one container", name_of(workload));
        Pod {
            workload,
            spec,
            container: &containers[0],
        }
    }

    fn name(&self) -> String {
        name_of(self.workload)
    }

    /// The container port called `name`.
    fn port(&self, name: &str) -> Option<&'a Value> {
        self.container["ports"]
            .as_array()?
            .iter()
            .find(|port| port["name"] == name)
    }

    /// Each volume mount's path and the volume's source.
    fn mounts(&self) -> Vec<(String, Value)> {
        let volumes = self.spec["volumes"].as_array().cloned().unwrap_or_default();
        let claims = self.workload["spec"]["volumeClaimTemplates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        self.container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|mount| {
                let name = &mount["name"];
                let source = volumes
                    .iter()
                    .find(|volume| &volume["name"] == name)
                    .cloned()
                    .or_else(|| {
                        claims
                            .iter()
                            .find(|claim| &claim["metadata"]["name"] == name)
                            .map(|_| json!({"persistentVolumeClaim": {}}))
                    })
                    .unwrap_or_else(|| panic!("volume {name} is not defined"));
                (mount["mountPath"].as_str().unwrap().to_owned(), source)
            })
            .collect()
    }

    /// The container's environment: `envFrom` ConfigMaps, then `env`
    /// values (Secrets read as empty).
    fn env(&self, config_maps: &[&Value]) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for source in self.container["envFrom"].as_array().into_iter().flatten() {
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                let data = config_map(config_maps, name);
                env.extend(data.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())));
            }
        }
        for var in self.container["env"].as_array().into_iter().flatten() {
            let value = var["value"].as_str().unwrap_or_default().to_owned();
            env.push((var["name"].as_str().unwrap().to_owned(), value));
        }
        env
    }
}

fn config_map<'a>(config_maps: &[&'a Value], name: &str) -> &'a serde_json::Map<String, Value> {
    config_maps
        .iter()
        .find(|map| map["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ConfigMap {name}"))["data"]
        .as_object()
        .unwrap()
}

/// `${VAR:default}` as the engine reads pipeline files.
fn interpolate(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').unwrap();
        let (name, default) = rest[start + 2..end].split_once(':').unwrap();
        let value = env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        out.push_str(value.unwrap_or(default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn port_of(bind: &str) -> u64 {
    bind.rsplit(':').next().unwrap().parse().unwrap()
}

fn mebibytes(size: &str) -> u64 {
    let (number, unit) = size.split_at(size.find(|c: char| c.is_alphabetic()).unwrap_or(size.len()));
    let number: u64 = number.trim().parse().unwrap();
    match unit {
        "KiB" => number.div_ceil(1024),
        "MiB" | "Mi" => number,
        "GiB" | "Gi" => number * 1024,
        other => panic!("unit {other:?} in {size:?}"),
    }
}

/// The image as the Dockerfile's last stage builds it.
struct Image {
    /// `WORKDIR`: where relative paths in a pipeline start.
    workdir: String,
    /// `COPY source destination` from the repository into the workdir.
    copies: Vec<(String, String)>,
    /// `ENTRYPOINT`, as written.
    entrypoint: String,
    /// `USER`, as `uid:gid`.
    user: String,
}

fn image() -> Image {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let mut image = Image {
        workdir: String::new(),
        copies: Vec::new(),
        entrypoint: String::new(),
        user: String::new(),
    };
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["FROM", ..] => image.copies.clear(),
            ["WORKDIR", dir] => image.workdir = (*dir).to_owned(),
            ["COPY", from, to] => image.copies.push(((*from).to_owned(), (*to).to_owned())),
            ["ENTRYPOINT", ..] => image.entrypoint = line["ENTRYPOINT".len()..].trim().to_owned(),
            ["USER", user] => image.user = (*user).to_owned(),
            _ => {}
        }
    }
    image
}

#[test]
fn the_manifests_agree_with_the_pipelines_and_the_image() {
    let image = image();
    assert_eq!(image.entrypoint, r#"["eventstash"]"#, "the manifests pass only args");
    // runAsNonRoot needs a numeric user in the image, the one the pods run as.
    let (uid, gid) = image.user.split_once(':').expect("the Dockerfile sets USER uid:gid");
    let mut workloads_seen = 0;
    for overlay in overlays() {
        let objects = parse_yaml(&render(&overlay));
        let config_maps: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "ConfigMap").collect();
        let workloads: Vec<&Value> = objects
            .iter()
            .filter(|o| ["DaemonSet", "Deployment", "StatefulSet"].contains(&o["kind"].as_str().unwrap()))
            .collect();
        for workload in &workloads {
            workloads_seen += 1;
            let pod = Pod::of(workload);
            let security = &pod.spec["securityContext"];
            assert_eq!(security["runAsNonRoot"], true, "{}", pod.name());
            assert_eq!(
                security["runAsUser"].to_string(),
                uid,
                "{}: the image's user",
                pod.name()
            );
            assert_eq!(
                security["runAsGroup"].to_string(),
                gid,
                "{}: the image's group",
                pod.name()
            );
            check_pod(&pod, &config_maps, &image);
        }
        for service in objects.iter().filter(|o| o["kind"] == "Service") {
            check_service(service, &workloads);
        }
    }
    assert!(workloads_seen >= 4, "only {workloads_seen} workloads rendered");
}

/// Lays the pod's volumes out under a temporary root (ConfigMaps and
/// Secrets as the kubelet writes them), runs `eventstash validate` on its
/// pipeline there with its environment, and checks ports, probes, the grace
/// period and the memory limit against that pipeline.
fn check_pod(pod: &Pod<'_>, config_maps: &[&Value], image: &Image) {
    let name = pod.name();
    let args: Vec<&str> = pod.container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        pod.container.get("command").is_none(),
        "{name}: the image's entrypoint runs"
    );
    let ["run", "-c", pipeline_path] = args.as_slice() else {
        panic!("{name}: args {args:?}")
    };

    // The image's files, and the pod's volumes, under one root.
    let root = tempfile::tempdir().unwrap();
    let rooted = |path: &str| format!("{}{path}", root.path().display());
    let image_dir = PathBuf::from(rooted(&image.workdir));
    std::fs::create_dir_all(&image_dir).unwrap();
    for (from, to) in &image.copies {
        std::os::unix::fs::symlink(repo_root().join(from), image_dir.join(to)).unwrap();
    }
    let mounts = pod.mounts();
    let relocate = |text: &str| {
        mounts.iter().fold(text.to_owned(), |text, (path, _)| {
            text.replace(path.as_str(), &rooted(path))
        })
    };
    let mut pipeline_text = None;
    let mut protos_mount = None;
    for (path, source) in &mounts {
        let dir = PathBuf::from(rooted(path));
        if let Some(map_name) = source["configMap"]["name"].as_str() {
            let data = config_map(config_maps, map_name);
            let files: Vec<(String, String)> = data
                .iter()
                .map(|(k, v)| (k.clone(), relocate(v.as_str().unwrap())))
                .collect();
            let files: Vec<(&str, &str)> = files.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ConfigMapVolume::create(&dir, &files);
            if let Some(key) = pipeline_path.strip_prefix(&format!("{path}/")) {
                pipeline_text = Some(data[key].as_str().unwrap().to_owned());
            }
            if data.keys().all(|key| key.ends_with(".proto")) {
                // Updated in place: no hash suffix, or an update would
                // need a rollout to reach the pods.
                assert_eq!(map_name, "eventstash-protos", "{name}: protos ConfigMap renamed");
                protos_mount = Some(path.clone());
            }
        } else if let Some(secret) = source["secret"]["secretName"].as_str() {
            assert_eq!(secret, "eventstash-producer-tokens", "{name}: unexpected Secret volume");
            let tokens = format!(
                "[[producers]]\nname = \"test\"\ntoken_sha256 = \"{}\"\n",
                token_sha256("test")
            );
            ConfigMapVolume::create(&dir, &[("tokens.toml", &tokens)]);
        } else {
            std::fs::create_dir_all(&dir).unwrap();
        }
    }
    let pipeline_text = pipeline_text.unwrap_or_else(|| panic!("{name}: {pipeline_path} is in no ConfigMap volume"));

    // The agent itself accepts the pipeline, in the image's layout.
    let env: Vec<(String, String)> = pod
        .env(config_maps)
        .into_iter()
        .map(|(k, v)| (k, relocate(&v)))
        .collect();
    let output = Command::new(EVENTSTASH)
        .args(["validate", "-c", &rooted(pipeline_path)])
        .current_dir(&image_dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // SQS is asked whether the queue exists: nobody answers here, which
        // is a warning, not an error.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{name}: eventstash validate fails:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let pipeline: toml::Value = toml::from_str(&interpolate(&pipeline_text, &pod.env(config_maps))).unwrap();
    check_ports_and_probes(pod, &pipeline);
    check_shutdown(pod, &pipeline);
    check_memory(pod, &pipeline);
    check_volumes(pod, &pipeline, &mounts, protos_mount.as_deref());
}

fn check_ports_and_probes(pod: &Pod<'_>, pipeline: &toml::Value) {
    let name = pod.name();
    let metrics = port_of(pipeline["metrics"]["bind"].as_str().unwrap());
    let metrics_port = pod.port("metrics").unwrap_or_else(|| panic!("{name}: no metrics port"));
    assert_eq!(metrics_port["containerPort"], metrics, "{name}: metrics port");
    let annotations = &pod.workload["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], metrics.to_string(), "{name}");
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
    assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");

    // Liveness must not follow the outputs: /metrics answers while the
    // process serves, where /health and grpc.health.v1 say NOT_SERVING
    // once an output has failed for unhealthy_after_ms.
    let liveness = &pod.container["livenessProbe"];
    assert_eq!(liveness["httpGet"]["path"], "/metrics", "{name}: liveness");
    assert!(
        liveness["httpGet"]["port"] == "metrics" || liveness["httpGet"]["port"] == metrics,
        "{name}: liveness port"
    );

    let readiness = &pod.container["readinessProbe"];
    let grpc_input = pipeline["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|input| input["type"].as_str() == Some("grpc"));
    match grpc_input {
        Some(input) => {
            let port = port_of(input["bind"].as_str().unwrap());
            assert_eq!(pod.port("grpc").unwrap()["containerPort"], port, "{name}: gRPC port");
            assert_eq!(
                readiness["grpc"]["port"], port,
                "{name}: readiness probes the gRPC port"
            );
            // The services the agent's health service answers for.
            let service = readiness["grpc"]["service"].as_str().unwrap_or("");
            assert!(
                ["", "hfx.v1.EventStash"].contains(&service),
                "{name}: probe service {service:?}"
            );
            if pod.workload["kind"] == "DaemonSet" {
                assert_eq!(pod.port("grpc").unwrap()["hostPort"], 42043, "{name}: host port");
            }
        }
        None => {
            assert_eq!(
                readiness["httpGet"]["path"], "/health",
                "{name}: readiness without a gRPC port"
            );
            assert!(pod.port("grpc").is_none(), "{name}: a gRPC port nothing listens on");
        }
    }
}

fn check_shutdown(pod: &Pod<'_>, pipeline: &toml::Value) {
    let name = pod.name();
    let timeout_ms: u64 = match &pipeline["pipeline"]["shutdown_timeout_ms"] {
        toml::Value::String(text) => text.parse().unwrap(),
        toml::Value::Integer(value) => u64::try_from(*value).unwrap(),
        other => panic!("{name}: shutdown_timeout_ms = {other:?}"),
    };
    let pre_stop_s = pod.container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let grace_s = pod.spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace_s * 1000 > pre_stop_s * 1000 + timeout_ms,
        "{name}: terminationGracePeriodSeconds {grace_s} s leaves the drain ({timeout_ms} ms after a {pre_stop_s} s preStop) no time"
    );
}

/// The memory limit holds what the pipeline's bounds allow the gRPC input
/// and a memory queue to hold, plus the measured peak under load.
fn check_memory(pod: &Pod<'_>, pipeline: &toml::Value) {
    let name = pod.name();
    let resources = &pod.container["resources"];
    let limit = mebibytes(resources["limits"]["memory"].as_str().unwrap());
    let request = mebibytes(resources["requests"]["memory"].as_str().unwrap());
    assert!(
        request >= MEASURED_PEAK_RSS_MIB,
        "{name}: request {request} MiB below the measured peak"
    );
    let mut bound = MEASURED_PEAK_RSS_MIB;
    if pipeline["queue"]["type"].as_str() == Some("memory") {
        bound += mebibytes(pipeline["queue"]["max_bytes"].as_str().unwrap());
    }
    for input in pipeline["inputs"].as_array().unwrap() {
        if input["type"].as_str() == Some("grpc") {
            let inflight = mebibytes(input["max_inflight_bytes"].as_str().expect("max_inflight_bytes set"));
            let connections = input["max_connections"].as_integer().expect("max_connections set");
            let streams = input["max_concurrent_streams"]
                .as_integer()
                .expect("max_concurrent_streams set");
            // connection_window (2 MiB) + 64 KiB + streams × 48 KiB, per connection.
            let per_connection_kib = 2048 + 64 + streams as u64 * 48;
            bound += 2 * inflight + (connections as u64 * per_connection_kib).div_ceil(1024);
        }
    }
    assert!(
        limit >= bound,
        "{name}: memory limit {limit} MiB below the pipeline's bound {bound} MiB"
    );
}

fn check_volumes(pod: &Pod<'_>, pipeline: &toml::Value, mounts: &[(String, Value)], protos_mount: Option<&str>) {
    let name = pod.name();
    for filter in pipeline.get("filters").and_then(|f| f.as_array()).into_iter().flatten() {
        if filter["type"].as_str() == Some("protobuf") {
            let protos = filter["protos"].as_str().unwrap();
            let mount = protos_mount.unwrap_or_else(|| panic!("{name}: no protos volume"));
            assert!(
                protos.starts_with(&format!("{mount}/")),
                "{name}: protos {protos} outside {mount}"
            );
            assert_eq!(
                filter["watch"].as_bool(),
                Some(true),
                "{name}: ConfigMap updates need watch = true"
            );
        }
    }
    if pipeline["queue"]["type"].as_str() == Some("persisted") {
        // A persisted queue must not be shared by two pods, nor lost with one.
        assert_eq!(
            pod.workload["kind"], "StatefulSet",
            "{name}: a persisted queue needs a StatefulSet"
        );
        let path = pipeline["queue"]["path"].as_str().unwrap();
        let (_, source) = mounts
            .iter()
            .find(|(mount, _)| path.starts_with(&format!("{mount}/")))
            .unwrap_or_else(|| panic!("{name}: queue {path} on no volume"));
        assert!(
            source.get("persistentVolumeClaim").is_some(),
            "{name}: queue {path} not on a claim"
        );
    }
}

/// A Service selects the pods of one workload and targets their ports.
fn check_service(service: &Value, workloads: &[&Value]) {
    let selector = service["spec"]["selector"].as_object().unwrap();
    let pods: Vec<Pod<'_>> = workloads
        .iter()
        .filter(|w| {
            let labels = &w["spec"]["template"]["metadata"]["labels"];
            selector.iter().all(|(k, v)| &labels[k] == v)
        })
        .map(|w| Pod::of(w))
        .collect();
    assert_eq!(pods.len(), 1, "{} selects {} workloads", name_of(service), pods.len());
    for port in service["spec"]["ports"].as_array().unwrap() {
        let target = port["targetPort"].as_str().unwrap();
        assert!(
            pods[0].port(target).is_some(),
            "{}: target port {target} is not a port of {}",
            name_of(service),
            pods[0].name()
        );
    }
}
