//! Component health: whether a plugin is working, and since when it is not.
//!
//! The engine gives each output a [`ComponentHealth`] through its
//! [`PluginContext`](crate::PluginContext). Outputs that retry internally
//! (a cluster that is down) report `failing` and `recovered` themselves; the
//! engine also reports failed writes. The engine turns the states into the
//! agent's health: NOT_SERVING once an output has been failing longer than a
//! configured time. [`OutageReport`](crate::OutageReport) is the one way a
//! retrying component reports an outage with them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a component's health looks like now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// When the current run of failures began; `None` while healthy.
    pub failing_since: Option<Instant>,
    /// The last error reported, kept after recovery for operators.
    pub last_error: Option<String>,
}

impl HealthSnapshot {
    /// How long the component has been failing.
    pub fn failing_for(&self) -> Option<Duration> {
        self.failing_since.map(|since| since.elapsed())
    }
}

/// A shared, cheap-to-clone health cell for one component.
#[derive(Debug, Clone, Default)]
pub struct ComponentHealth {
    state: Arc<Mutex<HealthSnapshot>>,
}

impl ComponentHealth {
    /// Reports a failure; the failing period starts at the first one.
    pub fn failing(&self, reason: impl Into<String>) {
        let mut state = self.lock();
        state.failing_since.get_or_insert_with(Instant::now);
        state.last_error = Some(reason.into());
    }

    /// Reports that the component works again.
    pub fn recovered(&self) {
        self.lock().failing_since = None;
    }

    /// The current state.
    pub fn snapshot(&self) -> HealthSnapshot {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthSnapshot> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Lets a repeated log line through once per interval and counts the rest,
/// so an outage logs a few lines, not one per failed request.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` when a line may be logged now, with how many were
    /// held back since the last one; `None` to stay quiet.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last, suppressed) = &mut *state;
        match last {
            Some(at) if at.elapsed() < self.interval => {
                *suppressed += 1;
                None
            }
            _ => {
                *last = Some(Instant::now());
                Some(std::mem::take(suppressed))
            }
        }
    }

    /// Forgets the last line, so the next one (say, after a recovery) is logged.
    pub fn reset(&self) {
        *self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = (None, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_since_is_the_first_failure_until_recovery() {
        let health = ComponentHealth::default();
        assert_eq!(health.snapshot().failing_since, None);
        health.failing("down");
        let since = health.snapshot().failing_since.unwrap();
        health.failing("still down");
        assert_eq!(health.snapshot().failing_since, Some(since));
        assert_eq!(health.snapshot().last_error.as_deref(), Some("still down"));
        health.recovered();
        assert_eq!(health.snapshot().failing_since, None);
        assert_eq!(health.snapshot().last_error.as_deref(), Some("still down"));
    }

    #[test]
    fn throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(60));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        throttle.reset();
        assert_eq!(throttle.allow(), Some(0));
        let fast = LogThrottle::new(Duration::ZERO);
        assert_eq!(fast.allow(), Some(0));
        assert_eq!(fast.allow(), Some(0));
    }
}
