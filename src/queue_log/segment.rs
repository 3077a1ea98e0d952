//! Segment files: the log is a run of files named by the seq they start
//! at (`00000000000000000001.seg`), each an 8-byte header followed by
//! records. Only the last one is appended to; the others are deleted whole
//! once every output has finished their records, or kept as spares.
//!
//! A spare (`<seq>.spare`) is a finished segment kept to be written over:
//! a new segment made from one overwrites blocks the file system already
//! has, so its fsyncs write the data alone, not the file's new size and
//! blocks too (half the time and CPU of an fsync that grows the file,
//! measured here). Such a recycled segment says so in its header
//! (`EVSQSEG2`), and every record written to it is followed by an end mark
//! (eight zero bytes) that the next record overwrites: what lies after the
//! mark is the old life's data, never read as records.
//!
//! Reading a segment checks every record and stops at the first one that is
//! not intact; whether that damage is a torn tail (safe to cut off) or
//! damage with data after it (kept for a closer look) is decided here.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use eventstash_plugin_api::Event;

use super::progress::RecordMeta;
use super::record::{self, FRAME_HEADER};
use super::{QueueLogError, SkipReason};

/// The first bytes of every segment file: a name and a format version.
const MAGIC: &[u8; 8] = b"EVSQSEG1";

/// The header of a segment made from a spare: its records end at an
/// [`END_MARK`], and stale data may follow.
const RECYCLED_MAGIC: &[u8; 8] = b"EVSQSEG2";

/// Where a recycled segment's records end: a frame header of zeros, which
/// no record has (its checksum covers a non-zero length).
const END_MARK: [u8; FRAME_HEADER] = [0; FRAME_HEADER];

/// The header's length, where the first record starts.
pub(super) const HEADER_LEN: u64 = MAGIC.len() as u64;

/// The start of a recycled segment without records: its header and an end
/// mark.
const EMPTY_RECYCLED: [u8; MAGIC.len() + END_MARK.len()] = {
    let mut bytes = [0; MAGIC.len() + END_MARK.len()];
    bytes
        .split_at_mut(RECYCLED_MAGIC.len())
        .0
        .copy_from_slice(RECYCLED_MAGIC);
    bytes
};

pub(super) const EXTENSION: &str = "seg";
const SPARE_EXTENSION: &str = "spare";

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
    let mut segments: Vec<(u64, PathBuf)> = files_named(dir, EXTENSION)?
        .into_iter()
        .filter_map(|path| Some((path.file_stem()?.to_str()?.parse::<u64>().ok()?, path)))
        .collect();
    segments.sort_unstable_by_key(|(base, _)| *base);
    Ok(segments)
}

/// The spares of `dir`, left by an earlier run.
pub(super) fn list_spares(dir: &Path) -> Result<Vec<PathBuf>, QueueLogError> {
    let mut spares = files_named(dir, SPARE_EXTENSION)?;
    spares.sort_unstable();
    Ok(spares)
}

/// The files of `dir` whose names end in `.{extension}`.
fn files_named(dir: &Path, extension: &str) -> Result<Vec<PathBuf>, QueueLogError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(QueueLogError::io("list queue directory", dir))? {
        let path = entry.map_err(QueueLogError::io("list queue directory", dir))?.path();
        if path.extension().is_some_and(|e| e == extension) {
            files.push(path);
        }
    }
    Ok(files)
}

/// Turns the finished segment at `path` into a spare and returns the
/// spare's path. The header is made that of an empty recycled segment
/// (and synced) before the rename, so that whatever a crash leaves under
/// either name holds no record; the directory is synced after it, so that
/// the spare's name is durable before a segment is made from it.
pub(super) fn make_spare(path: &Path) -> Result<PathBuf, QueueLogError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.write_all_at(&EMPTY_RECYCLED, 0).and_then(|()| file.sync_data()))
        .map_err(QueueLogError::io("empty finished segment", path))?;
    let spare = path.with_extension(SPARE_EXTENSION);
    fs::rename(path, &spare).map_err(QueueLogError::io("rename finished segment", path))?;
    if let Err(error) = super::sync_dir(path.parent().unwrap_or(Path::new("."))) {
        let _ = fs::remove_file(&spare);
        return Err(error);
    }
    Ok(spare)
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
    let recycled = bytes.starts_with(RECYCLED_MAGIC);
    if !bytes.starts_with(MAGIC) && !recycled {
        let torn = MAGIC.starts_with(&bytes) || RECYCLED_MAGIC.starts_with(&bytes) || bytes.iter().all(|&b| b == 0);
        scan.damage = Some(damage_at(0, &bytes, SkipReason::BadSegmentHeader, torn));
        return Ok(scan);
    }
    let mut offset = MAGIC.len();
    // A recycled segment's records all have seqs from its base on: one
    // below is out of order, the old life's where a crash cut the new one.
    let mut last = if recycled {
        after.max(base.saturating_sub(1))
    } else {
        after
    };
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if recycled && rest.starts_with(&END_MARK) {
            break;
        }
        match read_record(rest, last, &wants) {
            Ok((record, len)) => {
                last = record.meta.seq;
                scan.records.push(record);
                offset += len;
            }
            Err(reason) => {
                let torn = if recycled {
                    is_torn_tail_of_recycled(rest, &reason, base, last)
                } else {
                    is_torn_tail(rest, &reason)
                };
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
    let claimed_end = claimed_end(rest);
    is_physical(reason) && (claimed_end >= rest.len() || rest.iter().all(|&b| b == 0))
}

/// [`is_torn_tail`] in a recycled segment, where the old life's data, not
/// zeros, follows the new one's end: the damage is a torn tail if it is an
/// old record, or if no record of this life follows where the damaged one
/// claims to end.
fn is_torn_tail_of_recycled(rest: &[u8], reason: &SkipReason, base: u64, last: u64) -> bool {
    if let SkipReason::SeqOutOfOrder { seq, .. } = reason {
        // The old life's record: nothing of this one was written after it.
        return *seq < base;
    }
    let follows = rest
        .get(claimed_end(rest)..)
        .and_then(|next| record::parse_frame(next).ok())
        .and_then(|(body, _)| record::body_header(body).ok())
        // `last` is at least `base - 1` here (see `scan`).
        .is_some_and(|(seq, _)| seq > last);
    is_physical(reason) && !follows
}

/// Whether the damage is in the bytes (a write cut short or mangled), not
/// in an intact record's content.
fn is_physical(reason: &SkipReason) -> bool {
    matches!(
        reason,
        SkipReason::IncompleteRecord | SkipReason::ChecksumMismatch | SkipReason::BadLength(_)
    )
}

/// Where a damaged record says it ends, 0 if it does not say.
fn claimed_end(rest: &[u8]) -> usize {
    match rest.get(..4) {
        Some(len) => FRAME_HEADER + u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize,
        None => 0,
    }
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
    /// Made from a spare: every record is followed by an [`END_MARK`].
    recycled: bool,
}

impl SegmentWriter {
    /// Creates the segment for records from `base` on.
    pub(super) fn create(dir: &Path, base: u64) -> Result<SegmentWriter, QueueLogError> {
        let path = segment_path(dir, base);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(QueueLogError::io("create", &path))?;
        if let Err(error) = file.write_all_at(MAGIC, 0) {
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
            recycled: false,
        })
    }

    /// Creates the segment for records from `base` out of a spare (see
    /// [`make_spare`]): renamed, not copied, and written over from its
    /// header on. The header is written again, so that a spare damaged
    /// since it was made still starts an empty segment; the first sync
    /// covers it, and the caller syncs the directory for the new name. On
    /// failure the renamed file is removed, so that a new segment can take
    /// the name.
    pub(super) fn recycle(spare: &Path, dir: &Path, base: u64) -> Result<SegmentWriter, QueueLogError> {
        let path = segment_path(dir, base);
        fs::rename(spare, &path).map_err(QueueLogError::io("rename spare segment", spare))?;
        let opened = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.write_all_at(&EMPTY_RECYCLED, 0).map(|()| file));
        match opened {
            Ok(file) => Ok(SegmentWriter {
                file,
                path,
                len: HEADER_LEN,
                dirty: true,
                spoiled: false,
                recycled: true,
            }),
            Err(error) => {
                let _ = fs::remove_file(&path);
                Err(QueueLogError::io("write", &path)(error))
            }
        }
    }

    /// Opens an existing segment to append after its first `valid_len`
    /// bytes, cutting off (durably) whatever follows them.
    pub(super) fn reopen(path: &Path, valid_len: u64, file_len: u64) -> Result<SegmentWriter, QueueLogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(QueueLogError::io("open", path))?;
        let mut header = [0; MAGIC.len()];
        let recycled =
            valid_len >= HEADER_LEN && file.read_exact_at(&mut header, 0).is_ok() && &header == RECYCLED_MAGIC;
        if recycled {
            // Cut by an end mark, not a shorter file: the blocks after it
            // are what makes the segment worth recycling.
            file.write_all_at(&END_MARK, valid_len)
                .and_then(|()| file.sync_data())
                .map_err(QueueLogError::io("write end mark", path))?;
            return Ok(SegmentWriter {
                file,
                path: path.to_path_buf(),
                len: valid_len,
                dirty: false,
                spoiled: false,
                recycled,
            });
        }
        let len = if valid_len < HEADER_LEN {
            file.set_len(0).map_err(QueueLogError::io("truncate", path))?;
            file.write_all_at(MAGIC, 0).map_err(QueueLogError::io("write", path))?;
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
            recycled: false,
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

    /// Appends one encoded record (`frame`, given back as it came). On
    /// failure (a full disk) the partial write is cut back so that the file
    /// still ends with a whole record.
    pub(super) fn append(&mut self, frame: &mut Vec<u8>) -> Result<(), QueueLogError> {
        let frame_len = frame.len();
        if self.recycled {
            frame.extend_from_slice(&END_MARK);
        }
        let written = self.file.write_all_at(frame, self.len);
        frame.truncate(frame_len);
        if let Err(error) = written {
            // Cut back to the last whole record. In a recycled segment this
            // gives up the blocks after it: the file then ends there.
            if self.file.set_len(self.len).is_err() {
                self.spoiled = true;
            }
            return Err(QueueLogError::io("write", &self.path)(error));
        }
        self.len += frame_len as u64;
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

    #[cfg(test)]
    pub(super) fn is_recycled(&self) -> bool {
        self.recycled
    }

    /// Makes every write fail, for tests of what follows a failed write.
    #[cfg(test)]
    pub(super) fn break_for_test(&mut self) {
        self.file = File::open(&self.path).expect("reopen segment read-only");
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.{EXTENSION}"))
}
