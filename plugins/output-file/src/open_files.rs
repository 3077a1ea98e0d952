//! The output's open files: append handles kept from batch to batch, so a
//! round of batches costs one `write` per batch and file, one `fdatasync`
//! per file, and no `open`.
//!
//! Writes and syncs are separate steps: the writer appends every batch of
//! a round, then syncs each file written once ([`OpenFiles::sync_written`])
//! before any of those batches counts as stored.
//!
//! Their number is bounded: a template with many distinct paths (one file per
//! day and kind, say) must not exhaust the process's file descriptors, so
//! past the bound the least recently used handle is closed — synced first
//! if it holds unsynced writes. It is reopened, in append mode, if its file
//! comes back.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use tracing::debug;

use crate::error::FileOutputError;

/// A bounded set of files open for appending, by rendered path.
#[derive(Debug)]
pub(crate) struct OpenFiles {
    /// The open handles.
    handles: HashMap<String, OpenFile>,
    /// The most handles kept at once; at least 1.
    max_open: usize,
    /// Sync data before writes count as stored, and directories after
    /// creating a file.
    sync: bool,
    /// Counts appends, to stamp each handle with its last use.
    clock: u64,
    /// Files closed (to make room, or after a failed write) whose last
    /// sync failed, for the next [`OpenFiles::sync_written`] to report.
    failed: Vec<(String, io::Error)>,
    /// Data syncs so far.
    syncs: u64,
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    /// The `clock` of the last append, to find the least recently used.
    last_used: u64,
    /// Written since its last sync (only when syncing).
    unsynced: bool,
    /// A write failed: its state is unknown (a failed write may have left
    /// part of a batch), so after the round's sync it is closed and opened
    /// afresh by the next batch.
    reopen: bool,
}

impl OpenFiles {
    pub(crate) fn new(max_open: usize, sync: bool) -> OpenFiles {
        OpenFiles {
            handles: HashMap::new(),
            max_open,
            sync,
            clock: 0,
            failed: Vec::new(),
            syncs: 0,
        }
    }

    /// Appends `lines` to the file at `path`, creating it and its
    /// directories if needed. They are not synced yet: see
    /// [`OpenFiles::sync_written`].
    pub(crate) fn append(&mut self, path: &str, lines: &[u8]) -> Result<(), FileOutputError> {
        self.clock += 1;
        if !self.handles.contains_key(path) {
            let file = self.open(path)?;
            self.keep_open(path, file);
        }
        let handle = self.handles.get_mut(path).expect("opened above");
        handle.last_used = self.clock;
        handle.unsynced |= self.sync;
        let result = append_whole(&mut handle.file, lines).map_err(|error| FileOutputError::Write {
            path: path.into(),
            error,
        });
        if result.is_err() {
            handle.reopen = true;
        }
        result
    }

    /// Syncs every file written since the last call (when syncing) and
    /// returns those whose sync failed, with the files closed since then
    /// whose closing sync failed. A file whose sync failed, or whose write
    /// failed, is closed: a failed `fdatasync` may have dropped its dirty
    /// pages, so the next batch starts afresh.
    pub(crate) fn sync_written(&mut self) -> Vec<(String, io::Error)> {
        let mut failed = std::mem::take(&mut self.failed);
        let mut closing = Vec::new();
        for (path, handle) in &mut self.handles {
            if handle.unsynced {
                handle.unsynced = false;
                self.syncs += 1;
                if let Err(error) = sync_file(&handle.file, path) {
                    failed.push((path.clone(), error));
                    handle.reopen = true;
                }
            }
            if handle.reopen {
                closing.push(path.clone());
            }
        }
        for path in closing {
            self.handles.remove(&path);
        }
        failed
    }

    /// Syncs every open file, even when not syncing at each write, and closes
    /// them all. Returns the first failure after trying every file.
    pub(crate) fn close_all(&mut self) -> Result<(), FileOutputError> {
        let mut first_error = None;
        for (path, handle) in self.handles.drain() {
            if let Err(error) = handle.file.sync_data() {
                let path = path.into();
                first_error.get_or_insert(FileOutputError::Sync { path, error });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn open(&self, path: &str) -> Result<File, FileOutputError> {
        let path = Path::new(path);
        let mut options = OpenOptions::new();
        options.append(true).read(true);
        // Opening an existing file is the common case; creating one (and its
        // directories) is tried only when it is missing.
        match options.open(path) {
            Ok(file) => return end_torn_line(file, path),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(open_error(path, error)),
        }
        let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
        if let Some(dir) = dir {
            fs::create_dir_all(dir).map_err(|error| FileOutputError::CreateDir {
                dir: dir.to_owned(),
                error,
            })?;
        }
        let file = options
            .create(true)
            .open(path)
            .map_err(|error| open_error(path, error))?;
        debug!(path = %path.display(), "created output file");
        if self.sync {
            // Syncing the file's data does not persist its name: the
            // directory entry needs a sync of its own. On journaling file
            // systems this also commits the directories created above.
            let dir = dir.unwrap_or(Path::new("."));
            sync_dir(dir)?;
        }
        Ok(file)
    }

    fn keep_open(&mut self, path: &str, file: File) {
        if self.handles.len() >= self.max_open {
            self.close_least_recently_used();
        }
        let handle = OpenFile {
            file,
            last_used: self.clock,
            unsynced: false,
            reopen: false,
        };
        self.handles.insert(path.to_owned(), handle);
    }

    /// Closes the least recently used file, syncing it first if it holds
    /// writes not synced yet (a failure is reported by the next
    /// [`OpenFiles::sync_written`]).
    fn close_least_recently_used(&mut self) {
        let oldest = self
            .handles
            .iter()
            .min_by_key(|(_, handle)| handle.last_used)
            .map(|(path, _)| path.clone());
        let Some(path) = oldest else { return };
        debug!(%path, max_open = self.max_open, "closing least recently used output file");
        if let Some(handle) = self.handles.remove(&path)
            && handle.unsynced
        {
            self.syncs += 1;
            if let Err(error) = sync_file(&handle.file, &path) {
                self.failed.push((path, error));
            }
        }
    }

    /// Data syncs so far.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs
    }
}

/// Syncs the data of the output file at `path`.
fn sync_file(file: &File, path: &str) -> io::Result<()> {
    eventstash_plugin_api::sync_hold::before_sync("file-output", Path::new(path));
    file.sync_data()
}

/// Appends all of `lines`, or none: when a write fails part way (a full
/// disk), the part already written is cut off again, so that half a document
/// never glues itself to the next batch's first line.
fn append_whole(file: &mut File, lines: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < lines.len() {
        let error = match file.write(&lines[written..]) {
            Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
            Ok(n) => {
                written += n;
                continue;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => error,
        };
        if written > 0 {
            // Best effort: if this fails too, the write error is the news.
            if let Ok(metadata) = file.metadata() {
                let _ = file.set_len(metadata.len().saturating_sub(written as u64));
            }
        }
        return Err(error);
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), FileOutputError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| FileOutputError::Sync {
            path: dir.to_owned(),
            error,
        })
}

/// A process killed in the middle of a write can leave a last line without
/// its newline; the next document would be glued to it and both unreadable.
/// Ending that line first keeps every later document on a line of its own.
fn end_torn_line(mut file: File, path: &Path) -> Result<File, FileOutputError> {
    use std::os::unix::fs::FileExt as _;
    let len = file.metadata().map_err(|error| open_error(path, error))?.len();
    if len == 0 {
        return Ok(file);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)
        .map_err(|error| open_error(path, error))?;
    if last[0] != b'\n' {
        file.write_all(b"\n").map_err(|error| FileOutputError::Write {
            path: path.to_owned(),
            error,
        })?;
    }
    Ok(file)
}

fn open_error(path: &Path, error: io::Error) -> FileOutputError {
    FileOutputError::Open {
        path: path.to_owned(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(dir: &tempfile::TempDir, name: &str) -> String {
        dir.path().join(name).to_str().unwrap().to_owned()
    }

    #[test]
    fn closes_the_least_recently_used_file_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = OpenFiles::new(2, false);
        let (a, b, c) = (path(&dir, "a"), path(&dir, "b"), path(&dir, "c"));
        files.append(&a, b"1\n").unwrap();
        files.append(&b, b"2\n").unwrap();
        files.append(&a, b"3\n").unwrap();
        files.append(&c, b"4\n").unwrap();
        assert_eq!(files.handles.len(), 2);
        assert!(files.handles.contains_key(&a));
        assert!(files.handles.contains_key(&c));
        // A closed file is reopened in append mode when it comes back.
        files.append(&b, b"5\n").unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "2\n5\n");
        assert_eq!(fs::read_to_string(&a).unwrap(), "1\n3\n");
    }

    #[test]
    fn a_file_closed_to_make_room_is_synced_first_and_each_written_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = OpenFiles::new(1, true);
        let (a, b) = (path(&dir, "a"), path(&dir, "b"));
        files.append(&a, b"1\n").unwrap();
        files.append(&a, b"2\n").unwrap();
        assert_eq!(files.syncs(), 0, "appends do not sync");
        // Only one handle may stay open: `a` is synced as it is closed.
        files.append(&b, b"3\n").unwrap();
        assert_eq!(files.syncs(), 1);
        files.append(&b, b"4\n").unwrap();
        assert!(files.sync_written().is_empty());
        assert_eq!(files.syncs(), 2, "one sync for the two appends to b");
        assert!(files.sync_written().is_empty());
        assert_eq!(files.syncs(), 2, "nothing written since");
        assert_eq!(fs::read_to_string(&a).unwrap(), "1\n2\n");
        assert_eq!(fs::read_to_string(&b).unwrap(), "3\n4\n");
    }

    #[test]
    fn without_sync_nothing_is_synced_before_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = OpenFiles::new(1, false);
        files.append(&path(&dir, "a"), b"1\n").unwrap();
        files.append(&path(&dir, "b"), b"2\n").unwrap();
        assert!(files.sync_written().is_empty());
        assert_eq!(files.syncs(), 0);
    }

    #[test]
    fn a_torn_last_line_left_by_a_crash_is_ended_before_new_documents() {
        let dir = tempfile::tempdir().unwrap();
        let torn = path(&dir, "torn");
        fs::write(&torn, "{\"id\":\"1\"}\n{\"id\":\"2\",\"da").unwrap();
        let mut files = OpenFiles::new(2, false);
        files.append(&torn, b"{\"id\":\"3\"}\n").unwrap();
        assert_eq!(
            fs::read_to_string(&torn).unwrap(),
            "{\"id\":\"1\"}\n{\"id\":\"2\",\"da\n{\"id\":\"3\"}\n"
        );
    }

    #[test]
    fn close_all_releases_every_handle() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = OpenFiles::new(8, false);
        files.append(&path(&dir, "a"), b"1\n").unwrap();
        files.close_all().unwrap();
        assert!(files.handles.is_empty());
    }
}
