//! Deletes finished segments beside the log's thread, not on it.
//!
//! Unlinking a full 32 MiB segment took about 10 ms here (ext4 frees its
//! blocks then), and every append waiting for the log's thread waited as
//! long: the persisted queue's slowest acknowledgements were these. When a
//! segment goes does not matter for safety: it is deleted only after the
//! checkpoint saying no output needs it is durable, and one still there
//! after a crash is recovered as finished and deleted again. A deletion that
//! fails is handed back to the log, which reports it at its next checkpoint
//! and tries again, as when it deleted segments itself.
//!
//! Up to [`MAX_SPARES`] finished segments are kept as spares instead (see
//! `segment.rs`): the log makes its next segments out of them.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::segment;

/// How many finished segments are kept to be written over. Two cover the
/// steady state (one segment finishes as the next starts) with one to
/// spare; more finishing at once (a backlog drained) are deleted.
pub(super) const MAX_SPARES: usize = 2;

/// A failed deletion: the segment and why.
pub(super) type Failure = (PathBuf, io::Error);

/// The remover thread, or none if it could not be started (segments are
/// then deleted inline, as before it existed).
pub(super) struct SegmentRemover {
    /// Work for the thread; dropped to let it finish.
    requests: Option<Sender<Request>>,
    /// Deletions that failed, until the log takes them.
    failed: Arc<Mutex<Vec<Failure>>>,
    /// Spares ready for the log, oldest first.
    spares: Arc<Mutex<Vec<PathBuf>>>,
    /// Joined on drop, so that no deletion outlives the log.
    thread: Option<JoinHandle<()>>,
}

enum Request {
    /// Delete this segment.
    Delete(PathBuf),
    /// Answered once every deletion asked before it is done.
    #[cfg(test)]
    Flush(Sender<()>),
}

impl SegmentRemover {
    /// Starts the thread, with `spares` left by an earlier run (at most
    /// [`MAX_SPARES`] are kept; the others are deleted).
    pub(super) fn start(mut spares: Vec<PathBuf>) -> SegmentRemover {
        let failed = Arc::new(Mutex::new(Vec::new()));
        for extra in spares.split_off(spares.len().min(MAX_SPARES)) {
            delete(extra, &failed);
        }
        let spares = Arc::new(Mutex::new(spares));
        let (requests, receiver) = channel();
        let thread_failed = failed.clone();
        let thread_spares = spares.clone();
        let thread = std::thread::Builder::new()
            .name("queue-remover".into())
            .spawn(move || {
                for request in receiver {
                    match request {
                        Request::Delete(path) => retire(path, &thread_failed, &thread_spares),
                        #[cfg(test)]
                        Request::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok();
        SegmentRemover {
            requests: thread.as_ref().map(|_| requests),
            failed,
            spares,
            thread,
        }
    }

    /// A spare to make the next segment from, if one is ready.
    pub(super) fn take_spare(&self) -> Option<PathBuf> {
        let mut spares = self.spares.lock().unwrap_or_else(PoisonError::into_inner);
        (!spares.is_empty()).then(|| spares.remove(0))
    }

    /// Keeps `path` as a spare or deletes it, soon.
    pub(super) fn remove(&self, path: PathBuf) {
        let path = match &self.requests {
            Some(requests) => match requests.send(Request::Delete(path)) {
                Ok(()) => return,
                Err(error) => match error.0 {
                    Request::Delete(path) => path,
                    #[cfg(test)]
                    Request::Flush(_) => return,
                },
            },
            None => path,
        };
        delete(path, &self.failed);
    }

    /// The deletions that failed since the last call.
    pub(super) fn take_failures(&self) -> Vec<Failure> {
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until every deletion asked so far is done.
    #[cfg(test)]
    pub(super) fn wait(&self) {
        let (done, finished) = channel();
        if let Some(requests) = &self.requests
            && requests.send(Request::Flush(done)).is_ok()
        {
            let _ = finished.recv();
        }
    }
}

impl Drop for SegmentRemover {
    /// Finishes the deletions asked for, so that a queue closed cleanly
    /// leaves no finished segment behind.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps a finished segment as a spare while there are fewer than
/// [`MAX_SPARES`], or deletes it. A segment that cannot be made a spare is
/// deleted.
fn retire(path: PathBuf, failed: &Mutex<Vec<Failure>>, spares: &Mutex<Vec<PathBuf>>) {
    // A spare that could not be used comes back here, to be deleted.
    let is_segment = path.extension().is_some_and(|e| e == segment::EXTENSION);
    let wanted = is_segment && spares.lock().unwrap_or_else(PoisonError::into_inner).len() < MAX_SPARES;
    if wanted && let Ok(spare) = segment::make_spare(&path) {
        spares.lock().unwrap_or_else(PoisonError::into_inner).push(spare);
        return;
    }
    delete(path, failed);
}

fn delete(path: PathBuf, failed: &Mutex<Vec<Failure>>) {
    match fs::remove_file(&path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((path, error));
        }
        _ => {}
    }
}
