//! The queue directory's lock: one agent per directory.
//!
//! Two agents appending to one directory interleave their records and reuse
//! sequence numbers, and the next start cuts good records off as damage. So
//! opening a queue takes an exclusive lock on `<dir>/lock` (`flock`, through
//! `File::try_lock`), which the kernel releases when the process ends however
//! it ends — `kill -9` leaves no stale lock behind. The file holds the
//! holder's pid, only to name it in the error of the agent that was refused.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use super::QueueLogError;

/// The lock file's name inside a queue directory.
pub(super) const LOCK_FILE: &str = "lock";

/// Held for as long as the queue is open; dropping it releases the lock.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, or fails at once if another process holds it.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, QueueLogError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(QueueLogError::io("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(QueueLogError::InUse {
                    dir: dir.to_path_buf(),
                    holder: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(QueueLogError::io("lock", &path)(source));
            }
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            write!(file, "{}", std::process::id())
        };
        write_pid(&mut file).map_err(QueueLogError::io("write lock file", &path))?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(QueueLogError::InUse { dir: locked, holder }) => {
                assert_eq!(locked, dir.path());
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("second lock not refused: {other:?}"),
        }
        drop(first);
        DirLock::acquire(dir.path()).expect("the lock is free again once its holder is gone");
    }
}
