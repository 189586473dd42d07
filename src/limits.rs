//! Rate limits: lock-free GCRA buckets keyed by client address.
//!
//! Each bucket is one atomic word (the "theoretical arrival time" of GCRA, in
//! milliseconds since the limiter started), updated by compare-and-swap, so
//! concurrent requests never wait on a lock. The map is bounded: when it grows past
//! its limit, buckets that are back to full are dropped (they hold no state worth
//! keeping), so a flood of distinct addresses cannot grow memory without bound.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets kept before idle ones are swept.
const MAX_BUCKETS: usize = 100_000;

/// A limit of `burst` requests, refilled evenly over `period`, per client address.
#[derive(Debug)]
pub struct AddressLimiter {
    /// Milliseconds between two refills (the GCRA emission interval).
    interval_ms: u64,
    /// How far ahead of now the arrival time may run (burst - 1 intervals).
    tolerance_ms: u64,
    start: Instant,
    buckets: papaya::HashMap<IpAddr, AtomicU64>,
}

impl AddressLimiter {
    /// `burst` requests per `period`; `None` when `burst` is 0 (no limit).
    #[must_use]
    pub fn new(burst: u32, period: Duration) -> Option<AddressLimiter> {
        if burst == 0 {
            return None;
        }
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        let interval_ms = (period_ms / u64::from(burst)).max(1);
        Some(AddressLimiter {
            interval_ms,
            tolerance_ms: interval_ms * u64::from(burst - 1),
            start: Instant::now(),
            buckets: papaya::HashMap::new(),
        })
    }

    /// Takes one request from `address`'s bucket, or says how many seconds until
    /// one is available.
    pub fn check(&self, address: IpAddr) -> Result<(), u32> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let buckets = self.buckets.pin();
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, tat| tat.load(Ordering::Relaxed) > now);
        }
        let bucket = buckets.get_or_insert_with(address, || AtomicU64::new(0));
        let mut tat = bucket.load(Ordering::Relaxed);
        loop {
            let arrival = tat.max(now);
            if arrival - now > self.tolerance_ms {
                let wait_ms = arrival - now - self.tolerance_ms;
                return Err(u32::try_from(wait_ms.div_ceil(1000)).unwrap_or(u32::MAX));
            }
            match bucket.compare_exchange_weak(
                tat,
                arrival + self.interval_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_per_interval() {
        let limiter = AddressLimiter::new(5, Duration::from_secs(3600)).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(limiter.check(a), Ok(()));
        }
        assert_eq!(
            limiter.check(a),
            Err(720),
            "the next one is 12 minutes away"
        );
        assert_eq!(limiter.check(b), Ok(()), "addresses are independent");
        tokio::time::advance(Duration::from_secs(719)).await;
        assert_eq!(limiter.check(a), Err(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.check(a), Ok(()));
        assert_eq!(limiter.check(a), Err(720));
        assert!(AddressLimiter::new(0, Duration::from_secs(1)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_swept_when_the_map_is_full() {
        let limiter = AddressLimiter::new(1, Duration::from_secs(1)).unwrap();
        for i in 0..MAX_BUCKETS as u32 {
            limiter.check(IpAddr::from(i.to_be_bytes())).unwrap();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        limiter.check("198.51.100.1".parse().unwrap()).unwrap();
        assert!(limiter.buckets.len() < 10, "{}", limiter.buckets.len());
    }
}
