//! A circuit breaker in front of Redis: after a few failures in a row it stops
//! asking for a while (the limits fall back meanwhile), then lets one call probe.
//!
//! Two atomics, no lock: `failures` counts consecutive failures, `open_until` is
//! the clock time (ns) until which no call is made, 0 when closed. Past that time
//! the first caller to move it forward is the probe; the others keep to the
//! fallback until the probe succeeds (closed) or fails (open again).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What a change of state was, for the log and the gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed.
    None,
    /// The breaker opened: calls stop.
    Opened,
    /// The breaker closed: Redis answered again.
    Closed,
}

/// The breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: u64,
    failures: AtomicU32,
    open_until: AtomicU64,
}

impl Breaker {
    /// Opens after `threshold` failures in a row, for `cooldown` nanoseconds.
    #[must_use]
    pub fn new(threshold: u32, cooldown: u64) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown: cooldown.max(1),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    /// True when a call may be made at `now`: closed, or open past its cooldown and
    /// this caller is the one probe.
    pub fn allows(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now.saturating_add(self.cooldown),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// True while calls are stopped (the fallback is in force).
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// Nanoseconds from `now` until the next probe (0 when closed).
    #[must_use]
    pub fn remaining(&self, now: u64) -> u64 {
        self.open_until.load(Ordering::Acquire).saturating_sub(now)
    }

    /// A call succeeded.
    pub fn success(&self) -> Change {
        self.failures.store(0, Ordering::Release);
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            Change::Closed
        } else {
            Change::None
        }
    }

    /// A call failed at `now`.
    pub fn failure(&self, now: u64) -> Change {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let open = self.open_until.load(Ordering::Acquire);
        if open != 0 {
            // A failed probe: open for another cooldown.
            self.open_until
                .store(now.saturating_add(self.cooldown), Ordering::Release);
            return Change::None;
        }
        if failures >= self.threshold
            && self
                .open_until
                .compare_exchange(
                    0,
                    now.saturating_add(self.cooldown).max(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Change::Opened;
        }
        Change::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn opens_after_the_threshold_probes_once_after_the_cooldown_and_closes_on_success() {
        let breaker = Breaker::new(3, 5 * SEC);
        assert!(breaker.allows(0));
        assert_eq!(breaker.failure(0), Change::None);
        assert_eq!(breaker.failure(0), Change::None);
        assert!(!breaker.is_open());
        assert_eq!(breaker.failure(SEC), Change::Opened);
        assert!(breaker.is_open());
        assert!(!breaker.allows(2 * SEC), "open: no calls");
        assert_eq!(breaker.remaining(2 * SEC), 4 * SEC);
        // Past the cooldown exactly one caller probes.
        assert!(breaker.allows(6 * SEC));
        assert!(!breaker.allows(6 * SEC));
        // The probe fails: open again for a whole cooldown.
        assert_eq!(breaker.failure(6 * SEC), Change::None);
        assert!(!breaker.allows(10 * SEC));
        assert!(breaker.allows(11 * SEC));
        assert_eq!(breaker.success(), Change::Closed);
        assert!(!breaker.is_open());
        assert!(breaker.allows(11 * SEC));
        assert_eq!(breaker.success(), Change::None);
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, SEC);
        breaker.failure(0);
        breaker.success();
        assert_eq!(breaker.failure(0), Change::None);
        assert_eq!(breaker.failure(0), Change::Opened);
    }
}
