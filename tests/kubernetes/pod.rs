//! What the consistency checks read: a workload's pod, its ConfigMaps, a
//! pipeline's `${VAR:default}` values and sizes, and the image the
//! Dockerfile builds.

use serde_json::{Value, json};

use crate::render::name_of;
use crate::support::*;

/// A workload's pod, as the consistency checks need it.
pub(crate) struct Pod<'a> {
    pub(crate) workload: &'a Value,
    pub(crate) spec: &'a Value,
    pub(crate) container: &'a Value,
}

impl<'a> Pod<'a> {
    pub(crate) fn of(workload: &'a Value) -> Pod<'a> {
        let spec = &workload["spec"]["template"]["spec"];
        let containers = spec["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{}: one container", name_of(workload));
        Pod {
            workload,
            spec,
            container: &containers[0],
        }
    }

    pub(crate) fn name(&self) -> String {
        name_of(self.workload)
    }

    /// The container port called `name`.
    pub(crate) fn port(&self, name: &str) -> Option<&'a Value> {
        self.container["ports"]
            .as_array()?
            .iter()
            .find(|port| port["name"] == name)
    }

    /// Each volume mount's path and the volume's source.
    pub(crate) fn mounts(&self) -> Vec<(String, Value)> {
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
    pub(crate) fn env(&self, config_maps: &[&Value]) -> Vec<(String, String)> {
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

pub(crate) fn config_map<'a>(config_maps: &[&'a Value], name: &str) -> &'a serde_json::Map<String, Value> {
    config_maps
        .iter()
        .find(|map| map["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ConfigMap {name}"))["data"]
        .as_object()
        .unwrap()
}

/// `${VAR:default}` as the engine reads pipeline files.
pub(crate) fn interpolate(text: &str, env: &[(String, String)]) -> String {
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

pub(crate) fn port_of(bind: &str) -> u64 {
    bind.rsplit(':').next().unwrap().parse().unwrap()
}

pub(crate) fn mebibytes(size: &str) -> u64 {
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
pub(crate) struct Image {
    /// `WORKDIR`: where relative paths in a pipeline start.
    pub(crate) workdir: String,
    /// `COPY source destination` from the repository into the workdir.
    pub(crate) copies: Vec<(String, String)>,
    /// `ENTRYPOINT`, as written.
    pub(crate) entrypoint: String,
    /// `USER`, as `uid:gid`.
    pub(crate) user: String,
}

pub(crate) fn image() -> Image {
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
