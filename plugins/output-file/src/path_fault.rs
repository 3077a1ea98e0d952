//! Whether a file that cannot be opened is the fault of its events' path,
//! so that those events are dead-lettered on their own, or of the disk or
//! the setup, so that the batch fails and is sent again.
//!
//! A producer's fields pick the file (`data/%{index}.jsonl`), and some
//! values give a path no retry will ever open: a `kind` of 300 characters
//! makes a name longer than the file system allows, and a value may name a
//! directory where a file is wanted or a file where a directory is. Failing
//! the batch for them would send it again forever and hold back every event
//! that shared it, so the open errors of such a path settle its events for
//! good. Everything else (a full disk, I/O errors, permissions, a read-only
//! file system, too many open files) may pass and fails the batch.
//!
//! The fixed start of the template is the operator's, not the events': when
//! its directory is not a directory, every path fails the same way and the
//! batch fails until it is fixed. A constant template renders no event
//! value, so its errors are never the events' fault either.

use std::io;
use std::path::{Path, PathBuf};

use eventstash_plugin_api::FieldTemplate;

use crate::error::FileOutputError;

/// Tells the open errors that blame the rendered path from the others.
#[derive(Debug)]
pub(crate) struct PathFaults {
    /// The template renders event values into its paths.
    renders_fields: bool,
    /// The directory of the template's fixed start (`data` for
    /// `data/evt-%{index}.jsonl`), which every path lies in.
    fixed_dir: PathBuf,
}

impl PathFaults {
    pub(crate) fn new(template: &FieldTemplate) -> PathFaults {
        let source = template.as_str();
        // Literal parts are rendered as written, so everything before the
        // first field reference is the same in every path.
        let fixed = source.find("%{").map_or(source, |start| &source[..start]);
        let fixed_dir = match fixed.rfind('/') {
            Some(0) => "/",
            Some(end) => &fixed[..end],
            None => ".",
        };
        PathFaults {
            renders_fields: !template.is_constant(),
            fixed_dir: PathBuf::from(fixed_dir),
        }
    }

    /// True when `error`, met while opening a file, means the events routed
    /// to that file can never be written there.
    pub(crate) fn blames_events(&self, error: &FileOutputError) -> bool {
        let error = match error {
            FileOutputError::Open { error, .. } | FileOutputError::CreateDir { error, .. } => error,
            _ => return false,
        };
        if !self.renders_fields {
            return false;
        }
        match path_error(error) {
            Some(PathError::Name) => true,
            Some(PathError::Shape) => is_directory(&self.fixed_dir),
            None => false,
        }
    }
}

/// How a path can be wrong.
#[derive(Debug, PartialEq, Eq)]
enum PathError {
    /// A name the file system does not take (too long, invalid bytes).
    Name,
    /// A directory where a file is wanted or a file where a directory is.
    Shape,
}

fn path_error(error: &io::Error) -> Option<PathError> {
    match error.raw_os_error() {
        Some(libc::ENAMETOOLONG | libc::EILSEQ | libc::EINVAL) => Some(PathError::Name),
        // EEXIST: `create_dir_all` found a file where a directory belongs.
        Some(libc::ENOTDIR | libc::EISDIR | libc::EEXIST) => Some(PathError::Shape),
        Some(_) => None,
        // The standard library refuses a path with a NUL byte itself.
        None if error.kind() == io::ErrorKind::InvalidInput => Some(PathError::Name),
        None => None,
    }
}

fn is_directory(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|metadata| metadata.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(template: &str) -> PathFaults {
        PathFaults::new(&FieldTemplate::parse(template).unwrap())
    }

    fn open_error(errno: i32) -> FileOutputError {
        FileOutputError::Open {
            path: "x".into(),
            error: io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn the_fixed_directory_ends_before_the_first_field() {
        assert_eq!(faults("data/evt-%{index}.jsonl").fixed_dir, Path::new("data"));
        assert_eq!(faults("data/%{index}/x.jsonl").fixed_dir, Path::new("data"));
        assert_eq!(faults("/%{index}.jsonl").fixed_dir, Path::new("/"));
        assert_eq!(faults("%{index}.jsonl").fixed_dir, Path::new("."));
    }

    #[test]
    fn names_and_shapes_blame_the_events_when_the_fixed_directory_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let faults = faults(&format!("{}/%{{index}}.jsonl", dir.path().display()));
        for errno in [libc::ENAMETOOLONG, libc::EILSEQ, libc::ENOTDIR, libc::EISDIR] {
            assert!(faults.blames_events(&open_error(errno)), "errno {errno}");
        }
        let create_dir = FileOutputError::CreateDir {
            dir: "x".into(),
            error: io::Error::from_raw_os_error(libc::EEXIST),
        };
        assert!(faults.blames_events(&create_dir));
    }

    #[test]
    fn the_disk_and_the_setup_fail_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let faults = faults(&format!("{}/%{{index}}.jsonl", dir.path().display()));
        for errno in [
            libc::ENOSPC,
            libc::EIO,
            libc::EACCES,
            libc::EROFS,
            libc::EMFILE,
            libc::EDQUOT,
        ] {
            assert!(!faults.blames_events(&open_error(errno)), "errno {errno}");
        }
        let write = FileOutputError::Write {
            path: "x".into(),
            error: io::Error::from_raw_os_error(libc::ENAMETOOLONG),
        };
        assert!(!faults.blames_events(&write), "only opening can blame the path");
    }

    #[test]
    fn a_broken_fixed_directory_or_a_constant_path_is_the_operators_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("regular");
        std::fs::write(&regular, "").unwrap();
        let broken = faults(&format!("{}/%{{index}}/x.jsonl", regular.display()));
        assert!(!broken.blames_events(&open_error(libc::ENOTDIR)));
        let constant = faults(&format!("{}/all.jsonl", dir.path().display()));
        assert!(!constant.blames_events(&open_error(libc::ENAMETOOLONG)));
    }
}
