//! Exponential backoff with jitter: API retries, evictions, host reconnects, reboots, the
//! operator's rounds, its Lease and its notifications.

use std::time::Duration;

use rand::Rng;

/// Doubles from `initial` up to `max`; each delay gets up to 20% jitter so many clients
/// retrying after the same API outage do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.mul_f64(rand::rng().random_range(0.0..0.2));
        (base + jitter).min(self.max)
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let d: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(100) && d[0] < Duration::from_millis(121));
        assert!(d[1] >= Duration::from_millis(200) && d[1] < Duration::from_millis(241));
        assert!(d[2] >= Duration::from_millis(400));
        assert_eq!(d[3], Duration::from_millis(500));
        assert_eq!(d[4], Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(121));
    }

    #[test]
    fn a_max_below_initial_is_initial() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }
}
