//! When to retry, and how an outage is reported.
//!
//! Retries themselves wait with the shared [`Backoff`]; this file decides
//! what a whole-request status calls for (another try, smaller requests, or
//! giving up) and keeps the logs of
//! a long outage to a few lines: an error the first time the cluster cannot
//! be reached, a warning when a healthy cluster starts failing, then one line
//! per interval with how many failures were held back, and one line when it
//! recovers. The output's [`ComponentHealth`] follows the same states, so the
//! engine can turn a long outage into NOT_SERVING; the states are kept by
//! the shared [`OutageReport`], the words are Elasticsearch's.
//!
//! [`Backoff`]: eventstash_plugin_api::Backoff

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventstash_plugin_api::{ComponentHealth, OutageLine, OutageReport};
use tracing::{error, info, warn};

/// What a whole request that failed calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Sending it again may work: no answer, throttling, a server error.
    Transient,
    /// The body is over the cluster's (or a proxy's) size limit, a 413:
    /// smaller requests may pass. AWS-hosted clusters cap requests at
    /// 10 MiB whatever `http.max_content_length` says.
    TooLarge,
    /// Sending it again would fail the same way.
    Refused,
}

/// What a whole request that got `status` calls for.
///
/// Throttling, timeouts and server errors are transient. So are 401 and
/// 403: the events are fine and an operator fixing the credentials or the
/// role lets them through, which beats failing every producer meanwhile.
/// Other 4xx statuses (a body the cluster cannot parse, a wrong URL path)
/// would fail the same way again.
pub(crate) fn status_kind(status: u16) -> FailureKind {
    match status {
        401 | 403 | 408 | 429 | 500..=599 => FailureKind::Transient,
        413 => FailureKind::TooLarge,
        _ => FailureKind::Refused,
    }
}

/// Why a request got no usable answer.
#[derive(Debug)]
pub(crate) struct RequestFailure {
    /// What the failure calls for.
    pub(crate) kind: FailureKind,
    /// The node's URL and what went wrong, for logs and errors.
    pub(crate) message: String,
}

impl RequestFailure {
    /// A failure that sending the request again may cure.
    pub(crate) fn transient(message: String) -> RequestFailure {
        RequestFailure {
            kind: FailureKind::Transient,
            message,
        }
    }
}

/// The log lines and health of one kind of repeated failure: requests that
/// get no usable answer, or items the cluster keeps throttling.
#[derive(Debug)]
pub(crate) struct FailureReport {
    /// What is failing, in the log lines: `requests` or `items`.
    what: &'static str,
    /// The output's id, on every line.
    output: String,
    /// The outage's state: health, its start, the log throttle.
    outage: OutageReport,
    /// Set once the cluster has answered: before that, a failure is a
    /// start-up problem and logged as an error.
    reached: AtomicBool,
}

impl FailureReport {
    /// For requests: failures before the first answer mean the cluster
    /// cannot be reached at start.
    pub(crate) fn for_requests(output: &str, health: ComponentHealth, log_interval: Duration) -> FailureReport {
        FailureReport::new("requests", output, health, false, log_interval)
    }

    /// For items: they only fail once the cluster answers.
    pub(crate) fn for_items(output: &str, health: ComponentHealth, log_interval: Duration) -> FailureReport {
        FailureReport::new("items", output, health, true, log_interval)
    }

    /// `log_interval`: how often a continuing failure is logged again
    /// (`failure_log_interval_ms`).
    fn new(what: &'static str, output: &str, health: ComponentHealth, reached: bool, log_interval: Duration) -> Self {
        FailureReport {
            what,
            output: output.to_owned(),
            outage: OutageReport::new(health, log_interval),
            reached: AtomicBool::new(reached),
        }
    }

    /// Records an attempt that made no progress and will be retried after
    /// `delay`: the output is failing.
    pub(crate) fn failed(&self, events: usize, message: &str, delay: Duration) {
        if let Some(line) = self.outage.failed(message) {
            self.log(line, events, message, delay);
        }
    }

    /// Records an attempt that stored part of its events and will retry the
    /// rest after `delay`: logged, but the output is working.
    pub(crate) fn slowed(&self, events: usize, message: &str, delay: Duration) {
        if let Some(line) = self.outage.slowed() {
            self.log(line, events, message, delay);
        }
    }

    /// Records an attempt that got its answer; logs the end of an outage.
    pub(crate) fn succeeded(&self) {
        self.reached.store(true, Ordering::Relaxed);
        if let Some(after) = self.outage.recovered() {
            let (output, what) = (self.output.as_str(), self.what);
            info!(output, what, ?after, "Elasticsearch recovered");
        }
    }

    fn log(&self, line: OutageLine, events: usize, message: &str, delay: Duration) {
        let (output, what, error, held_back) = (self.output.as_str(), self.what, message, line.suppressed);
        if !self.reached.load(Ordering::Relaxed) {
            error!(
                output,
                what,
                events,
                error,
                ?delay,
                held_back,
                "Elasticsearch unavailable at start; events wait and are retried until it answers"
            );
        } else if line.first {
            warn!(output, what, events, error, ?delay, "Elasticsearch failing; retrying");
        } else {
            warn!(
                output,
                what,
                events,
                error,
                ?delay,
                held_back,
                "Elasticsearch still failing; retrying"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_retried_client_errors_are_not() {
        for status in [429, 500, 502, 503, 504, 408, 401, 403] {
            assert_eq!(status_kind(status), FailureKind::Transient, "{status}");
        }
        for status in [400, 404, 405, 409] {
            assert_eq!(status_kind(status), FailureKind::Refused, "{status}");
        }
        assert_eq!(status_kind(413), FailureKind::TooLarge);
    }

    #[test]
    fn health_follows_failures_and_recovery() {
        let health = ComponentHealth::default();
        let report = FailureReport::for_requests("es#0", health.clone(), Duration::from_secs(10));
        report.succeeded();
        assert_eq!(health.snapshot().failing_since, None);
        report.failed(10, "connection refused", Duration::from_millis(100));
        report.failed(10, "connection refused", Duration::from_millis(200));
        let snapshot = health.snapshot();
        assert!(snapshot.failing_since.is_some());
        assert_eq!(snapshot.last_error.as_deref(), Some("connection refused"));
        report.succeeded();
        assert_eq!(health.snapshot().failing_since, None);
        assert!(report.outage.failing_since().is_none());
    }

    #[test]
    fn slow_progress_is_logged_but_not_a_health_failure() {
        let health = ComponentHealth::default();
        let report = FailureReport::for_items("es#0", health.clone(), Duration::from_secs(10));
        report.slowed(3, "3 of 10 items throttled", Duration::from_millis(100));
        assert_eq!(health.snapshot().failing_since, None);
        assert!(report.outage.failing_since().is_some());
        report.succeeded();
        assert!(report.outage.failing_since().is_none());
    }
}
