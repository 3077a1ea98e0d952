//! Spares: finished segments written over by the next ones. Their old
//! records are never read back, damage in them is judged as in any
//! segment, and a restart keeps their blocks.

use std::fs;
use std::path::Path;

use super::*;
use crate::queue_log::{SkipReason, SkippedBytes};

fn spare_files(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, "spare")
}

fn record_bytes(dir: &Path) -> u64 {
    let (mut probe, _) = open(&dir.join("probe"), &["out"]);
    probe.append(&batch(1, 10)).unwrap();
    probe.stats().unfinished.bytes
}

/// A log of three-record segments whose records 1 to 6 are finished and
/// whose first two segments are spares; record 7 is unfinished.
fn log_with_two_spares(dir: &Path) -> (QueueLog, u64) {
    let record = record_bytes(&dir.join("sizes"));
    let (mut log, _) = open_small(dir, &["out"], 8 + 3 * record + record / 2);
    append_synced(&mut log, 7, 10);
    for seq in 1..=6 {
        log.finish(0, seq);
    }
    log.checkpoint().unwrap();
    log.wait_for_deletions();
    (log, record)
}

#[test]
fn finished_segments_become_spares_and_the_next_segments_are_made_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, record) = log_with_two_spares(dir.path());
    assert_eq!(spare_files(dir.path()).len(), 2);
    assert_eq!(segment_files(dir.path()).len(), 1, "{:?}", segment_files(dir.path()));

    let written = append_synced(&mut log, 6, 10);
    assert!(spare_files(dir.path()).is_empty(), "both spares were used");
    assert_eq!(
        segment_names(dir.path()),
        [
            "00000000000000000007.seg",
            "00000000000000000010.seg",
            "00000000000000000013.seg"
        ]
    );
    assert!(log.writer_mut().is_recycled());
    let last = segment_files(dir.path()).pop().unwrap();
    assert!(
        fs::metadata(&last).unwrap().len() > 8 + 2 * record,
        "a recycled segment keeps its old blocks (and records) after its one new record"
    );
    drop(log);

    let (mut log, recovery) = open(dir.path(), &["out"]);
    assert!(recovery.skipped.is_empty(), "{:?}", recovery.skipped);
    let seqs: Vec<u64> = recovery.replay.iter().map(|b| b.seq).collect();
    assert_eq!(seqs, [7, 8, 9, 10, 11, 12, 13], "no old record of a spare comes back");
    for ((seq, events), replayed) in written.iter().zip(&recovery.replay[1..]) {
        assert_eq!(*seq, replayed.seq);
        assert_same_events(&replayed.events, events);
    }
    let len_before = fs::metadata(&last).unwrap().len();
    let more = batch(14, 3);
    assert_eq!(log.append(&more).unwrap(), 14);
    log.sync().unwrap();
    drop(log);
    assert_eq!(
        fs::metadata(&last).unwrap().len(),
        len_before,
        "reopened, not cut short"
    );

    let (_, recovery) = open(dir.path(), &["out"]);
    assert!(recovery.skipped.is_empty(), "{:?}", recovery.skipped);
    assert_eq!(recovery.replay.last().unwrap().seq, 14);
    assert_same_events(&recovery.replay.last().unwrap().events, &more);
}

/// A recycled segment holding records 10, 11 and 12 (synced) over the old
/// records of segment 1, the only unfinished ones; returns it and where
/// each of its records starts.
fn recycled_with_three_records(dir: &Path) -> (PathBuf, Vec<u64>) {
    let (mut log, _) = log_with_two_spares(dir);
    append_synced(&mut log, 5, 10);
    for seq in 7..=9 {
        log.finish(0, seq);
    }
    log.checkpoint().unwrap();
    log.wait_for_deletions();
    let recycled = segment_files(dir).pop().unwrap();
    assert!(log.writer_mut().is_recycled());
    assert_eq!(segment_files(dir).len(), 1, "segment 7 is finished");
    drop(log);
    let mut starts = vec![8];
    for seq in 10..=11 {
        let mut frame = Vec::new();
        crate::queue_log::record::encode(seq, &batch(seq, 10), &mut frame).unwrap();
        starts.push(starts.last().unwrap() + frame.len() as u64);
    }
    (recycled, starts)
}

#[test]
fn a_torn_last_record_in_a_recycled_segment_is_cut_by_an_end_mark_and_appending_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, starts) = recycled_with_three_records(dir.path());
    flip_byte(&segment, starts[2] + 20);
    let file_len = fs::metadata(&segment).unwrap().len();

    let (log, recovery) = open(dir.path(), &["out"]);
    assert_eq!(
        recovery.skipped,
        [SkippedBytes {
            segment: segment.clone(),
            offset: starts[2],
            bytes: file_len - starts[2],
            reason: SkipReason::ChecksumMismatch,
            truncated: true,
        }]
    );
    assert_eq!(replayed(&recovery), [(10, vec![0]), (11, vec![0])]);
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        file_len,
        "cut by a mark, not by truncation"
    );
    // Not 12: the checkpoint had seen seq 12, and a seq is never given twice.
    let expected = [(10, vec![0]), (11, vec![0]), (13, vec![0])];
    append_and_reopen_clean(log, dir.path(), &batch(13, 2), 13, &expected);
}

#[test]
fn damage_with_records_after_it_in_a_recycled_segment_is_kept_and_appends_go_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, starts) = recycled_with_three_records(dir.path());
    flip_byte(&segment, starts[1] + 20);
    let bytes = fs::read(&segment).unwrap();

    let (mut log, recovery) = open(dir.path(), &["out"]);
    assert_eq!(recovery.skipped.len(), 1);
    assert_eq!(recovery.skipped[0].offset, starts[1]);
    assert!(
        !recovery.skipped[0].truncated,
        "record 12 follows: kept for a closer look"
    );
    assert_eq!(replayed(&recovery), [(10, vec![0])]);
    assert_eq!(fs::read(&segment).unwrap(), bytes, "left as it was");
    assert_eq!(log.append(&batch(13, 1)).unwrap(), 13);
    log.sync().unwrap();
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "a new segment after the damaged one"
    );
}

#[test]
fn an_old_record_where_the_new_ones_end_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, starts) = recycled_with_three_records(dir.path());
    // A crash can leave the old life's bytes where record 12 was going:
    // put an old record (seq 2, from before the segment's base) there.
    let mut bytes = fs::read(&segment).unwrap();
    let mut old = Vec::new();
    crate::queue_log::record::encode(2, &batch(2, 10), &mut old).unwrap();
    bytes[starts[2] as usize..starts[2] as usize + old.len()].copy_from_slice(&old);
    fs::write(&segment, &bytes).unwrap();

    let (_, recovery) = open(dir.path(), &["out"]);
    assert_eq!(recovery.skipped.len(), 1);
    assert_eq!(recovery.skipped[0].offset, starts[2]);
    assert!(recovery.skipped[0].truncated);
    assert_eq!(replayed(&recovery), [(10, vec![0]), (11, vec![0])]);
}

#[test]
fn spares_left_by_an_earlier_run_are_used_and_those_beyond_two_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with_two_spares(dir.path());
    drop(log);
    let spares = spare_files(dir.path());
    fs::copy(&spares[0], dir.path().join("00000000000000000099.spare")).unwrap();
    assert_eq!(spare_files(dir.path()).len(), 3);

    let (mut log, recovery) = open(dir.path(), &["out"]);
    assert!(recovery.skipped.is_empty(), "{:?}", recovery.skipped);
    log.wait_for_deletions();
    assert_eq!(spare_files(dir.path()), spares, "the extra spare is deleted");
    log.roll().unwrap();
    assert!(log.writer_mut().is_recycled());
    assert_eq!(spare_files(dir.path()).len(), 1);
}

#[test]
fn a_segment_made_from_a_spare_with_no_record_yet_is_reopened_empty_and_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = log_with_two_spares(dir.path());
    // Stopped right after the spare was renamed: the new segment holds the
    // old life's records behind its end mark, and nothing of its own.
    log.roll().unwrap();
    assert!(log.writer_mut().is_recycled());
    log.sync().unwrap();
    drop(log);

    let (mut log, recovery) = open(dir.path(), &["out"]);
    assert!(recovery.skipped.is_empty(), "{:?}", recovery.skipped);
    let seqs: Vec<u64> = recovery.replay.iter().map(|b| b.seq).collect();
    assert_eq!(seqs, [7], "no old record of the spare comes back");
    assert!(log.writer_mut().is_recycled(), "appends go on in the recycled segment");
    append_and_reopen_clean(log, dir.path(), &batch(8, 4), 8, &[(7, vec![0]), (8, vec![0])]);
}

#[test]
fn a_spare_damaged_since_it_was_made_still_starts_an_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with_two_spares(dir.path());
    drop(log);
    for spare in spare_files(dir.path()) {
        fs::write(&spare, b"not a segment at all").unwrap();
    }

    let (mut log, _) = open(dir.path(), &["out"]);
    log.roll().unwrap();
    assert!(log.writer_mut().is_recycled());
    append_and_reopen_clean(log, dir.path(), &batch(8, 4), 8, &[(7, vec![0]), (8, vec![0])]);
}
