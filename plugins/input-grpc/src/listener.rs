//! The accept loop: takes new connections while fewer than
//! `max_connections` are open, and survives running out of descriptors.
//!
//! When `accept` fails for want of a resource (EMFILE, ENFILE, ENOBUFS,
//! ENOMEM), the waiting connection stays in the listen backlog and the
//! listener stays readable, so retrying at once would spin a core. The loop
//! waits with backoff instead, logs once per interval with how many errors
//! it held back, and says when it accepts again. Errors that belong to one
//! connection (the client gave up while queued) are skipped at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use eventstash_plugin_api::{Backoff, LogThrottle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::connection::{self, ConnectionContext};

/// How often accept errors, and the recovery from them, are logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Backoff between accept attempts while they fail: short at first, so a
/// brief shortage costs little; at most a second, so the agent comes back
/// soon after descriptors are free again.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Accepts connections until `stop` is cancelled, serving each in a task of
/// `tasks`.
pub(crate) async fn accept_connections(
    listener: TcpListener,
    addr: SocketAddr,
    max_connections: usize,
    context: Arc<ConnectionContext>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut retry = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let full_log = LogThrottle::new(LOG_INTERVAL);
    let error_log = LogThrottle::new(LOG_INTERVAL);
    let recovery_log = LogThrottle::new(LOG_INTERVAL);
    let mut failing = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(suppressed) = full_log.allow() {
                    warn!(%addr, max_connections, suppressed, "`max_connections` connections are open; new ones wait until one closes");
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => return,
                    },
                    () = stop.cancelled() => return,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                if failing {
                    failing = false;
                    retry.reset();
                    if recovery_log.allow().is_some() {
                        info!(%addr, "accepting connections again");
                    }
                }
                // Small acks must not wait for Nagle's algorithm (40 ms stalls).
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%peer, %error, "cannot set TCP_NODELAY");
                }
                tasks.spawn(connection::serve(stream, peer, context.clone(), slot));
            }
            Err(error) if belongs_to_one_connection(&error) => {
                debug!(%addr, %error, "a connection failed while queued");
            }
            Err(error) => {
                failing = true;
                if let Some(suppressed) = error_log.allow() {
                    warn!(
                        %addr, %error, suppressed,
                        "cannot accept a connection; retrying with backoff (raise the open-file limit or lower `max_connections`)"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(retry.next_delay()) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Errors about the connection being accepted, not about the listener.
fn belongs_to_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
