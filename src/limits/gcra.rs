//! One rate, `limit` requests per `window`, as GCRA over a single atomic word.
//!
//! The word holds the bucket's *theoretical arrival time* (TAT): nanoseconds since
//! the limiter's [`Clock`] started at which the bucket would be full again if no
//! other request came. A request is admitted when the TAT is at most
//! `(limit - 1) * interval` ahead of now, and moves it one `interval` further; the
//! update is one compare-and-swap, so admission never waits on a lock. A word of
//! `0` (or any time in the past) is a full bucket, which is why an idle bucket can
//! be dropped without losing anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A monotonic nanosecond clock shared by all buckets of a limiter. Built on
/// Tokio's clock so tests can pause and advance it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }
}

impl Clock {
    /// Nanoseconds since the clock started.
    #[must_use]
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// `limit` requests per `window`, with bursts of up to `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per window.
    pub limit: u32,
    /// The window.
    pub window: Duration,
    /// Nanoseconds one request costs (the emission interval).
    interval: u64,
    /// How far ahead of now the TAT may be for a request to pass.
    tolerance: u64,
}

/// Where a bucket stands after a request it admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Requests it would admit right now.
    pub remaining: u32,
    /// Nanoseconds until it is full again.
    pub full_in: u64,
    /// Nanoseconds until it admits one more request (0 when `remaining > 0`).
    pub next_in: u64,
}

impl Standing {
    /// Whole seconds until the bucket is back at its limit, rounded up.
    #[must_use]
    pub fn reset_secs(&self) -> u64 {
        self.full_in.div_ceil(NANOS_PER_SEC)
    }

    /// Whole seconds until one more request passes, rounded up and at least 1: the
    /// `Retry-After` of a refusal.
    #[must_use]
    pub fn retry_after_secs(&self) -> u64 {
        self.next_in.div_ceil(NANOS_PER_SEC).max(1)
    }
}

impl Rate {
    /// `limit` requests per `window`; `None` when either is zero.
    #[must_use]
    pub fn new(limit: u32, window: Duration) -> Option<Rate> {
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        if limit == 0 || window_ns == 0 {
            return None;
        }
        let interval = (window_ns / u64::from(limit)).max(1);
        Some(Rate {
            limit,
            window,
            interval,
            tolerance: interval.saturating_mul(u64::from(limit - 1)),
        })
    }

    /// One request per second: a placeholder where a rate is needed before it is known.
    pub const ONE_PER_SECOND: Rate = Rate {
        limit: 1,
        window: Duration::from_secs(1),
        interval: NANOS_PER_SEC,
        tolerance: 0,
    };

    /// The same window with `limit / divisor` requests, at least one: one
    /// replica's share of a limit the fleet shares.
    #[must_use]
    pub fn divided(&self, divisor: u32) -> Rate {
        let limit = (self.limit / divisor.max(1)).max(1);
        Rate::new(limit, self.window).unwrap_or(*self)
    }

    /// Nanoseconds one request costs.
    #[must_use]
    pub fn interval_ns(&self) -> u64 {
        self.interval
    }

    /// How far ahead of now (nanoseconds) a bucket's TAT may be for a request to pass.
    #[must_use]
    pub fn tolerance_ns(&self) -> u64 {
        self.tolerance
    }

    /// Window in whole seconds (at least 1), as the headers state it.
    #[must_use]
    pub fn window_secs(&self) -> u64 {
        self.window.as_secs().max(1)
    }

    /// Takes one request from the bucket `tat` at time `now`: `Ok` with where the
    /// bucket stands after it, or `Err` with where it stands without it.
    pub fn take(&self, tat: &AtomicU64, now: u64) -> Result<Standing, Standing> {
        let mut current = tat.load(Ordering::Relaxed);
        loop {
            let from = current.max(now);
            if from - now > self.tolerance {
                return Err(self.standing(current, now));
            }
            let next = from.saturating_add(self.interval);
            match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(self.standing(next, now)),
                Err(seen) => current = seen,
            }
        }
    }

    /// Returns a request taken by [`Rate::take`] (another window refused it).
    pub fn give_back(&self, tat: &AtomicU64) {
        // Never below zero; a TAT in the past is a full bucket either way.
        let _ = tat.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
            Some(t.saturating_sub(self.interval))
        });
    }

    /// Where a bucket whose TAT is `tat` stands at `now`.
    #[must_use]
    pub fn standing(&self, tat: u64, now: u64) -> Standing {
        let ahead = tat.saturating_sub(now);
        if ahead > self.tolerance {
            return Standing {
                remaining: 0,
                full_in: ahead,
                next_in: ahead - self.tolerance,
            };
        }
        let remaining = (self.tolerance - ahead) / self.interval + 1;
        Standing {
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX).min(self.limit),
            full_in: ahead,
            next_in: 0,
        }
    }

    /// True when a bucket whose TAT is `tat` is full at `now` (holds no state).
    #[must_use]
    pub fn is_full(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NANOS_PER_SEC;

    fn rate(limit: u32, secs: u64) -> Rate {
        Rate::new(limit, Duration::from_secs(secs)).unwrap()
    }

    #[test]
    fn a_full_bucket_admits_exactly_its_limit_then_one_per_interval() {
        let r = rate(10, 1);
        let tat = AtomicU64::new(0);
        let now = 5 * SEC;
        for left in (0..10).rev() {
            let s = r.take(&tat, now).unwrap();
            assert_eq!(s.remaining, left);
        }
        let refused = r.take(&tat, now).unwrap_err();
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.next_in, SEC / 10, "one request is 100 ms away");
        assert_eq!(refused.retry_after_secs(), 1);
        assert_eq!(refused.full_in, SEC);
        // 100 ms later exactly one more passes.
        let s = r.take(&tat, now + SEC / 10).unwrap();
        assert_eq!((s.remaining, s.next_in), (0, SEC / 10));
        assert!(r.take(&tat, now + SEC / 10).is_err());
    }

    #[test]
    fn a_refusal_changes_nothing() {
        let r = rate(2, 60);
        let tat = AtomicU64::new(0);
        r.take(&tat, 0).unwrap();
        r.take(&tat, 0).unwrap();
        let before = tat.load(Ordering::Relaxed);
        for _ in 0..100 {
            r.take(&tat, 0).unwrap_err();
        }
        assert_eq!(tat.load(Ordering::Relaxed), before);
        let refused = r.take(&tat, 0).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 30);
        assert_eq!(refused.reset_secs(), 60);
    }

    #[test]
    fn standing_after_partial_use() {
        let r = rate(300, 60);
        let tat = AtomicU64::new(0);
        let now = 1000 * SEC;
        for _ in 0..100 {
            r.take(&tat, now).unwrap();
        }
        let s = r.standing(tat.load(Ordering::Relaxed), now);
        assert_eq!(s.remaining, 200);
        assert_eq!(s.reset_secs(), 20, "100 requests at 200 ms each");
        // Ten seconds later 50 have come back.
        let s = r.standing(tat.load(Ordering::Relaxed), now + 10 * SEC);
        assert_eq!((s.remaining, s.reset_secs()), (250, 10));
        // And after twenty it is full, with nothing to remember.
        assert!(Rate::is_full(tat.load(Ordering::Relaxed), now + 20 * SEC));
        let s = r.standing(tat.load(Ordering::Relaxed), now + 21 * SEC);
        assert_eq!((s.remaining, s.full_in), (300, 0));
    }

    #[test]
    fn give_back_restores_a_take() {
        let r = rate(1, 10);
        let tat = AtomicU64::new(0);
        r.take(&tat, SEC).unwrap();
        r.give_back(&tat);
        assert!(r.take(&tat, SEC).is_ok());
        assert!(r.take(&tat, SEC).is_err());
    }

    #[test]
    fn limits_that_do_not_divide_the_window_still_admit_exactly_the_limit() {
        for limit in [3, 7, 13, 1000, 999_999] {
            let r = rate(limit, 1);
            let tat = AtomicU64::new(0);
            let admitted = (0..=limit).filter(|_| r.take(&tat, SEC).is_ok()).count();
            assert_eq!(admitted, limit as usize, "limit {limit}");
        }
        assert!(Rate::new(0, Duration::from_secs(1)).is_none());
        assert!(Rate::new(1, Duration::ZERO).is_none());
    }
}
