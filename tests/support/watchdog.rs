//! A per-test bound for `cargo test`, which has none of its own (nextest's
//! is in `.config/nextest.toml`): every agent the support starts is
//! watched, and one that runs past the bound ends the test process.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long one agent may run before the test holding it counts as hung:
/// `EVENTSTASH_TEST_TIMEOUT_SECS`, default 900 — the longest bound of the
/// nextest profile in `.config/nextest.toml`, so that `cargo test`, which
/// has no per-test timeout, cannot hang on an output retrying forever.
pub fn test_timeout() -> Duration {
    let secs = std::env::var("EVENTSTASH_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(secs)
}

/// Agents running now, by pid, with their start: the watchdog's list.
static RUNNING_AGENTS: std::sync::Mutex<Vec<(u32, Instant)>> = std::sync::Mutex::new(Vec::new());

/// Puts an agent on the watchdog's list, starting the watchdog on first use.
/// Past [`test_timeout`] the watchdog kills every agent this test process
/// started and ends the process with a failure, naming the agent.
pub(super) fn watch_agent(pid: u32) {
    static WATCHDOG: std::sync::Once = std::sync::Once::new();
    RUNNING_AGENTS.lock().unwrap().push((pid, Instant::now()));
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            let limit = test_timeout();
            loop {
                std::thread::sleep(Duration::from_millis(500));
                // An agent some test replaced without telling the list has
                // been reaped: only live processes count.
                RUNNING_AGENTS
                    .lock()
                    .unwrap()
                    .retain(|(pid, _)| Path::new(&format!("/proc/{pid}")).exists());
                let agents = RUNNING_AGENTS.lock().unwrap().clone();
                if let Some((pid, _)) = agents.iter().find(|(_, started)| started.elapsed() > limit) {
                    eprintln!(
                        "test timeout: agent pid {pid} has run for more than {limit:?}; the test holding it is hung"
                    );
                    for (pid, _) in &agents {
                        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                    }
                    std::process::exit(101);
                }
            }
        });
    });
}

/// Takes an agent off the watchdog's list once it has ended.
pub(super) fn forget_agent(pid: u32) {
    RUNNING_AGENTS.lock().unwrap().retain(|(p, _)| *p != pid);
}
