//! The file output's writer thread: appends encoded batches in the order
//! they were handed over, and syncs them in rounds (group commit).
//!
//! A round is every batch waiting when the thread gets to it: each is
//! appended to its files, then each file written is synced once, and only
//! then is every batch of the round answered. Batches handed over while a
//! round syncs wait for the next one and share its syncs, so the number of
//! `fdatasync` calls follows the disk's pace, not the number of batches,
//! and encoding (on the engine's threads) overlaps the syncing here.
//!
//! A batch is answered with the events its files refused for good (see
//! [`crate::path_fault`]) or with the failure that keeps it from counting as
//! stored: its write failed, or the sync of a file it wrote to failed.

use std::collections::HashMap;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use tokio::sync::oneshot;
use tracing::error;

use crate::encode::BatchBuffers;
use crate::error::FileOutputError;
use crate::open_files::OpenFiles;
use crate::path_fault::PathFaults;

/// Encoded batches kept for reuse, so that the steady state allocates no
/// buffers: as many as writes in flight by default.
const SPARE_BATCHES: usize = 4;

/// Buffers larger than this (an unusually big batch) are freed, not kept.
const SPARE_BATCH_BYTES: usize = 1 << 20;

/// An event whose file refused it for good.
#[derive(Debug)]
pub(crate) struct RefusedEvent {
    /// Its position in the batch.
    pub(crate) position: usize,
    /// Why its file cannot be written.
    pub(crate) reason: String,
}

/// What a batch's write came to.
pub(crate) type WriteOutcome = Result<Vec<RefusedEvent>, FileOutputError>;

/// What the thread is asked to do.
enum Command {
    /// Append and sync an encoded batch.
    Write {
        batch: BatchBuffers,
        reply: oneshot::Sender<WriteOutcome>,
    },
    /// Sync and close every file (the output's `close`).
    Close {
        reply: oneshot::Sender<Result<(), FileOutputError>>,
    },
}

/// The engine's side of the writer thread.
#[derive(Debug)]
pub(crate) struct WriterHandle {
    commands: mpsc::Sender<Command>,
    /// Buffers the thread has finished with.
    spare: Arc<Mutex<Vec<BatchBuffers>>>,
}

impl WriterHandle {
    /// Starts the thread. It ends when the handle is dropped, after what was
    /// handed over before.
    pub(crate) fn spawn(files: OpenFiles, path_faults: PathFaults) -> io::Result<WriterHandle> {
        let (commands, receiver) = mpsc::channel();
        let spare = Arc::new(Mutex::new(Vec::new()));
        let thread = WriterThread {
            files,
            path_faults,
            spare: spare.clone(),
        };
        std::thread::Builder::new()
            .name("file-output".into())
            .spawn(move || thread.run(receiver))?;
        Ok(WriterHandle { commands, spare })
    }

    /// Buffers for encoding the next batch, reused when the thread has some
    /// to spare.
    pub(crate) fn buffers(&self) -> BatchBuffers {
        lock(&self.spare).pop().unwrap_or_default()
    }

    /// Hands an encoded batch over; batches are appended in the order of
    /// these calls. The answer comes once the batch is synced, or has failed.
    pub(crate) fn write(&self, batch: BatchBuffers) -> oneshot::Receiver<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        // If the thread is gone, `reply` is dropped with the command and
        // the caller sees the answer channel closed.
        let _ = self.commands.send(Command::Write { batch, reply });
        answer
    }

    /// Asks the thread to sync and close every file, after the batches
    /// handed over before.
    pub(crate) fn close(&self) -> oneshot::Receiver<Result<(), FileOutputError>> {
        let (reply, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Close { reply });
        answer
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing behind these locks is left half-changed by a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The thread's state.
struct WriterThread {
    files: OpenFiles,
    /// Tells the open errors that are the events' fault from the others.
    path_faults: PathFaults,
    spare: Arc<Mutex<Vec<BatchBuffers>>>,
}

/// A batch appended in the current round, waiting for the round's syncs.
struct Appended {
    batch: BatchBuffers,
    reply: oneshot::Sender<WriteOutcome>,
    outcome: WriteOutcome,
}

impl WriterThread {
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        while let Ok(first) = commands.recv() {
            let round: Vec<Command> = std::iter::once(first).chain(commands.try_iter()).collect();
            // A bug must cost its round, not the output: the round's
            // batches get an error (their answers are dropped) and the
            // thread goes on with the next.
            if catch_unwind(AssertUnwindSafe(|| self.round(round))).is_err() {
                error!("the file output's writer panicked; the batches of that round are reported as failed");
            }
        }
    }

    /// Appends every batch of the round in order, then syncs and answers
    /// them; a close request ends the round's appends where it stands.
    fn round(&mut self, commands: Vec<Command>) {
        let mut appended = Vec::with_capacity(commands.len());
        for command in commands {
            match command {
                Command::Write { batch, reply } => {
                    let outcome = self.append(&batch);
                    appended.push(Appended { batch, reply, outcome });
                }
                Command::Close { reply } => {
                    self.sync_and_answer(std::mem::take(&mut appended));
                    let _ = reply.send(self.files.close_all());
                }
            }
        }
        self.sync_and_answer(appended);
    }

    /// Appends a batch to its files; returns the events of the files that
    /// refused them for good.
    fn append(&mut self, batch: &BatchBuffers) -> WriteOutcome {
        let mut refused = Vec::new();
        for pending in batch.files() {
            match self.files.append(&pending.path, &pending.lines) {
                Ok(()) => {}
                Err(error) if self.path_faults.blames_events(&error) => {
                    let reason = error.to_string();
                    refused.extend(pending.events.iter().map(|&position| RefusedEvent {
                        position,
                        reason: reason.clone(),
                    }));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(refused)
    }

    /// Syncs what the round wrote, then answers each batch: a batch that
    /// wrote to a file whose sync failed fails too.
    fn sync_and_answer(&mut self, appended: Vec<Appended>) {
        if appended.is_empty() {
            return;
        }
        let failed = self.files.sync_written();
        let failed: HashMap<&str, &io::Error> = failed.iter().map(|(path, error)| (path.as_str(), error)).collect();
        let mut spare = Vec::with_capacity(appended.len());
        for Appended {
            batch,
            reply,
            mut outcome,
        } in appended
        {
            let failed_sync = batch
                .files()
                .iter()
                .find_map(|file| Some((&file.path, *failed.get(file.path.as_str())?)));
            if outcome.is_ok()
                && let Some((path, error)) = failed_sync
            {
                outcome = Err(FileOutputError::Sync {
                    path: path.into(),
                    error: copy_error(error),
                });
            }
            let _ = reply.send(outcome);
            if batch.capacity() <= SPARE_BATCH_BYTES {
                spare.push(batch);
            }
        }
        let mut kept = lock(&self.spare);
        let room = SPARE_BATCHES.saturating_sub(kept.len());
        kept.extend(spare.into_iter().take(room));
    }
}

/// The same error again, for each batch that shares one failed sync.
fn copy_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use eventstash_plugin_api::{Event, FieldTemplate, Format, OutputBatch};

    use super::*;

    fn batch(template: &FieldTemplate, events: &[(&str, &str)]) -> BatchBuffers {
        let events: Vec<Event> = events
            .iter()
            .map(|(kind, id)| {
                let data = bytes::Bytes::from_static(b"{}");
                Event::new(Format::Json, data, (*kind).into(), (*id).into(), chrono::Utc::now())
            })
            .collect();
        let mut buffers = BatchBuffers::default();
        buffers.encode(template, &OutputBatch::from(events)).unwrap();
        buffers
    }

    #[test]
    fn a_round_appends_in_order_and_syncs_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let template = FieldTemplate::parse(dir.path().join("%{index}.jsonl").to_str().unwrap()).unwrap();
        let mut thread = WriterThread {
            files: OpenFiles::new(16, true),
            path_faults: PathFaults::new(&template),
            spare: Arc::default(),
        };
        let batches = [
            batch(&template, &[("a", "1"), ("b", "2")]),
            batch(&template, &[("a", "3")]),
            batch(&template, &[("a", "4"), ("b", "5")]),
        ];
        let mut answers = Vec::new();
        let commands = batches
            .into_iter()
            .map(|batch| {
                let (reply, answer) = oneshot::channel();
                answers.push(answer);
                Command::Write { batch, reply }
            })
            .collect();

        thread.round(commands);

        assert_eq!(thread.files.syncs(), 2, "one sync per file for the whole round");
        for mut answer in answers {
            let refused = answer.try_recv().expect("answered").expect("stored");
            assert!(refused.is_empty());
        }
        let ids = |name: &str| crate::encode::tests::ids(&std::fs::read(dir.path().join(name)).unwrap());
        assert_eq!(ids("a.jsonl"), ["1", "3", "4"]);
        assert_eq!(ids("b.jsonl"), ["2", "5"]);
        assert_eq!(lock(&thread.spare).len(), 3, "the buffers are kept for reuse");
    }

    #[test]
    fn a_batch_whose_write_fails_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let template = FieldTemplate::parse("/dev/%{kind}").unwrap();
        let mut thread = WriterThread {
            files: OpenFiles::new(16, true),
            path_faults: PathFaults::new(&template),
            spare: Arc::default(),
        };
        let good = FieldTemplate::parse(dir.path().join("ok.jsonl").to_str().unwrap()).unwrap();
        let (full_reply, mut full) = oneshot::channel();
        let (ok_reply, mut ok) = oneshot::channel();
        thread.round(vec![
            // `/dev/full` answers every write with ENOSPC.
            Command::Write {
                batch: batch(&template, &[("full", "1")]),
                reply: full_reply,
            },
            Command::Write {
                batch: batch(&good, &[("x", "2")]),
                reply: ok_reply,
            },
        ]);
        let error = full.try_recv().unwrap().expect_err("a full disk is an error");
        assert!(error.to_string().contains("/dev/full"), "{error}");
        ok.try_recv().unwrap().expect("the other batch is stored");
    }
}
