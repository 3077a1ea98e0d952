//! The storage layer of the persisted pipeline queue: a log of event batches
//! in segment files, with a checksum on every record and each output's
//! progress, so that an acknowledged event survives `kill -9` and a restart
//! resends to each output only what it has not finished.
//!
//! A queue directory holds segment files (`segment.rs`) of records
//! (`record.rs`) and one progress file (`checkpoint.rs`). The engine drives a
//! [`QueueLog`] from one blocking thread: [`append`](QueueLog::append) a batch
//! per producer write, [`sync`](QueueLog::sync) once per group of appends
//! before acknowledging any of them, [`finish`](QueueLog::finish) as outputs
//! complete batches, and [`checkpoint`](QueueLog::checkpoint) now and then to
//! save progress and delete segments nobody needs. Everything is plain
//! synchronous `std::fs`; a failure is an error naming the file, never a
//! panic, and leaves the log usable.

mod checkpoint;
mod dir_lock;
mod error;
mod progress;
mod record;
mod recovery;
mod remover;
mod report;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use eventstash_plugin_api::Event;

pub use error::{DecodeError, QueueLogError};
pub use report::{
    Depth, Inspection, OutputStats, ProgressReset, QueueStats, Recovery, SkipReason, SkippedBytes, StoredBatch,
};

use dir_lock::DirLock;
use progress::{Progress, RecordMeta};
use recovery::AppendTo;
use remover::SegmentRemover;
use segment::{SegmentInfo, SegmentWriter};

/// How a queue log lays out its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is closed and a new one started once the next record would
    /// take it past this size. Disk is given back a whole segment at a time.
    pub segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            segment_bytes: 32 * 1024 * 1024,
        }
    }
}

/// An encoding buffer larger than this is let go after use, so that one huge
/// batch does not pin its size in memory.
const KEEP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The log of one pipeline queue directory, driven by one owner (the
/// engine's queue thread). Two logs must never open the same directory.
pub struct QueueLog {
    /// Deletes finished segments without holding up appends. Declared
    /// first, so dropped first: its deletions finish while the directory
    /// is still locked.
    remover: SegmentRemover,
    /// Keeps other agents out of the directory while this log is open.
    _lock: DirLock,
    /// The queue directory.
    dir: PathBuf,
    options: LogOptions,
    /// Every segment file, oldest first; the last is the one `writer` holds.
    segments: VecDeque<SegmentInfo>,
    /// The segment being appended to.
    writer: SegmentWriter,
    /// Closed segments with writes not yet synced: the next `sync` covers
    /// them too, so a roll-over never weakens an acknowledgement.
    closed_unsynced: Vec<SegmentWriter>,
    /// A segment was created since the directory was last synced.
    dir_unsynced: bool,
    /// Which output has finished which record.
    progress: Progress,
    /// Progress or seqs changed since the last checkpoint.
    checkpoint_due: bool,
    next_seq: u64,
    /// Reused for encoding, so that appends do not allocate.
    buf: Vec<u8>,
}

impl QueueLog {
    /// Opens the queue in `dir`, creating it if needed, for the outputs with
    /// the given ids (stable and unique, e.g. the configured names; output
    /// `i` below is `outputs[i]`). Progress is kept per id: an output not
    /// seen before starts at the end of the log, and one no longer listed is
    /// forgotten. Damaged records and a damaged progress file are reported
    /// in the [`Recovery`], not errors.
    pub fn open(dir: &Path, outputs: &[String], options: LogOptions) -> Result<(QueueLog, Recovery), QueueLogError> {
        fs::create_dir_all(dir).map_err(QueueLogError::io("create queue directory", dir))?;
        let lock = DirLock::acquire(dir)?;
        checkpoint::remove_stale_temp(dir)?;
        let mut recovered = recovery::recover(dir, outputs, true)?;
        let remover = SegmentRemover::start(segment::list_spares(dir)?);
        let mut segments = VecDeque::from(recovered.segments);
        let next_seq = recovered.next_seq;
        let (writer, dir_unsynced) = match (recovered.append_to, segments.back()) {
            (AppendTo::LastSegment { valid_len, file_len }, Some(last)) => {
                let writer = SegmentWriter::reopen(&last.path, valid_len, file_len)?;
                if let Some(cut) = recovered.skipped.last_mut().filter(|s| s.segment == last.path) {
                    cut.truncated = true;
                }
                (writer, false)
            }
            _ => {
                let writer = new_segment(&remover, dir, next_seq)?;
                segments.push_back(new_segment_info(&writer, next_seq));
                (writer, true)
            }
        };
        if let Some(last) = segments.back_mut() {
            last.len = writer.len();
        }
        let log = QueueLog {
            remover,
            _lock: lock,
            dir: dir.to_path_buf(),
            options,
            segments,
            writer,
            closed_unsynced: Vec::new(),
            dir_unsynced,
            progress: recovered.progress,
            checkpoint_due: true,
            next_seq,
            buf: Vec::new(),
        };
        let recovery = Recovery {
            replay: recovered.replay,
            skipped: recovered.skipped,
            progress_reset: recovered.progress_reset,
            new_outputs: recovered.new_outputs,
            removed_outputs: recovered.removed_outputs,
        };
        Ok((log, recovery))
    }

    /// Reads the queue in `dir` as [`open`](Self::open) would, without
    /// changing anything, for `eventstash queue inspect`. While an agent
    /// writes to the queue, a record being written shows as a torn tail.
    pub fn inspect(dir: &Path, outputs: &[String]) -> Result<Inspection, QueueLogError> {
        let recovered = recovery::recover(dir, outputs, false)?;
        let stats = QueueStats {
            unfinished: recovered.progress.unfinished(),
            outputs: recovered.progress.output_stats(),
            segments: recovered.segments.len(),
            disk_bytes: recovered.segments.iter().map(|s| s.len).sum(),
            next_seq: recovered.next_seq,
        };
        Ok(Inspection {
            stats,
            skipped: recovered.skipped,
            progress_reset: recovered.progress_reset,
        })
    }

    /// Appends a batch as one record and returns its seq, which grows with
    /// every batch and across restarts. The record is written but not
    /// durable until [`sync`](Self::sync). If this fails (a full disk) the
    /// partial record is cut off and the log can be appended to again.
    pub fn append(&mut self, events: &[Event]) -> Result<u64, QueueLogError> {
        let seq = self.next_seq;
        record::encode(seq, events, &mut self.buf)?;
        let frame_len = self.buf.len() as u64;
        let segment_has_records = self.segments.back().is_some_and(|s| s.last_seq.is_some());
        let full = segment_has_records && self.writer.len() + frame_len > self.options.segment_bytes;
        if full || self.writer.is_spoiled() {
            self.roll()?;
        }
        let written = self.writer.append(&mut self.buf);
        if self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = Vec::new();
        }
        written?;
        if let Some(last) = self.segments.back_mut() {
            last.last_seq = Some(seq);
            last.len = self.writer.len();
        }
        self.progress.append(RecordMeta {
            seq,
            events: events.len() as u32,
            bytes: frame_len,
        });
        self.next_seq += 1;
        self.checkpoint_due = true;
        Ok(seq)
    }

    /// Closes the current segment and starts the next.
    fn roll(&mut self) -> Result<(), QueueLogError> {
        if self.segments.back().is_some_and(|s| s.last_seq.is_none()) {
            // Spoiled before its first record, the segment holds nothing,
            // and its name is the one the next segment needs.
            let path = self.writer.path();
            fs::remove_file(path).map_err(QueueLogError::io("remove spoiled empty segment", path))?;
            self.segments.pop_back();
        }
        let writer = new_segment(&self.remover, &self.dir, self.next_seq)?;
        self.segments.push_back(new_segment_info(&writer, self.next_seq));
        let closed = std::mem::replace(&mut self.writer, writer);
        // A spoiled segment's unsynced tail is given up, not fsynced again.
        if closed.is_dirty() && !closed.is_spoiled() {
            self.closed_unsynced.push(closed);
        }
        self.dir_unsynced = true;
        Ok(())
    }

    /// Makes every record appended so far durable: the segment files, then
    /// the directory if a segment was created. Producers may be acknowledged
    /// only after this returns `Ok`. After an error, the records appended
    /// since the last successful sync must be treated as not durable (fail
    /// their producers); later appends go to a new segment and are not
    /// affected.
    pub fn sync(&mut self) -> Result<(), QueueLogError> {
        let closed = std::mem::take(&mut self.closed_unsynced);
        let mut result = Ok(());
        for mut writer in closed {
            result = result.and(writer.sync());
        }
        result = result.and(self.writer.sync());
        if self.dir_unsynced {
            result = result.and(sync_dir(&self.dir));
            self.dir_unsynced = result.is_err();
        }
        result
    }

    /// Records that output `output` (an index into the ids given to `open`)
    /// has finished batch `seq`: delivered it or dead-lettered it.
    /// Completions may come in any order; finishing a batch twice, or one
    /// the log does not hold, changes nothing.
    ///
    /// # Panics
    ///
    /// If `output` is not an index into the outputs given to `open`.
    pub fn finish(&mut self, output: usize, seq: u64) {
        if self.progress.finish(output, seq) {
            self.checkpoint_due = true;
        }
    }

    /// Saves every output's progress (atomically: a crash leaves the old
    /// file or the new one) and has the segments whose records every output
    /// has finished deleted, beside this thread (see `remover.rs`); a
    /// deletion that failed is reported by the next call, and tried again.
    /// The segment being appended to is kept.
    pub fn checkpoint(&mut self) -> Result<(), QueueLogError> {
        if self.checkpoint_due {
            checkpoint::save(&self.dir, self.next_seq, self.progress.outputs())?;
            self.checkpoint_due = false;
        }
        // Deletions that failed are tried again, and the last reported.
        let mut failures = self.remover.take_failures();
        for (path, _) in &failures {
            self.remover.remove(path.clone());
        }
        let finished_up_to = self.progress.min_watermark();
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else { break };
            if oldest.last_seq.is_some_and(|seq| seq > finished_up_to) {
                break;
            }
            if let Some(oldest) = self.segments.pop_front() {
                self.remover.remove(oldest.path);
            }
        }
        match failures.pop() {
            Some((path, source)) => Err(QueueLogError::io("delete finished segment", &path)(source)),
            None => Ok(()),
        }
    }

    /// Waits for the finished segments to be deleted.
    #[cfg(test)]
    fn wait_for_deletions(&self) {
        self.remover.wait();
    }

    /// How deep the queue is and where each output stands.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            unfinished: self.progress.unfinished(),
            outputs: self.progress.output_stats(),
            segments: self.segments.len(),
            disk_bytes: self.segments.iter().map(|s| s.len).sum(),
            next_seq: self.next_seq,
        }
    }

    /// The segment being appended to, for tests that damage it.
    #[cfg(test)]
    fn writer_mut(&mut self) -> &mut SegmentWriter {
        &mut self.writer
    }
}

impl fmt::Debug for QueueLog {
    // Not derived: the encoding buffer and the progress hold megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// The segment for records from `base`: made from a spare when one is
/// ready, else a new file. A spare that cannot be used is let go.
fn new_segment(remover: &SegmentRemover, dir: &Path, base: u64) -> Result<SegmentWriter, QueueLogError> {
    if let Some(spare) = remover.take_spare() {
        match SegmentWriter::recycle(&spare, dir, base) {
            Ok(writer) => return Ok(writer),
            Err(_) => remover.remove(spare),
        }
    }
    SegmentWriter::create(dir, base)
}

fn new_segment_info(writer: &SegmentWriter, base: u64) -> SegmentInfo {
    SegmentInfo {
        base,
        path: writer.path().to_path_buf(),
        last_seq: None,
        len: writer.len(),
    }
}

/// Makes the directory's entries (created, renamed files) durable.
fn sync_dir(dir: &Path) -> Result<(), QueueLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(QueueLogError::io("fsync directory", dir))
}
