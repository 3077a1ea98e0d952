//! Reloading the proto set when `.proto` files change on disk (`watch = true`).
//!
//! inotify (through `notify`) reports changes under the include directories;
//! a thread of the watcher's own waits for a quiet moment — an editor or a
//! deployment often writes several files at once — then reloads. A reload
//! that does not compile keeps the current set, as with SIGHUP.
//!
//! A Kubernetes ConfigMap volume is never written in place: the kubelet
//! writes the new files into a new `..<timestamp>` directory, points a
//! `..data_tmp` symlink at it, renames that over `..data` (the files the
//! pod sees are symlinks through `..data`) and removes the old directory.
//! Each step is a change under the watched directory, so the swap reloads
//! like an edit; the `..`-named directories hold second copies of the same
//! files and are never loaded (`is_configmap_internal`).

use std::path::{Component, Path};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tracing::{error, info};

use crate::filter::ProtoDecoder;
use crate::proto_set::ProtoSetError;

/// How long changes must stop before a reload.
const QUIET: Duration = Duration::from_millis(250);

/// Watches the proto directories while it lives.
pub(crate) struct ProtoWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for ProtoWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProtoWatcher")
    }
}

impl ProtoWatcher {
    pub(crate) fn start(decoder: &Arc<ProtoDecoder>) -> Result<ProtoWatcher, ProtoSetError> {
        let (changes, changed) = channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reads (ours included, when reloading) are not changes. A new
            // directory counts: files written into it before inotify
            // watches it would otherwise go unnoticed.
            let touches_proto = event.is_ok_and(|event| {
                let change = matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                );
                change
                    && event
                        .paths
                        .iter()
                        .any(|path| path.extension().is_some_and(|ext| ext == "proto") || path.is_dir())
            });
            if touches_proto {
                let _ = changes.send(());
            }
        })
        .map_err(|e| watch_error(Path::new("."), e))?;
        for dir in decoder.source().directories() {
            watcher
                .watch(dir, RecursiveMode::Recursive)
                .map_err(|e| watch_error(dir, e))?;
        }
        let decoder: Weak<ProtoDecoder> = Arc::downgrade(decoder);
        std::thread::Builder::new()
            .name("eventstash-proto-watch".to_owned())
            .spawn(move || {
                // Ends when the watcher (and with it the sender) is dropped.
                while changed.recv().is_ok() {
                    loop {
                        match changed.recv_timeout(QUIET) {
                            Ok(()) => continue,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    let Some(decoder) = decoder.upgrade() else { return };
                    info!("proto files changed on disk; reloading");
                    if let Err(error) = decoder.reload() {
                        error!(%error, "reload failed; the filter keeps its previous proto set");
                    }
                }
            })
            .map_err(|e| watch_error(Path::new("."), e))?;
        Ok(ProtoWatcher { _watcher: watcher })
    }
}

/// Whether `path` lies inside the kubelet's own entries of a ConfigMap or
/// Secret volume (`..data`, `..2026_11_26_03_40_00.123456789`): the files
/// there are also reachable through the volume's top-level symlinks, and
/// loading both would define every message twice.
pub(crate) fn is_configmap_internal(path: &Path) -> bool {
    path.components().any(|component| match component {
        Component::Normal(name) => name.as_encoded_bytes().starts_with(b".."),
        _ => false,
    })
}

fn watch_error(dir: &Path, error: impl std::fmt::Display) -> ProtoSetError {
    ProtoSetError::Watch {
        dir: dir.to_owned(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_own_entries_are_internal() {
        assert!(is_configmap_internal(Path::new("/etc/protos/..data/a.proto")));
        assert!(is_configmap_internal(Path::new(
            "/etc/protos/..2026_11_26_03_40_00.123456789/a.proto"
        )));
        assert!(!is_configmap_internal(Path::new("/etc/protos/a.proto")));
        assert!(!is_configmap_internal(Path::new("../protos/a.proto")));
        assert!(!is_configmap_internal(Path::new("protos/.hidden/a.proto")));
    }
}
