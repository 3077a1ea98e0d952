//! The input's TLS and producer authentication together, and how they
//! follow their files while the agent runs.
//!
//! The input listens for SIGHUP itself (tokio lets any number of tasks
//! listen for one signal, so the engine's own SIGHUP handler, which reloads
//! filters, is untouched) and also looks at its files every few seconds: a
//! certificate renewed by cert-manager or a tokens file rewritten by a
//! deployment tool takes effect without anyone sending a signal. Either way
//! the files are read again; new connections get the new certificate, the
//! next request the new tokens, and nothing open is dropped. A file that
//! does not read (half written, a key that does not match) is an ERROR in
//! the log, and the previous certificate and tokens stay in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::auth::Authenticator;
use crate::tls::TlsServer;

/// How often the files are looked at for changes.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// TLS and authentication of one gRPC input.
#[derive(Debug, Clone)]
pub(crate) struct Security {
    /// TLS, if the input has a `tls` table.
    pub(crate) tls: Option<Arc<TlsServer>>,
    /// Who may send what.
    pub(crate) auth: Arc<Authenticator>,
}

impl Security {
    /// Logs what protects the port and, if there are files to follow,
    /// follows them until `shutdown`.
    pub(crate) fn start(&self, addr: std::net::SocketAddr, shutdown: CancellationToken) {
        let tls = self.tls.is_some();
        let mutual_tls = self.tls.as_ref().is_some_and(|tls| tls.mutual());
        let producers = self.auth.producer_count();
        if !tls && self.auth.tokens_file().is_some() {
            warn!(%addr, "gRPC input takes producer tokens without TLS: they cross the network in clear text");
        }
        info!(%addr, tls, mutual_tls, tokens = self.auth.tokens_file().is_some(), producers, "gRPC input security");
        if self.files().is_empty() {
            return;
        }
        tokio::spawn(self.clone().follow_files(shutdown));
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(tls) = &self.tls {
            let tls = tls.files();
            files.extend([tls.cert_file.clone(), tls.key_file.clone()]);
            files.extend(tls.client_ca_file.clone());
        }
        files.extend(self.auth.tokens_file().map(Path::to_owned));
        files
    }

    /// Reloads on SIGHUP and whenever a file's size or modification time
    /// changes.
    async fn follow_files(self, shutdown: CancellationToken) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                warn!(%error, "cannot listen for SIGHUP; TLS and token files are reloaded when they change only");
                None
            }
        };
        let files = self.files();
        let mut seen = fingerprint(&files);
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                _ = poll.tick() => {
                    let now = fingerprint(&files);
                    if now == seen {
                        continue;
                    }
                    "a file changed"
                }
            };
            seen = fingerprint(&files);
            self.reload(why);
        }
    }

    fn reload(&self, why: &str) {
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => info!(why, "reloaded the gRPC input's TLS certificate"),
                Err(failure) => {
                    error!(why, error = %failure, "cannot reload the gRPC input's TLS certificate; the previous one stays in use")
                }
            }
        }
        if self.auth.tokens_file().is_some() {
            match self.auth.reload() {
                Ok(producers) => info!(why, producers, "reloaded the gRPC input's producer tokens"),
                Err(failure) => {
                    error!(why, error = %failure, "cannot reload the gRPC input's producer tokens; the previous ones stay in use")
                }
            }
        }
    }
}

/// The size and modification time of each file (`None` if unreadable).
fn fingerprint(files: &[PathBuf]) -> Vec<Option<(u64, SystemTime)>> {
    files
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.len(), metadata.modified().ok()?))
        })
        .collect()
}
