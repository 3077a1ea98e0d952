//! One outage, reported the same way by every component that retries: the
//! component's [`ComponentHealth`] turns failing at the first failure, the
//! log says so at most once per interval (with how many lines were held
//! back), and the first success afterwards marks it recovered and lets the
//! next failure be logged at once.
//!
//! The reporter decides *whether* to log and keeps the state; the caller
//! writes the line in its own words (an Elasticsearch cluster, a DynamoDB
//! table) and waits with its own [`Backoff`](crate::Backoff) between tries.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::health::{ComponentHealth, LogThrottle};

/// The state of one kind of repeated failure of one component.
#[derive(Debug)]
pub struct OutageReport {
    /// The engine's view of the component: failing from the first failure
    /// until the first success after it.
    health: ComponentHealth,
    /// When the current outage began; `None` while things work.
    failing_since: Mutex<Option<Instant>>,
    /// Keeps a long outage to a few log lines.
    throttle: LogThrottle,
}

/// A failure worth a log line now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageLine {
    /// This failure began the outage (a warning, not a reminder).
    pub first: bool,
    /// Failures not logged since the last line.
    pub suppressed: u64,
}

impl OutageReport {
    /// A reporter for `health`, logging a continuing outage at most once per
    /// `log_interval`.
    pub fn new(health: ComponentHealth, log_interval: Duration) -> OutageReport {
        OutageReport {
            health,
            failing_since: Mutex::new(None),
            throttle: LogThrottle::new(log_interval),
        }
    }

    /// An attempt failed and will be retried: the component is failing.
    /// `Some` when the caller should log it now.
    pub fn failed(&self, reason: impl Into<String>) -> Option<OutageLine> {
        self.health.failing(reason);
        self.slowed()
    }

    /// An attempt made only part of its progress and will be retried: worth
    /// a log line, but the component still works, so health is unchanged.
    /// `Some` when the caller should log it now.
    pub fn slowed(&self) -> Option<OutageLine> {
        let first = {
            let mut since = self.lock();
            let first = since.is_none();
            since.get_or_insert_with(Instant::now);
            first
        };
        self.throttle.allow().map(|suppressed| OutageLine { first, suppressed })
    }

    /// An attempt succeeded. If it ended an outage, the component is marked
    /// recovered and the outage's length returned, for the caller's "works
    /// again" line; `None` when nothing was failing.
    pub fn recovered(&self) -> Option<Duration> {
        let since = self.lock().take()?;
        self.health.recovered();
        self.throttle.reset();
        Some(since.elapsed())
    }

    /// When the current outage began, if one is going on.
    pub fn failing_since(&self) -> Option<Instant> {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.failing_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(3600);

    #[test]
    fn the_first_failure_marks_health_failing_and_is_logged_as_first() {
        let health = ComponentHealth::default();
        let report = OutageReport::new(health.clone(), QUIET);
        let line = report.failed("connection refused");
        assert_eq!(
            line,
            Some(OutageLine {
                first: true,
                suppressed: 0
            })
        );
        let snapshot = health.snapshot();
        assert!(snapshot.failing_since.is_some());
        assert_eq!(snapshot.last_error.as_deref(), Some("connection refused"));
        assert!(report.failing_since().is_some());
    }

    #[test]
    fn a_continuing_outage_is_held_back_and_counted() {
        let report = OutageReport::new(ComponentHealth::default(), QUIET);
        assert!(report.failed("down").is_some());
        assert_eq!(report.failed("down"), None);
        assert_eq!(report.failed("down"), None);
        let reminders = OutageReport::new(ComponentHealth::default(), Duration::ZERO);
        reminders.failed("down");
        reminders.failed("down");
        assert_eq!(
            reminders.failed("down"),
            Some(OutageLine {
                first: false,
                suppressed: 0
            })
        );
    }

    #[test]
    fn recovery_clears_health_once_and_lets_the_next_failure_through() {
        let health = ComponentHealth::default();
        let report = OutageReport::new(health.clone(), QUIET);
        assert_eq!(report.recovered(), None, "nothing was failing");
        report.failed("down");
        report.failed("down");
        assert!(report.recovered().is_some());
        assert_eq!(health.snapshot().failing_since, None);
        assert_eq!(report.recovered(), None, "recovery is reported once");
        assert_eq!(
            report.failed("down again"),
            Some(OutageLine {
                first: true,
                suppressed: 0
            })
        );
    }

    #[test]
    fn slow_progress_is_logged_but_leaves_health_alone() {
        let health = ComponentHealth::default();
        let report = OutageReport::new(health.clone(), QUIET);
        assert_eq!(
            report.slowed(),
            Some(OutageLine {
                first: true,
                suppressed: 0
            })
        );
        assert_eq!(health.snapshot().failing_since, None);
        assert!(report.failing_since().is_some());
        assert!(report.recovered().is_some());
        assert_eq!(report.failing_since(), None);
    }

    #[test]
    fn recovery_does_not_clear_a_failure_another_reporter_holds() {
        let health = ComponentHealth::default();
        let requests = OutageReport::new(health.clone(), QUIET);
        let items = OutageReport::new(health.clone(), QUIET);
        items.failed("every item throttled");
        assert_eq!(requests.recovered(), None);
        assert!(health.snapshot().failing_since.is_some());
    }
}
