//! Warnings that any local process can cause (a connection refused for its uid, one more peer
//! than allowed, a greeting it never reads): logged at most once per interval, each with the
//! number of occurrences it stands for, so a process that connects in a loop cannot flood the
//! producer's log.

use std::time::{Duration, Instant};

/// Counts occurrences and says when one should be logged.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    interval: Duration,
    last_logged: Option<Instant>,
    /// Occurrences since the last one logged.
    unlogged: u64,
}

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_logged: None,
            unlogged: 0,
        }
    }

    /// Records one occurrence at `now`. Returns `Some(n)` when it should be logged, `n` being
    /// the occurrences it stands for (itself and those not logged since the last one): the
    /// first ever, and then the first after each `interval`.
    pub(crate) fn occurred(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_once_per_interval_with_the_count_it_stands_for() {
        let interval = Duration::from_secs(10);
        let mut throttle = LogThrottle::new(interval);
        let start = Instant::now();
        assert_eq!(throttle.occurred(start), Some(1));
        for second in 1..10 {
            assert_eq!(throttle.occurred(start + Duration::from_secs(second)), None);
        }
        // The tenth second: itself and the nine held back.
        assert_eq!(throttle.occurred(start + interval), Some(10));
        assert_eq!(throttle.occurred(start + interval), None);
        // A quiet spell: the next one is logged at once, standing for itself and the one before.
        assert_eq!(throttle.occurred(start + interval * 5), Some(2));
    }
}
