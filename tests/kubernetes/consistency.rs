//! The manifests agree with the code: each workload's pipeline passes
//! `eventstash validate` in the pod's layout, and its ports, probes, grace
//! period, memory limit and volumes match that pipeline and the image.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::pod::{Image, Pod, config_map, image, interpolate, mebibytes, port_of};
use crate::render::{MEASURED_PEAK_RSS_MIB, name_of, overlays, parse_yaml, render};
use crate::support::*;
use crate::volume::ConfigMapVolume;

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

/// The protos ConfigMap ships the repository's example protos (kustomize
/// reads files only under the kustomization, hence the copy): a copy that
/// drifted would decode the example producer's events differently in a pod.
#[test]
fn the_base_protos_are_copies_of_the_repositorys_examples() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let copy = root.join("deploy/kubernetes/base/protos/addressbook.proto");
    let original = root.join("protos/examples/contact/addressbook.proto");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&original).unwrap(),
        "{} differs from {}",
        copy.display(),
        original.display()
    );
}
