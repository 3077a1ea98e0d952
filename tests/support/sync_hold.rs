//! The test side of the sync hold (feature `fault-injection`, see
//! `plugins/api/src/sync_hold.rs`): a directory the agent reports its syncs
//! to and in which a test can hold them.

use std::fs;
use std::time::Duration;

use super::wait_until;

/// The test-only hold in front of the agent's syncs (feature
/// `fault-injection`, see `plugins/api/src/sync_hold.rs`): the test sees
/// every sync the agent makes and can make syncs wait until it lets them go.
pub struct SyncHold {
    dir: tempfile::TempDir,
}

impl SyncHold {
    pub fn new() -> SyncHold {
        SyncHold {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The environment variable that points the agent at this hold.
    pub fn env(&self) -> (String, String) {
        (
            "EVENTSTASH_FAULT_SYNC_DIR".into(),
            self.dir.path().display().to_string(),
        )
    }

    /// Makes syncs at `point` (`file-output`, `queue`) wait; with a file
    /// name (`point-name.jsonl`) only the syncs of that file.
    pub fn hold(&self, point: &str) {
        fs::write(self.dir.path().join(format!("hold-{point}")), "").unwrap();
    }

    /// Lets the held syncs go.
    pub fn release(&self, point: &str) {
        fs::remove_file(self.dir.path().join(format!("hold-{point}"))).unwrap();
    }

    /// The syncs made so far at `point` (those held included), as
    /// `point file-name` lines.
    pub fn syncs(&self, point: &str) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("syncs.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.split(' ').next() == Some(point))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `count` syncs have been made at `point`.
    pub fn wait_for_syncs(&self, point: &str, count: usize) {
        wait_until(&format!("{count} syncs at {point}"), Duration::from_secs(10), || {
            self.syncs(point).len() >= count
        });
    }
}

impl Default for SyncHold {
    fn default() -> Self {
        SyncHold::new()
    }
}
