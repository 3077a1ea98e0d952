//! Damaged segments, damaged progress and failed writes: the good prefix is
//! kept, the damage is reported, and the log goes on.

use std::fs::{self, OpenOptions};
use std::path::Path;

use super::*;
use crate::queue_log::{QueueLogError, SkipReason, SkippedBytes};

/// Three synced batches of two events in one segment; returns the segment
/// and each record's length.
fn three_batches(dir: &Path) -> (PathBuf, Vec<(u64, Vec<Event>)>, u64) {
    let (mut log, _) = open(dir, &["out"]);
    let written = append_synced(&mut log, 3, 2);
    log.checkpoint().unwrap();
    let record_bytes = log.stats().unfinished.bytes / 3;
    (segment_files(dir).remove(0), written, record_bytes)
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// After a cut tail: the first two batches replay, appending works, and the
/// next open is clean.
fn assert_cut_and_continues(dir: &Path, segment: &Path, written: &[(u64, Vec<Event>)], skipped: SkippedBytes) {
    let (log, recovery) = open(dir, &["out"]);
    assert_eq!(recovery.skipped, [skipped]);
    assert_eq!(recovery.progress_reset, None);
    assert_eq!(replayed(&recovery), [(1, vec![0]), (2, vec![0])]);
    assert_same_events(&recovery.replay[1].events, &written[1].1);
    assert_eq!(fs::metadata(segment).unwrap().len(), recovery.skipped[0].offset);
    // Not 3: the checkpoint had seen seq 3, and a seq is never given twice.
    append_and_reopen_clean(log, dir, &batch(7, 2), 4, &[(1, vec![0]), (2, vec![0]), (4, vec![0])]);
}

#[test]
fn a_torn_last_record_is_cut_off_reported_and_appending_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, written, record) = three_batches(dir.path());
    let third = 8 + 2 * record;
    set_len(&segment, third + record - 10);
    let skipped = SkippedBytes {
        segment: segment.clone(),
        offset: third,
        bytes: record - 10,
        reason: SkipReason::IncompleteRecord,
        truncated: true,
    };
    assert_cut_and_continues(dir.path(), &segment, &written, skipped);
}

#[test]
fn a_flipped_byte_in_the_last_record_is_cut_off_reported_and_appending_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, written, record) = three_batches(dir.path());
    let third = 8 + 2 * record;
    flip_byte(&segment, third + record / 2);
    let skipped = SkippedBytes {
        segment: segment.clone(),
        offset: third,
        bytes: record,
        reason: SkipReason::ChecksumMismatch,
        truncated: true,
    };
    assert_cut_and_continues(dir.path(), &segment, &written, skipped);
}

#[test]
fn a_zero_filled_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, _, record) = three_batches(dir.path());
    set_len(&segment, 8 + 3 * record + 4096);
    let (_, recovery) = open(dir.path(), &["out"]);
    assert_eq!(recovery.replay.len(), 3);
    assert_eq!(recovery.skipped[0].reason, SkipReason::BadLength(0));
    assert!(recovery.skipped[0].truncated);
    assert_eq!(fs::metadata(&segment).unwrap().len(), 8 + 3 * record);
}

#[test]
fn damage_in_an_older_segment_skips_the_rest_of_that_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    let record = three_batches(&dir.path().join("probe")).2;
    // Two records per segment: [1, 2] [3, 4] [5, 6].
    let (mut log, _) = open_small(dir.path(), &["out"], 8 + 2 * record + record / 2);
    append_synced(&mut log, 6, 2);
    drop(log);
    let segments = segment_files(dir.path());
    flip_byte(&segments[1], 8 + 20);

    let (mut log, recovery) = open(dir.path(), &["out"]);
    let skipped = SkippedBytes {
        segment: segments[1].clone(),
        offset: 8,
        bytes: 2 * record,
        reason: SkipReason::ChecksumMismatch,
        truncated: false,
    };
    assert_eq!(recovery.skipped, [skipped]);
    assert_eq!(
        fs::metadata(&segments[1]).unwrap().len(),
        8 + 2 * record,
        "left as it was"
    );
    assert_eq!(
        replayed(&recovery).iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 5, 6]
    );
    for seq in [1, 2, 5, 6] {
        log.finish(0, seq);
    }
    assert_eq!(
        log.stats().outputs[0].watermark,
        6,
        "the lost seqs 3 and 4 do not hold it back"
    );
    log.checkpoint().unwrap();
    log.wait_for_deletions();
    assert_eq!(segment_files(dir.path()), &segments[2..]);
}

#[test]
fn damage_with_data_after_it_in_the_last_segment_is_kept_and_appends_go_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, _, record) = three_batches(dir.path());
    flip_byte(&segment, 8 + 12);
    let (mut log, recovery) = open(dir.path(), &["out"]);
    assert!(recovery.replay.is_empty());
    assert_eq!(recovery.skipped.len(), 1);
    assert_eq!((recovery.skipped[0].offset, recovery.skipped[0].bytes), (8, 3 * record));
    assert!(!recovery.skipped[0].truncated);
    let seq = log.append(&batch(1, 1)).unwrap();
    assert!(seq > 3, "seq {seq} must not reuse the checkpointed seqs");
    log.sync().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(fs::metadata(&segment).unwrap().len(), 8 + 3 * record);
    drop(log);

    let (mut log, recovery) = open(dir.path(), &["out"]);
    assert_eq!(recovery.skipped.len(), 1, "reported until deleted");
    assert_eq!(replayed(&recovery), [(seq, vec![0])]);
    log.finish(0, seq);
    log.checkpoint().unwrap();
    log.wait_for_deletions();
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn a_damaged_progress_file_replays_everything_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), &["es", "file"]);
    append_synced(&mut log, 3, 1);
    for seq in 1..=3 {
        log.finish(0, seq);
        log.finish(1, seq);
    }
    log.checkpoint().unwrap();
    drop(log);
    let progress = dir.path().join("progress");
    flip_byte(&progress, 20);

    let (log, recovery) = open(dir.path(), &["es", "file"]);
    let reset = recovery.progress_reset.clone().expect("the damage is reported");
    assert_eq!(reset.path, progress);
    assert!(reset.reason.contains("damaged"), "{}", reset.reason);
    assert_eq!(replayed(&recovery), [(1, vec![0, 1]), (2, vec![0, 1]), (3, vec![0, 1])]);
    assert_eq!(log.stats().outputs[0].watermark, 0);
}

#[test]
fn a_missing_progress_file_replays_everything_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    three_batches(dir.path());
    fs::remove_file(dir.path().join("progress")).unwrap();
    let (_, recovery) = open(dir.path(), &["out"]);
    assert!(recovery.progress_reset.as_ref().unwrap().reason.contains("missing"));
    assert_eq!(recovery.replay.len(), 3);
}

#[test]
fn inspect_reports_what_open_would_find_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), &["es", "file"]);
    append_synced(&mut log, 4, 2);
    log.finish(0, 1);
    log.finish(0, 3);
    log.checkpoint().unwrap();
    drop(log);
    let segment = segment_files(dir.path()).remove(0);
    let full = fs::metadata(&segment).unwrap().len();
    set_len(&segment, full - 3);
    let snapshot = |dir: &Path| {
        let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), fs::read(p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let before = snapshot(dir.path());

    let inspection = QueueLog::inspect(dir.path(), &ids(&["es", "file", "dynamodb"])).unwrap();
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(inspection.skipped.len(), 1);
    assert!(!inspection.skipped[0].truncated);
    let stats = &inspection.stats;
    assert_eq!((stats.segments, stats.disk_bytes, stats.next_seq), (1, full - 3, 5));
    assert_eq!(stats.unfinished.records, 3);
    let positions: Vec<(&str, u64, u64)> = stats
        .outputs
        .iter()
        .map(|o| (o.id.as_str(), o.watermark, o.pending.records))
        .collect();
    assert_eq!(positions, [("es", 1, 1), ("file", 0, 3), ("dynamodb", 4, 0)]);

    let (log, recovery) = open(dir.path(), &["es", "file", "dynamodb"]);
    assert_eq!(recovery.skipped[0].offset, inspection.skipped[0].offset);
    assert_eq!(log.stats().outputs, stats.outputs);
}

#[test]
fn inspect_of_a_missing_directory_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let error = QueueLog::inspect(&missing, &ids(&["out"])).unwrap_err();
    assert!(error.to_string().contains("nope"), "{error}");
    assert!(!missing.exists());
}

#[test]
fn a_failed_write_is_an_error_naming_the_file_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), &["out"]);
    append_synced(&mut log, 2, 1);
    log.writer_mut().break_for_test();
    let error = log.append(&batch(9, 1)).unwrap_err();
    assert!(
        matches!(&error, QueueLogError::Io { operation: "write", .. }),
        "{error}"
    );
    assert!(error.to_string().contains("00000000000000000001.seg"), "{error}");
    // The failed record could not be cut back, so writing moves on to a
    // new segment.
    let after = batch(10, 1);
    assert_eq!(log.append(&after).unwrap(), 3);
    log.sync().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    drop(log);

    let (_, recovery) = open(dir.path(), &["out"]);
    assert!(recovery.skipped.is_empty());
    assert_eq!(replayed(&recovery), [(1, vec![0]), (2, vec![0]), (3, vec![0])]);
    assert_same_events(&recovery.replay[2].events, &after);
}

#[test]
fn a_segment_whose_creation_was_interrupted_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), &["out"]));
    let segment = segment_files(dir.path()).remove(0);
    set_len(&segment, 0);
    let (mut log, recovery) = open(dir.path(), &["out"]);
    assert!(recovery.skipped.is_empty());
    append_synced(&mut log, 1, 1);
    drop(log);
    let (_, recovery) = open(dir.path(), &["out"]);
    assert_eq!(replayed(&recovery), [(1, vec![0])]);
}

#[test]
fn a_segment_that_cannot_be_deleted_is_reported_and_deleted_later() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_small(dir.path(), &["out"], 1);
    append_synced(&mut log, 2, 1);
    let first = segment_files(dir.path()).remove(0);
    // A non-empty directory where the segment was: unlink fails.
    fs::remove_file(&first).unwrap();
    fs::create_dir(&first).unwrap();
    fs::write(first.join("keep"), b"x").unwrap();
    log.finish(0, 1);
    log.checkpoint().unwrap();
    log.wait_for_deletions();
    let error = log.checkpoint().unwrap_err();
    assert!(
        matches!(&error, QueueLogError::Io { operation: "delete finished segment", path, .. } if *path == first),
        "{error}"
    );
    // That checkpoint asked again, and that failed too; the next one
    // reports it and asks again, which now succeeds.
    log.wait_for_deletions();
    fs::remove_dir_all(&first).unwrap();
    fs::write(&first, b"").unwrap();
    assert!(log.checkpoint().is_err());
    log.wait_for_deletions();
    log.checkpoint().unwrap();
    assert!(!first.exists());
    assert_eq!(segment_files(dir.path()).len(), 1);
}
