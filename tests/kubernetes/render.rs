//! Every overlay renders with `kubectl kustomize`, and every object it
//! renders passes the Kubernetes schemas offline (`kubernetes-validate`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// The Kubernetes versions every rendered object is validated against: the
/// oldest the manifests support (they use the `sleep` preStop action and
/// `grpc` probes) and the newest `kubernetes-validate` knows.
pub(crate) const KUBERNETES_VERSIONS: &[&str] = &["1.32.0", "1.37.0"];

/// The highest peak resident memory measured under load (README: 29 MiB
/// in the Benchmark table, persisted queue; 21 MiB on the node agent's
/// pipeline, Kubernetes): what a pod needs besides its configured bounds.
pub(crate) const MEASURED_PEAK_RSS_MIB: u64 = 29;

/// The directories under `deploy/kubernetes` that render on their own
/// (`kind: Kustomization`; components do not).
pub(crate) fn overlays() -> Vec<PathBuf> {
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
pub(crate) fn render(overlay: &Path) -> String {
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
pub(crate) fn parse_yaml(yaml: &str) -> Vec<Value> {
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
pub(crate) fn validator() -> PathBuf {
    let validator = Path::new(&python()).with_file_name("kubernetes-validate");
    assert!(
        validator.exists(),
        "{} is missing: tests/run installs it from tests/python/requirements.txt",
        validator.display()
    );
    validator
}

pub(crate) fn name_of(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap(),
        object["metadata"]["name"].as_str().unwrap()
    )
}

/// Kubernetes' own API groups (`v1`, `apps/v1`, `*.k8s.io/...`), which the
/// validator has schemas for; anything else comes from a CRD.
pub(crate) fn is_builtin(object: &Value) -> bool {
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
