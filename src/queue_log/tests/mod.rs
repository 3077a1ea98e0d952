//! Tests of the queue log as its owner uses it: appending, reopening,
//! finishing, checkpointing (`replay.rs`), and what it does with damaged
//! files and failed writes (`damage.rs`). Shared helpers live here.

mod damage;
mod recycle;
mod replay;

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, TimeZone as _, Utc};
use eventstash_plugin_api::{Event, Format, Payload};

use super::{LogOptions, QueueLog, Recovery};

pub(crate) fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, nanos).unwrap()
}

fn event(format: Format, data: &'static [u8], kind: &str, id: &str) -> Event {
    Event::new(
        format,
        Bytes::from_static(data),
        kind.into(),
        id.into(),
        at(1_795_000_000, 123_456_789),
    )
}

/// One event of every payload state and every awkward field.
pub(crate) fn sample_events() -> Vec<Event> {
    let mut events = vec![
        event(
            Format::Json,
            br#"{"id":"ab-1","people":[]}"#,
            "contact.AddressBook",
            "json-0",
        ),
        event(Format::Json, b"{\n  \"a\": [1,\r\n 2]\n}\n", "k", "multi-line"),
        event(Format::Json, b"{not json", "k", "invalid-text"),
        event(Format::Json, b"\xff\xfe{", "k", "invalid-utf8"),
        event(Format::Json, b"", "k", "empty-json"),
        event(
            Format::Protobuf,
            &[10, 4, 97, 98, 45, 49, 0, 255],
            "contact.AddressBook",
            "proto",
        ),
        event(Format::Protobuf, b"", "k", "empty-proto"),
        event(Format::Json, b"1", "契約.Ereignis_ü", "ид-🦀"),
        event(Format::Json, b"[]", "", "default-kind"),
    ];
    let mut tree = event(Format::Protobuf, &[8, 1], "decoded.Thing", "tree");
    tree.payload = Payload::Value(serde_json::json!({"b": [1, 2.5, null], "a": "é"}));
    let mut rejected = event(Format::Protobuf, &[255, 255], "bad.Thing", "invalid-proto");
    rejected.payload = Payload::InvalidProto(Bytes::from_static(&[255, 255]));
    let mut old = event(Format::Json, b"{}", "k", "before-1970");
    old.received_at = at(-86_401, 999_999_999);
    events.extend([tree, rejected, old]);
    events
}

/// Asserts that replayed events are the appended ones, field by field and
/// as the document every output writes.
pub(crate) fn assert_same_events(actual: &[Event], expected: &[Event]) {
    assert_eq!(actual.len(), expected.len(), "event count");
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!(a.id, e.id);
        assert_eq!(a.kind, e.kind, "kind of {}", e.id);
        assert_eq!(a.index, e.index, "index of {}", e.id);
        assert_eq!(a.format, e.format, "format of {}", e.id);
        assert_eq!(a.received_at, e.received_at, "received_at of {}", e.id);
        assert_eq!(
            format!("{:?}", a.payload),
            format!("{:?}", e.payload),
            "payload of {}",
            e.id
        );
        assert_eq!(
            serde_json::to_string(a).unwrap(),
            serde_json::to_string(e).unwrap(),
            "document of {}",
            e.id
        );
    }
}

/// `count` small JSON events with ids `{batch}-{i}`.
pub(crate) fn batch(batch: u64, count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let data = format!(r#"{{"batch":{batch},"i":{i},"text":"some payload"}}"#);
            Event::new(
                Format::Json,
                Bytes::from(data),
                "test.Event".into(),
                format!("{batch}-{i}"),
                at(1_795_000_000 + batch as i64, i as u32),
            )
        })
        .collect()
}

pub(crate) fn ids(outputs: &[&str]) -> Vec<String> {
    outputs.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn open(dir: &Path, outputs: &[&str]) -> (QueueLog, Recovery) {
    QueueLog::open(dir, &ids(outputs), LogOptions::default()).unwrap()
}

pub(crate) fn open_small(dir: &Path, outputs: &[&str], segment_bytes: u64) -> (QueueLog, Recovery) {
    QueueLog::open(dir, &ids(outputs), LogOptions { segment_bytes }).unwrap()
}

/// Appends `batches` batches of `events_each` events and syncs; returns the
/// batches.
pub(crate) fn append_synced(log: &mut QueueLog, batches: u64, events_each: usize) -> Vec<(u64, Vec<Event>)> {
    let written: Vec<(u64, Vec<Event>)> = (0..batches)
        .map(|_| {
            let events = batch(log.stats().next_seq, events_each);
            (log.append(&events).unwrap(), events)
        })
        .collect();
    log.sync().unwrap();
    written
}

/// The segment files of `dir`, oldest first.
pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, "seg")
}

/// The names of the segment files of `dir`, oldest first.
pub(crate) fn segment_names(dir: &Path) -> Vec<String> {
    segment_files(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The files of `dir` with `extension`, sorted.
pub(crate) fn files_named(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// Flips the bits of one byte of the file at `path`.
pub(crate) fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

/// Appends `events` to `log` (an `["out"]` log; they must get `seq`),
/// syncs and closes it, then checks that the next open is clean and
/// replays `expected`, `events` last.
pub(crate) fn append_and_reopen_clean(
    mut log: QueueLog,
    dir: &Path,
    events: &[Event],
    seq: u64,
    expected: &[(u64, Vec<usize>)],
) {
    assert_eq!(log.append(events).unwrap(), seq);
    log.sync().unwrap();
    drop(log);

    let (_, recovery) = open(dir, &["out"]);
    assert!(recovery.skipped.is_empty(), "{:?}", recovery.skipped);
    assert_eq!(replayed(&recovery), expected);
    assert_same_events(&recovery.replay.last().unwrap().events, events);
}

/// (seq, pending outputs) of each replayed batch.
pub(crate) fn replayed(recovery: &Recovery) -> Vec<(u64, Vec<usize>)> {
    recovery.replay.iter().map(|b| (b.seq, b.pending.clone())).collect()
}
