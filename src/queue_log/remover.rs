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

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// A failed deletion: the segment and why.
pub(super) type Failure = (PathBuf, io::Error);

/// The remover thread, or none if it could not be started (segments are
/// then deleted inline, as before it existed).
pub(super) struct SegmentRemover {
    /// Work for the thread; dropped to let it finish.
    requests: Option<Sender<Request>>,
    /// Deletions that failed, until the log takes them.
    failed: Arc<Mutex<Vec<Failure>>>,
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
    pub(super) fn start() -> SegmentRemover {
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (requests, receiver) = channel();
        let thread_failed = failed.clone();
        let thread = std::thread::Builder::new()
            .name("queue-remover".into())
            .spawn(move || {
                for request in receiver {
                    match request {
                        Request::Delete(path) => delete(path, &thread_failed),
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
            thread,
        }
    }

    /// Deletes `path`, soon.
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
