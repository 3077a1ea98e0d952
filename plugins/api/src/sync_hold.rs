//! A test-only hook in front of every `fsync` that acknowledgements wait
//! for, so that end-to-end tests can prove the order "synced, then
//! acknowledged" instead of trusting it.
//!
//! Built only with the `fault-injection` feature (the end-to-end tests turn
//! it on through `eventstash/fault-injection`); without it
//! [`before_sync`] is an empty inline function. With it, and with
//! `EVENTSTASH_FAULT_SYNC_DIR` naming a directory, each sync first appends
//! `<point> <file>` to `<dir>/syncs.log` (so a test can see that syncs
//! happen), then waits while `<dir>/hold-<point>` or
//! `<dir>/hold-<point>-<file name>` exists (so a test can hold a sync and
//! check that no acknowledgement comes before it is let go).

use std::path::Path;

/// Called just before a sync that acknowledgements depend on. `point` names
/// the caller (`file-output`, `queue`), `file` the file being synced.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn before_sync(_point: &str, _file: &Path) {}

/// Called just before a sync that acknowledgements depend on. `point` names
/// the caller (`file-output`, `queue`), `file` the file being synced.
#[cfg(feature = "fault-injection")]
pub fn before_sync(point: &str, file: &Path) {
    use std::io::Write as _;
    use std::sync::OnceLock;
    use std::time::Duration;

    static DIR: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let Some(dir) = DIR.get_or_init(|| std::env::var_os("EVENTSTASH_FAULT_SYNC_DIR").map(Into::into)) else {
        return;
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("syncs.log"))
    {
        // One write per line: syncs of several threads do not interleave.
        let _ = log.write_all(format!("{point} {name}\n").as_bytes());
    }
    let holds = [
        dir.join(format!("hold-{point}")),
        dir.join(format!("hold-{point}-{name}")),
    ];
    while holds.iter().any(|hold| hold.exists()) {
        std::thread::sleep(Duration::from_millis(2));
    }
}
