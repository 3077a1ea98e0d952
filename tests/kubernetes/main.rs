//! Kubernetes: the manifests under `deploy/kubernetes/` and what the agent
//! must do to live in a pod.
//!
//! - A ConfigMap update reaches the agent. The kubelet never rewrites a
//!   mounted ConfigMap's files: it writes a new timestamped directory and
//!   swaps a `..data` symlink to it (its "atomic writer"). `volume::ConfigMapVolume`
//!   does exactly that, and the built binary must decode with the new
//!   `.proto` files after the swap, without a signal.
//! - Every overlay renders (`kubectl kustomize`), every rendered object
//!   passes the Kubernetes schemas offline (`kubernetes-validate` from
//!   `.venv`), and the manifests agree with the code: ports, probes, paths
//!   in the image, the grace period against the shutdown timeout. Without
//!   `kubectl` or the validator these tests fail; they never skip.

#[path = "../support/mod.rs"]
mod support;

mod consistency;
mod pod;
mod reload;
mod render;
mod volume;
