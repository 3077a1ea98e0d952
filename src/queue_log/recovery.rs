//! Reading a queue directory back: the progress file, then every segment in
//! order, into the state a [`QueueLog`](super::QueueLog) continues from and
//! the report of what was replayed and skipped.
//!
//! This only reads, so `inspect` uses it as it is; `open` then applies what
//! it decided (cutting a torn tail, starting a new segment).

use std::collections::BTreeSet;
use std::path::Path;

use super::checkpoint::{self, Loaded, Saved};
use super::progress::{OutputProgress, Progress};
use super::segment::{self, SegmentInfo, SegmentScan};
use super::{ProgressReset, QueueLogError, SkippedBytes, StoredBatch};

/// Where the next record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppendTo {
    /// The last segment, cut to `valid_len` bytes if it is longer.
    LastSegment { valid_len: u64, file_len: u64 },
    /// A new segment: there is none, or the last one has damage with data
    /// after it, which is kept as it is.
    NewSegment,
}

/// A queue directory as read back.
#[derive(Debug)]
pub(super) struct Recovered {
    pub(super) segments: Vec<SegmentInfo>,
    pub(super) append_to: AppendTo,
    pub(super) progress: Progress,
    pub(super) next_seq: u64,
    pub(super) replay: Vec<StoredBatch>,
    pub(super) skipped: Vec<SkippedBytes>,
    pub(super) progress_reset: Option<ProgressReset>,
    pub(super) new_outputs: Vec<String>,
    pub(super) removed_outputs: Vec<String>,
}

/// Where an output starts: after its saved progress, or (a new output) at
/// the end of the log.
type Start = Option<(u64, BTreeSet<u64>)>;

/// Reads `dir` for `outputs`; with `decode`, the events some output has not
/// finished are decoded for replay.
pub(super) fn recover(dir: &Path, outputs: &[String], decode: bool) -> Result<Recovered, QueueLogError> {
    let loaded = checkpoint::load(dir)?;
    let (starts, mut progress_reset, removed_outputs) = starts(dir, outputs, &loaded);
    let wants = |seq: u64| {
        decode
            && starts
                .iter()
                .flatten()
                .any(|(watermark, finished)| seq > *watermark && !finished.contains(&seq))
    };

    let (scans, skipped, last_seq) = scan_all(dir, wants)?;
    let append_to = match scans.last() {
        Some(last) if last.damage.as_ref().is_none_or(|d| d.torn_tail) => AppendTo::LastSegment {
            valid_len: last.valid_len,
            file_len: last.info.len,
        },
        _ => AppendTo::NewSegment,
    };
    let next_seq = next_seq(&loaded, last_seq, scans.last().map(|s| s.info.base), append_to);
    if matches!(loaded, Loaded::Missing) && last_seq > 0 {
        progress_reset = Some(ProgressReset {
            path: checkpoint::path(dir),
            reason: "the progress file is missing".into(),
        });
    }

    let end = next_seq - 1;
    let mut new_outputs = Vec::new();
    let tracked = outputs.iter().zip(starts).map(|(id, start)| {
        let (watermark, finished) = start.unwrap_or_else(|| {
            new_outputs.push(id.clone());
            (end, BTreeSet::new())
        });
        OutputProgress::new(id.clone(), watermark, finished)
    });
    let mut progress = Progress::new(tracked.collect(), end);
    let (segments, replay) = restore(scans, &mut progress);

    Ok(Recovered {
        segments,
        append_to,
        progress,
        next_seq,
        replay,
        skipped,
        progress_reset,
        new_outputs,
        removed_outputs,
    })
}

/// Reads every segment in order; returns the scans, the damage found and
/// the last readable seq (0 if none).
fn scan_all(
    dir: &Path,
    wants: impl Fn(u64) -> bool + Copy,
) -> Result<(Vec<SegmentScan>, Vec<SkippedBytes>, u64), QueueLogError> {
    let mut scans = Vec::new();
    let mut skipped = Vec::new();
    let mut last_seq = 0;
    for (base, path) in segment::list(dir)? {
        let scan = segment::scan(&path, base, last_seq, wants)?;
        last_seq = scan.info.last_seq.unwrap_or(last_seq);
        if let Some(damage) = &scan.damage {
            skipped.push(SkippedBytes {
                segment: path,
                offset: damage.offset,
                bytes: damage.bytes,
                reason: damage.reason.clone(),
                truncated: false,
            });
        }
        scans.push(scan);
    }
    Ok((scans, skipped, last_seq))
}

/// Feeds the scanned records to `progress`; returns the segments and the
/// batches to replay.
fn restore(scans: Vec<SegmentScan>, progress: &mut Progress) -> (Vec<SegmentInfo>, Vec<StoredBatch>) {
    let mut replay = Vec::new();
    let mut segments = Vec::with_capacity(scans.len());
    for scan in scans {
        for record in scan.records {
            let pending = progress.restore(record.meta);
            // `wants` and `restore` apply the same rule, so the events are
            // there exactly when some output is pending.
            if let (false, Some(events)) = (pending.is_empty(), record.events) {
                replay.push(StoredBatch {
                    seq: record.meta.seq,
                    events,
                    pending,
                });
            }
        }
        segments.push(scan.info);
    }
    progress.settle();
    (segments, replay)
}

/// Each output's start, the reset to report if the progress file was
/// damaged, and the saved outputs no longer configured.
fn starts(dir: &Path, outputs: &[String], loaded: &Loaded) -> (Vec<Start>, Option<ProgressReset>, Vec<String>) {
    let from_the_beginning = || outputs.iter().map(|_| Some((0, BTreeSet::new()))).collect();
    match loaded {
        Loaded::Found(saved) => {
            let starts = outputs
                .iter()
                .map(|id| {
                    let output = saved.outputs.iter().find(|o| &o.id == id)?;
                    Some((output.watermark, output.finished_above.clone()))
                })
                .collect();
            let removed = saved
                .outputs
                .iter()
                .filter(|o| !outputs.contains(&o.id))
                .map(|o| o.id.clone())
                .collect();
            (starts, None, removed)
        }
        Loaded::Missing => (from_the_beginning(), None, Vec::new()),
        Loaded::Damaged(reason) => {
            let reset = ProgressReset {
                path: checkpoint::path(dir),
                reason: format!("the progress file is damaged: {reason}"),
            };
            (from_the_beginning(), Some(reset), Vec::new())
        }
    }
}

/// The seq the next record gets: above every seq ever given out, as far as
/// the disk tells. A watermark counts too: records lost with a torn tail may
/// have been finished, and a new record must not take their seq.
fn next_seq(loaded: &Loaded, last_record: u64, last_base: Option<u64>, append_to: AppendTo) -> u64 {
    let mut next = last_record.saturating_add(1);
    if let Loaded::Found(Saved { next_seq, outputs }) = loaded {
        next = next.max(*next_seq);
        for output in outputs {
            next = next.max(output.watermark.saturating_add(1));
        }
    }
    if let Some(base) = last_base {
        // A new segment must not take the name of the last one.
        let past = match append_to {
            AppendTo::LastSegment { .. } => base,
            AppendTo::NewSegment => base.saturating_add(1),
        };
        next = next.max(past);
    }
    next
}
