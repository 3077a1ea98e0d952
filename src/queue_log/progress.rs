//! Which outputs have finished which records: the in-memory half of
//! per-output progress (the file half is `checkpoint.rs`).
//!
//! Each output keeps a low watermark — every record at or below it is
//! finished — and the set of records above it that finished out of order.
//! Seqs can have gaps (records lost to damage never come back), so the
//! watermark moves over the records that exist, not over the integers: the
//! tracker keeps every record some output has not passed, in seq order.

use std::collections::{BTreeSet, VecDeque};

use super::{Depth, OutputStats};

/// The size of one record.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordMeta {
    pub(super) seq: u64,
    pub(super) events: u32,
    pub(super) bytes: u64,
}

impl Depth {
    fn add(&mut self, record: &RecordMeta) {
        self.records += 1;
        self.events += u64::from(record.events);
        self.bytes += record.bytes;
    }

    fn sub(&mut self, record: &RecordMeta) {
        self.records -= 1;
        self.events -= u64::from(record.events);
        self.bytes -= record.bytes;
    }
}

/// One output's progress.
#[derive(Debug, Clone)]
pub(super) struct OutputProgress {
    /// The output's stable id, the key in the progress file.
    pub(super) id: String,
    /// Every record at or below this seq is finished.
    pub(super) watermark: u64,
    /// Records above the watermark that are finished; the watermark swallows
    /// them once the records before them finish.
    pub(super) finished_above: BTreeSet<u64>,
    /// What this output has not finished.
    pending: Depth,
}

impl OutputProgress {
    pub(super) fn new(id: String, watermark: u64, finished_above: BTreeSet<u64>) -> OutputProgress {
        OutputProgress {
            id,
            watermark,
            finished_above,
            pending: Depth::default(),
        }
    }

    fn has_finished(&self, seq: u64) -> bool {
        seq <= self.watermark || self.finished_above.contains(&seq)
    }
}

/// A record some output has not passed yet.
#[derive(Debug)]
struct Tracked {
    meta: RecordMeta,
    /// How many outputs have not finished it; at zero it no longer counts
    /// in the depth.
    unfinished_by: usize,
}

/// Every output's progress over the records of one log.
#[derive(Debug)]
pub(super) struct Progress {
    /// Records above the lowest watermark, in seq order.
    records: VecDeque<Tracked>,
    outputs: Vec<OutputProgress>,
    /// What some output has not finished.
    unfinished: Depth,
    /// The highest seq known; stands in for the lowest watermark when there
    /// are no outputs.
    end: u64,
}

impl Progress {
    pub(super) fn new(outputs: Vec<OutputProgress>, end: u64) -> Progress {
        Progress {
            records: VecDeque::new(),
            outputs,
            unfinished: Depth::default(),
            end,
        }
    }

    pub(super) fn outputs(&self) -> &[OutputProgress] {
        &self.outputs
    }

    /// Adds a record found on disk; returns the outputs that have not
    /// finished it. Call [`settle`](Self::settle) after the last one.
    pub(super) fn restore(&mut self, meta: RecordMeta) -> Vec<usize> {
        let pending: Vec<usize> = (0..self.outputs.len())
            .filter(|&i| !self.outputs[i].has_finished(meta.seq))
            .collect();
        self.end = self.end.max(meta.seq);
        if meta.seq > self.min_watermark() {
            for &output in &pending {
                self.outputs[output].pending.add(&meta);
            }
            self.track(meta, pending.len());
        }
        pending
    }

    /// Forgets finished seqs that are not records (lost to damage), then
    /// moves each watermark as far as the restored records allow.
    pub(super) fn settle(&mut self) {
        for output in 0..self.outputs.len() {
            let records = &self.records;
            let progress = &mut self.outputs[output];
            let watermark = progress.watermark;
            progress
                .finished_above
                .retain(|&seq| seq > watermark && records.binary_search_by_key(&seq, |r| r.meta.seq).is_ok());
            self.advance(output);
        }
        self.prune();
    }

    /// Adds a newly appended record, which no output has finished.
    pub(super) fn append(&mut self, meta: RecordMeta) {
        self.end = meta.seq;
        // With no outputs there is nobody to wait for: the record is
        // finished as soon as it is written.
        if self.outputs.is_empty() {
            return;
        }
        for output in &mut self.outputs {
            output.pending.add(&meta);
        }
        self.track(meta, self.outputs.len());
    }

    /// Keeps `meta` in the records, unfinished by `unfinished_by` outputs
    /// whose pending depth the caller has counted.
    fn track(&mut self, meta: RecordMeta, unfinished_by: usize) {
        if unfinished_by > 0 {
            self.unfinished.add(&meta);
        }
        self.records.push_back(Tracked { meta, unfinished_by });
    }

    /// Records that `output` has finished record `seq`; finishing twice, or
    /// a seq the log does not hold, changes nothing. Returns whether
    /// anything changed.
    pub(super) fn finish(&mut self, output: usize, seq: u64) -> bool {
        if self.outputs[output].has_finished(seq) {
            return false;
        }
        let Ok(index) = self.records.binary_search_by_key(&seq, |r| r.meta.seq) else {
            return false;
        };
        let tracked = &mut self.records[index];
        let progress = &mut self.outputs[output];
        progress.finished_above.insert(seq);
        progress.pending.sub(&tracked.meta);
        tracked.unfinished_by -= 1;
        if tracked.unfinished_by == 0 {
            self.unfinished.sub(&tracked.meta);
        }
        self.advance(output);
        self.prune();
        true
    }

    /// Moves `output`'s watermark over the records it has finished in a row.
    fn advance(&mut self, output: usize) {
        let progress = &mut self.outputs[output];
        let mut next = self.records.partition_point(|r| r.meta.seq <= progress.watermark);
        while let Some(tracked) = self.records.get(next) {
            if !progress.finished_above.remove(&tracked.meta.seq) {
                break;
            }
            progress.watermark = tracked.meta.seq;
            next += 1;
        }
    }

    /// Drops the records every output has passed.
    fn prune(&mut self) {
        let lowest = self.min_watermark();
        while self.records.front().is_some_and(|r| r.meta.seq <= lowest) {
            self.records.pop_front();
        }
    }

    /// The lowest watermark: every record at or below it is finished by
    /// every output.
    pub(super) fn min_watermark(&self) -> u64 {
        self.outputs.iter().map(|o| o.watermark).min().unwrap_or(self.end)
    }

    /// What some output has not finished.
    pub(super) fn unfinished(&self) -> Depth {
        self.unfinished
    }

    pub(super) fn output_stats(&self) -> Vec<OutputStats> {
        self.outputs
            .iter()
            .map(|o| OutputStats {
                id: o.id.clone(),
                watermark: o.watermark,
                pending: o.pending,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> RecordMeta {
        RecordMeta {
            seq,
            events: 10,
            bytes: 100,
        }
    }

    fn two_outputs() -> Progress {
        let outputs = ["a", "b"].map(|id| OutputProgress::new(id.into(), 0, BTreeSet::new()));
        let mut progress = Progress::new(outputs.into(), 0);
        for seq in 1..=5 {
            progress.append(record(seq));
        }
        progress
    }

    #[test]
    fn out_of_order_finishes_move_the_watermark_once_the_gap_closes() {
        let mut progress = two_outputs();
        for seq in [3, 2, 5] {
            assert!(progress.finish(0, seq));
        }
        assert_eq!(progress.outputs()[0].watermark, 0, "seq 1 is still open");
        assert_eq!(progress.output_stats()[0].pending.records, 2);
        assert!(progress.finish(0, 1));
        assert_eq!(progress.outputs()[0].watermark, 3);
        assert_eq!(progress.outputs()[0].finished_above, BTreeSet::from([5]));
        assert!(progress.finish(0, 4));
        assert_eq!(progress.outputs()[0].watermark, 5);
        assert!(progress.outputs()[0].finished_above.is_empty());
        assert_eq!(progress.output_stats()[0].pending, Depth::default());
    }

    #[test]
    fn depth_counts_records_some_output_has_not_finished() {
        let mut progress = two_outputs();
        assert_eq!(progress.unfinished().records, 5);
        progress.finish(0, 2);
        assert_eq!(progress.unfinished().records, 5);
        progress.finish(1, 2);
        assert_eq!(
            progress.unfinished(),
            Depth {
                records: 4,
                events: 40,
                bytes: 400
            }
        );
        assert_eq!(progress.min_watermark(), 0);
        progress.finish(0, 1);
        progress.finish(1, 1);
        assert_eq!(progress.min_watermark(), 2);
        assert_eq!(progress.records.len(), 3, "records both outputs passed are dropped");
    }

    #[test]
    fn finishing_twice_or_an_unknown_seq_changes_nothing() {
        let mut progress = two_outputs();
        assert!(progress.finish(1, 4));
        assert!(!progress.finish(1, 4));
        assert!(!progress.finish(1, 99));
        assert_eq!(progress.output_stats()[1].pending.records, 4);
    }

    #[test]
    fn watermark_steps_over_seqs_lost_to_damage() {
        let outputs = vec![OutputProgress::new("a".into(), 0, BTreeSet::from([7]))];
        let mut progress = Progress::new(outputs, 0);
        for seq in [1, 2, 7] {
            progress.restore(record(seq));
        }
        progress.settle();
        progress.finish(0, 1);
        progress.finish(0, 2);
        assert_eq!(progress.outputs()[0].watermark, 7, "seqs 3..=6 do not exist");
        assert_eq!(progress.unfinished(), Depth::default());
    }
}
