//! The progress file: each output's watermark and the records it finished
//! out of order, so that a restart resends only what an output has not
//! finished.
//!
//! ```text
//! progress := magic "EVSQPRG1" | crc u32 | body      crc = CRC32 of body
//! body     := next_seq u64 | outputs u32 | output * outputs
//! output   := id_len u32 | id | watermark u64 | ranges u32 | (first u64 | last u64) * ranges
//! ```
//!
//! It is replaced whole: written to `progress.tmp`, synced, renamed over
//! `progress`, and the directory synced, so a crash leaves the old file or
//! the new one, never a mix. A damaged file is not an error: every output
//! starts over (at-least-once), and the caller reports it.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::progress::OutputProgress;
use super::record::ByteReader;
use super::{DecodeError, QueueLogError, sync_dir};

const MAGIC: &[u8; 8] = b"EVSQPRG1";
const FILE_NAME: &str = "progress";
const TEMP_NAME: &str = "progress.tmp";

/// More finished records in a row than any queue holds.
const MAX_RUN: u64 = 1 << 24;

/// One output's saved progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SavedOutput {
    pub(super) id: String,
    pub(super) watermark: u64,
    pub(super) finished_above: BTreeSet<u64>,
}

/// The progress file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Saved {
    /// The seq the next record was to get, so seqs never go back even when
    /// every segment has been deleted.
    pub(super) next_seq: u64,
    pub(super) outputs: Vec<SavedOutput>,
}

/// What was found where the progress file should be.
#[derive(Debug)]
pub(super) enum Loaded {
    Missing,
    Damaged(DecodeError),
    Found(Saved),
}

pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the progress file of `dir`. Only a failure to read is an error; a
/// missing or damaged file is [`Loaded::Missing`] or [`Loaded::Damaged`].
pub(super) fn load(dir: &Path) -> Result<Loaded, QueueLogError> {
    let path = path(dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(error) => return Err(QueueLogError::io("read", &path)(error)),
    };
    Ok(match decode(&bytes) {
        Ok(saved) => Loaded::Found(saved),
        Err(reason) => Loaded::Damaged(reason),
    })
}

fn decode(bytes: &[u8]) -> Result<Saved, DecodeError> {
    let mut reader = ByteReader::new(bytes);
    if reader.take(MAGIC.len()).ok() != Some(MAGIC.as_slice()) {
        return Err(DecodeError::NotProgressFile);
    }
    let crc = reader.u32()?;
    let body = reader.take(reader.remaining())?;
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::ChecksumMismatch);
    }
    let mut reader = ByteReader::new(body);
    let next_seq = reader.u64()?;
    let count = reader.u32()?;
    let mut outputs = Vec::new();
    for _ in 0..count {
        let id = reader.str()?.to_owned();
        let watermark = reader.u64()?;
        let mut finished_above = BTreeSet::new();
        for _ in 0..reader.u32()? {
            let (first, last) = (reader.u64()?, reader.u64()?);
            // Guards against a bug turning into an endless loop: runs are
            // bounded by the records a queue can hold.
            if last < first || last - first >= MAX_RUN {
                return Err(DecodeError::ImpossibleRun { first, last });
            }
            finished_above.extend(first..=last);
        }
        outputs.push(SavedOutput {
            id,
            watermark,
            finished_above,
        });
    }
    match reader.remaining() {
        0 => Ok(Saved { next_seq, outputs }),
        extra => Err(DecodeError::TrailingBytes { extra, item: "output" }),
    }
}

fn encode(next_seq: u64, outputs: &[OutputProgress]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&next_seq.to_le_bytes());
    body.extend_from_slice(&(outputs.len() as u32).to_le_bytes());
    for output in outputs {
        body.extend_from_slice(&(output.id.len() as u32).to_le_bytes());
        body.extend_from_slice(output.id.as_bytes());
        body.extend_from_slice(&output.watermark.to_le_bytes());
        let ranges = ranges(&output.finished_above);
        body.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
        for (first, last) in ranges {
            body.extend_from_slice(&first.to_le_bytes());
            body.extend_from_slice(&last.to_le_bytes());
        }
    }
    let mut file = Vec::with_capacity(MAGIC.len() + 4 + body.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    file.extend_from_slice(&body);
    file
}

/// Runs of consecutive seqs, so that thousands of out-of-order completions
/// behind one slow batch take a few bytes.
fn ranges(seqs: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &seq in seqs {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == seq => *last = seq,
            _ => ranges.push((seq, seq)),
        }
    }
    ranges
}

/// Replaces the progress file of `dir` atomically and durably.
pub(super) fn save(dir: &Path, next_seq: u64, outputs: &[OutputProgress]) -> Result<(), QueueLogError> {
    let temp = dir.join(TEMP_NAME);
    let written = write_synced(&temp, &encode(next_seq, outputs));
    if written.is_err() {
        // Best effort: a leftover temp file is removed on the next open.
        let _ = fs::remove_file(&temp);
    }
    written?;
    let path = path(dir);
    fs::rename(&temp, &path).map_err(QueueLogError::io("rename progress file into", &path))?;
    sync_dir(dir)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), QueueLogError> {
    let mut file = fs::File::create(path).map_err(QueueLogError::io("create", path))?;
    file.write_all(bytes).map_err(QueueLogError::io("write", path))?;
    file.sync_all().map_err(QueueLogError::io("fsync", path))
}

/// Removes a temp file a crash left behind during [`save`].
pub(super) fn remove_stale_temp(dir: &Path) -> Result<(), QueueLogError> {
    let temp = dir.join(TEMP_NAME);
    match fs::remove_file(&temp) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(QueueLogError::io("remove", &temp)(error)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> Vec<OutputProgress> {
        vec![
            OutputProgress::new("elasticsearch".into(), 41, BTreeSet::from([43, 44, 45, 50])),
            OutputProgress::new("fichier-é".into(), 0, BTreeSet::new()),
        ]
    }

    #[test]
    fn saved_progress_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), 51, &outputs()).unwrap();
        let Loaded::Found(saved) = load(dir.path()).unwrap() else {
            panic!("progress file not found");
        };
        assert_eq!(saved.next_seq, 51);
        let expected: Vec<SavedOutput> = outputs()
            .into_iter()
            .map(|o| SavedOutput {
                id: o.id,
                watermark: o.watermark,
                finished_above: o.finished_above,
            })
            .collect();
        assert_eq!(saved.outputs, expected);
        assert!(!dir.path().join(TEMP_NAME).exists());
    }

    #[test]
    fn consecutive_seqs_are_saved_as_ranges() {
        assert_eq!(
            ranges(&BTreeSet::from([3, 4, 5, 9, 11, 12])),
            [(3, 5), (9, 9), (11, 12)]
        );
    }

    #[test]
    fn a_damaged_file_is_reported_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path()).unwrap(), Loaded::Missing));
        save(dir.path(), 2, &outputs()).unwrap();
        let mut bytes = fs::read(path(dir.path())).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(path(dir.path()), &bytes).unwrap();
        assert!(
            matches!(load(dir.path()).unwrap(), Loaded::Damaged(reason) if reason.to_string() == "checksum mismatch")
        );
        fs::write(path(dir.path()), b"EVSQ").unwrap();
        assert!(matches!(load(dir.path()).unwrap(), Loaded::Damaged(_)));
    }
}
