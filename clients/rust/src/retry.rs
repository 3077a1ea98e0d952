//! [`RetryPolicy`]: how often and how long a resend-safe failure is retried
//! — exponential backoff from a first delay to a ceiling, within a total
//! time budget.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;

/// Backoff for resending a batch after a resend-safe failure (the agent
/// busy with RESOURCE_EXHAUSTED, shutting down, or unreachable).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The wait before the first resend; doubled after each.
    pub first_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
    /// No attempt starts this long after the first one: the batch fails
    /// with the last error.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            give_up_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Never resend: the first failure is the answer.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            give_up_after: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    /// Runs `attempt` until it succeeds, fails in a way a resend cannot
    /// fix, or the time budget is spent.
    pub(crate) async fn run<F, Fut>(&self, mut attempt: F) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        let give_up_at = Instant::now() + self.give_up_after;
        let mut delay = self.first_delay;
        loop {
            let error = match attempt().await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if !error.is_resend_safe() || Instant::now() + delay > give_up_at {
                return Err(error);
            }
            tracing::debug!(%error, ?delay, "batch not acknowledged; resending");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.max_delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tonic::Status;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            give_up_after: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn resend_safe_failures_are_retried_until_acknowledged() {
        let attempts = AtomicUsize::new(0);
        let result = policy()
            .run(|| async {
                match attempts.fetch_add(1, Ordering::SeqCst) {
                    0..=2 => Err(Error::Status(Status::resource_exhausted("busy"))),
                    _ => Ok(()),
                }
            })
            .await;
        assert!(result.is_ok());
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let attempts = AtomicUsize::new(0);
        let result = policy()
            .run(|| async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err(Error::Status(Status::permission_denied("no")))
            })
            .await;
        assert_eq!(result.unwrap_err().code(), Some(tonic::Code::PermissionDenied));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn never_gives_the_first_failure() {
        let attempts = AtomicUsize::new(0);
        let result = RetryPolicy::never()
            .run(|| async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err(Error::Status(Status::unavailable("down")))
            })
            .await;
        assert!(result.unwrap_err().is_resend_safe());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
