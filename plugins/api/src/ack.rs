//! Acknowledgement: telling a producer when every event it sent is safe.
//!
//! A producer's request (one `StoreEvent` stream) opens an ack group. Each
//! batch of its events carries an [`AckHandle`] of that group; the engine
//! gives each output its own handle for the batch, and an output's handle is
//! settled once the output has stored the batch or given up on it. When the
//! last handle of the group is gone, the [`AckWait`] resolves: `Ok` only if
//! every handle was settled as delivered. A handle dropped without being
//! settled (a task that died, events left behind at shutdown) counts as a
//! failure, so a producer can never be told "success" by accident.

use std::sync::{Arc, OnceLock};

use tokio::sync::oneshot;

/// Why the events of an ack group are not all safe.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{reason}")]
pub struct AckError {
    /// The first failure reported in the group.
    pub reason: String,
}

/// State shared by every handle of one group; its drop reports the outcome.
#[derive(Debug)]
struct AckState {
    /// The first failure, if any handle failed.
    failure: OnceLock<String>,
    /// Told the group's outcome when the last handle goes away.
    done: Option<Notify>,
}

/// Who learns a group's outcome.
enum Notify {
    /// A producer waiting on an [`AckWait`].
    Waiter(oneshot::Sender<Result<(), AckError>>),
    /// Engine bookkeeping (a persisted queue's progress), run in place.
    Callback(Box<dyn FnOnce(Result<(), AckError>) + Send + Sync>),
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Notify::Waiter(_) => "Waiter",
            Notify::Callback(_) => "Callback",
        })
    }
}

impl Drop for AckState {
    fn drop(&mut self) {
        let outcome = match self.failure.take() {
            Some(reason) => Err(AckError { reason }),
            None => Ok(()),
        };
        match self.done.take() {
            // Nobody waiting (the producer went away) is fine: there is no
            // one left to tell.
            Some(Notify::Waiter(done)) => drop(done.send(outcome)),
            Some(Notify::Callback(callback)) => callback(outcome),
            None => {}
        }
    }
}

/// One claim on an ack group's outcome; see the module documentation.
#[derive(Debug)]
#[must_use = "an AckHandle dropped without being settled fails its group"]
pub struct AckHandle {
    state: Option<Arc<AckState>>,
}

/// Resolves when every handle of its group is settled or dropped.
#[derive(Debug)]
pub struct AckWait {
    done: oneshot::Receiver<Result<(), AckError>>,
}

/// Opens an ack group: a first handle and the future of the group's outcome.
pub fn ack_group() -> (AckHandle, AckWait) {
    let (done, wait) = oneshot::channel();
    (AckHandle::with_notify(Notify::Waiter(done)), AckWait { done: wait })
}

impl AckHandle {
    fn with_notify(notify: Notify) -> AckHandle {
        let state = AckState {
            failure: OnceLock::new(),
            done: Some(notify),
        };
        AckHandle {
            state: Some(Arc::new(state)),
        }
    }

    /// Opens an ack group whose outcome is handed to `callback` (on the
    /// thread that settles the last handle) instead of a waiter. The
    /// callback must be quick and must not block.
    pub fn with_callback(callback: impl FnOnce(Result<(), AckError>) + Send + Sync + 'static) -> AckHandle {
        AckHandle::with_notify(Notify::Callback(Box::new(callback)))
    }
}

impl AckHandle {
    /// Another claim on the same group, to be settled on its own.
    pub fn share(&self) -> AckHandle {
        AckHandle {
            state: self.state.clone(),
        }
    }

    /// Splits this claim into `n` claims, one per output that must store the
    /// batch. With `n == 0` the claim is settled as delivered.
    pub fn fan_out(mut self, n: usize) -> Vec<AckHandle> {
        let state = self.state.take();
        (0..n).map(|_| AckHandle { state: state.clone() }).collect()
    }

    /// Settles this claim: its events are safe.
    pub fn delivered(mut self) {
        self.state = None;
    }

    /// Settles this claim as failed: the group's producer gets an error.
    pub fn failed(mut self, reason: impl Into<String>) {
        if let Some(state) = self.state.take() {
            let _ = state.failure.set(reason.into());
        }
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            let _ = state
                .failure
                .set("events were dropped before they were stored".to_owned());
        }
    }
}

impl AckWait {
    /// Waits for the group's outcome.
    pub async fn wait(self) -> Result<(), AckError> {
        self.done.await.unwrap_or_else(|_| {
            Err(AckError {
                reason: "acknowledgement state lost".to_owned(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_ok_when_every_claim_is_delivered() {
        let (root, wait) = ack_group();
        let outputs = root.share().fan_out(2);
        root.delivered();
        for handle in outputs {
            handle.delivered();
        }
        assert_eq!(wait.wait().await, Ok(()));
    }

    #[tokio::test]
    async fn one_failure_fails_the_group() {
        let (root, wait) = ack_group();
        let mut outputs = root.share().fan_out(2);
        root.delivered();
        outputs.pop().unwrap().failed("disk full");
        outputs.pop().unwrap().delivered();
        assert_eq!(wait.wait().await.unwrap_err().reason, "disk full");
    }

    #[tokio::test]
    async fn a_dropped_claim_is_a_failure_not_a_success() {
        let (root, wait) = ack_group();
        let batch = root.share();
        root.delivered();
        drop(batch);
        assert!(wait.wait().await.is_err());
    }

    #[test]
    fn a_callback_group_reports_its_outcome_once_settled() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let handle = AckHandle::with_callback(move |outcome| log.lock().unwrap().push(outcome.is_ok()));
        let parts = handle.fan_out(2);
        assert!(seen.lock().unwrap().is_empty());
        for part in parts {
            part.delivered();
        }
        assert_eq!(*seen.lock().unwrap(), vec![true]);
        let log = seen.clone();
        AckHandle::with_callback(move |outcome| log.lock().unwrap().push(outcome.is_ok())).failed("no");
        assert_eq!(*seen.lock().unwrap(), vec![true, false]);
    }

    #[tokio::test]
    async fn waits_for_the_last_claim() {
        let (root, wait) = ack_group();
        let batch = root.share();
        root.delivered();
        let mut wait = Box::pin(wait.wait());
        assert!(futures_poll_once(&mut wait).is_none());
        batch.delivered();
        assert_eq!(wait.await, Ok(()));
    }

    fn futures_poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(future).poll(&mut cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }
}
