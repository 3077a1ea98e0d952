//! The one backoff every plugin retries with: exponential, capped, with
//! jitter so that many agents recovering from the same outage do not retry
//! in lockstep.

use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is drawn between half
/// and all of the current step, and the step doubles up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and never waiting longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            step: initial,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Starts again from `initial`, after a success.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s.
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let steps = [100, 200, 400, 800, 800, 800];
        for step in steps {
            let delay = backoff.next_delay();
            let step = Duration::from_millis(step);
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
