//! Segment files: the log is a run of files named by the seq they start
//! at (`00000000000000000001.seg`), each an 8-byte header followed by
//! records. Only the last one is appended to; the others are deleted whole
//! once every output has finished their records.
//!
//! Reading a segment checks every record and stops at the first one that is
//! not intact; whether that damage is a torn tail (safe to cut off) or
//! damage with data after it (kept for a closer look) is decided here.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use eventstash_plugin_api::Event;

use super::progress::RecordMeta;
use super::record::{self, FRAME_HEADER};
use super::{QueueLogError, SkipReason};

/// The first bytes of every segment file: a name and a format version.
const MAGIC: &[u8; 8] = b"EVSQSEG1";

/// The header's length, where the first record starts.
pub(super) const HEADER_LEN: u64 = MAGIC.len() as u64;

const EXTENSION: &str = "seg";

/// A segment's place in the log.
#[derive(Debug, Clone)]
pub(super) struct SegmentInfo {
    /// The seq the segment was created for; its name.
    pub(super) base: u64,
    pub(super) path: PathBuf,
    /// The seq of its last readable record.
    pub(super) last_seq: Option<u64>,
    /// Its length on disk.
    pub(super) len: u64,
}

/// The segment files of `dir`, in seq order. Other files are not ours and
/// are left alone.
pub(super) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, QueueLogError> {
    let entries = fs::read_dir(dir).map_err(QueueLogError::io("list queue directory", dir))?;
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry.map_err(QueueLogError::io("list queue directory", dir))?.path();
        let base = (path.extension().is_some_and(|e| e == EXTENSION))
            .then(|| path.file_stem()?.to_str()?.parse::<u64>().ok())
            .flatten();
        if let Some(base) = base {
            segments.push((base, path));
        }
    }
    segments.sort_unstable_by_key(|(base, _)| *base);
    Ok(segments)
}

/// A record found in a segment.
#[derive(Debug)]
pub(super) struct ScannedRecord {
    pub(super) meta: RecordMeta,
    /// The events, when the caller wanted them.
    pub(super) events: Option<Vec<Event>>,
}

/// The first unreadable bytes of a segment and what follows them.
#[derive(Debug)]
pub(super) struct Damage {
    pub(super) offset: u64,
    pub(super) bytes: u64,
    pub(super) reason: SkipReason,
    /// Whether nothing intact can follow: a cut-short or mangled last record,
    /// or zeros. Such a tail is what a crash leaves, and is safe to cut.
    pub(super) torn_tail: bool,
}

/// What reading a segment found.
#[derive(Debug)]
pub(super) struct SegmentScan {
    pub(super) info: SegmentInfo,
    /// Where the last intact record ends.
    pub(super) valid_len: u64,
    pub(super) records: Vec<ScannedRecord>,
    pub(super) damage: Option<Damage>,
}

/// Reads and checks the segment at `path`. Its records must follow seq
/// `after`; `wants(seq)` says whose events to decode.
pub(super) fn scan(
    path: &Path,
    base: u64,
    after: u64,
    wants: impl Fn(u64) -> bool,
) -> Result<SegmentScan, QueueLogError> {
    let bytes = fs::read(path).map_err(QueueLogError::io("read", path))?;
    let mut scan = SegmentScan {
        info: SegmentInfo {
            base,
            path: path.to_path_buf(),
            last_seq: None,
            len: bytes.len() as u64,
        },
        valid_len: 0,
        records: Vec::new(),
        damage: None,
    };
    // An empty file is a segment whose creation a crash interrupted.
    if bytes.is_empty() {
        return Ok(scan);
    }
    if !bytes.starts_with(MAGIC) {
        let torn = MAGIC.starts_with(&bytes) || bytes.iter().all(|&b| b == 0);
        scan.damage = Some(damage_at(0, &bytes, SkipReason::BadSegmentHeader, torn));
        return Ok(scan);
    }
    let mut offset = MAGIC.len();
    let mut last = after;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        match read_record(rest, last, &wants) {
            Ok((record, len)) => {
                last = record.meta.seq;
                scan.records.push(record);
                offset += len;
            }
            Err(reason) => {
                let torn = is_torn_tail(rest, &reason);
                scan.damage = Some(damage_at(offset, &bytes, reason, torn));
                break;
            }
        }
    }
    scan.valid_len = offset as u64;
    scan.info.last_seq = scan.records.last().map(|r| r.meta.seq);
    Ok(scan)
}

fn read_record(rest: &[u8], after: u64, wants: impl Fn(u64) -> bool) -> Result<(ScannedRecord, usize), SkipReason> {
    let (body, len) = record::parse_frame(rest)?;
    let (seq, count) = record::body_header(body)?;
    if seq <= after {
        return Err(SkipReason::SeqOutOfOrder { seq, after });
    }
    let events = if wants(seq) {
        Some(record::decode_events(body)?)
    } else {
        None
    };
    let meta = RecordMeta {
        seq,
        events: count,
        bytes: len as u64,
    };
    Ok((ScannedRecord { meta, events }, len))
}

fn damage_at(offset: usize, bytes: &[u8], reason: SkipReason, torn_tail: bool) -> Damage {
    Damage {
        offset: offset as u64,
        bytes: (bytes.len() - offset) as u64,
        reason,
        torn_tail,
    }
}

/// Whether damage is what an interrupted write leaves: the bad record
/// reaches the end of the file, or only zeros follow. A record that passed
/// its checksum but does not decode is intact, so never a torn tail.
fn is_torn_tail(rest: &[u8], reason: &SkipReason) -> bool {
    let physical = matches!(
        reason,
        SkipReason::IncompleteRecord | SkipReason::ChecksumMismatch | SkipReason::BadLength(_)
    );
    let claimed_end = match rest.get(..4) {
        Some(len) => FRAME_HEADER + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize,
        None => 0,
    };
    physical && (claimed_end >= rest.len() || rest.iter().all(|&b| b == 0))
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct SegmentWriter {
    file: File,
    path: PathBuf,
    /// Where the last whole record ends; a failed write is cut back to here.
    len: u64,
    /// Written since the last fsync.
    dirty: bool,
    /// A failed write that could not be cut back, or a failed fsync, left
    /// the file's tail in doubt: the next record goes to a new segment.
    spoiled: bool,
}

impl SegmentWriter {
    /// Creates the segment for records from `base` on.
    pub(super) fn create(dir: &Path, base: u64) -> Result<SegmentWriter, QueueLogError> {
        let path = dir.join(format!("{base:020}.{EXTENSION}"));
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(QueueLogError::io("create", &path))?;
        if let Err(error) = file.write_all(MAGIC) {
            // Best effort: an empty or partial header is also handled on open.
            let _ = fs::remove_file(&path);
            return Err(QueueLogError::io("write", &path)(error));
        }
        Ok(SegmentWriter {
            file,
            path,
            len: HEADER_LEN,
            dirty: true,
            spoiled: false,
        })
    }

    /// Opens an existing segment to append after its first `valid_len`
    /// bytes, cutting off (durably) whatever follows them.
    pub(super) fn reopen(path: &Path, valid_len: u64, file_len: u64) -> Result<SegmentWriter, QueueLogError> {
        let mut file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(QueueLogError::io("open", path))?;
        let len = if valid_len < HEADER_LEN {
            file.set_len(0).map_err(QueueLogError::io("truncate", path))?;
            file.write_all(MAGIC).map_err(QueueLogError::io("write", path))?;
            HEADER_LEN
        } else {
            if file_len != valid_len {
                file.set_len(valid_len).map_err(QueueLogError::io("truncate", path))?;
            }
            valid_len
        };
        // Make the cut durable before new records follow it.
        if file_len != valid_len || valid_len < HEADER_LEN {
            file.sync_data().map_err(QueueLogError::io("fsync", path))?;
        }
        Ok(SegmentWriter {
            file,
            path: path.to_path_buf(),
            len,
            dirty: false,
            spoiled: false,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(super) fn is_spoiled(&self) -> bool {
        self.spoiled
    }

    /// Appends one encoded record. On failure (a full disk) the partial
    /// write is cut back so that the file still ends with a whole record.
    pub(super) fn append(&mut self, frame: &[u8]) -> Result<(), QueueLogError> {
        if let Err(error) = self.file.write_all(frame) {
            // The file is in append mode: once cut back, the next write
            // lands at the right place whatever the file position is.
            if self.file.set_len(self.len).is_err() {
                self.spoiled = true;
            }
            return Err(QueueLogError::io("write", &self.path)(error));
        }
        self.len += frame.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Makes what was appended durable.
    pub(super) fn sync(&mut self) -> Result<(), QueueLogError> {
        if !self.dirty {
            return Ok(());
        }
        // Whatever the outcome, do not fsync these pages again: after a
        // failure Linux may drop them and report the next fsync as a
        // success, so the tail is treated as lost and writing moves on.
        self.dirty = false;
        eventstash_plugin_api::sync_hold::before_sync("queue", &self.path);
        self.file.sync_data().map_err(|error| {
            self.spoiled = true;
            QueueLogError::io("fsync", &self.path)(error)
        })
    }

    /// Makes every write fail, for tests of what follows a failed write.
    #[cfg(test)]
    pub(super) fn break_for_test(&mut self) {
        self.file = File::open(&self.path).expect("reopen segment read-only");
    }
}
