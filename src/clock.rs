//! Wall-clock time as the proxy counts it: unix seconds and milliseconds.
//!
//! Expiry times, rate windows, quota periods and store clocks are all unix times,
//! read here and nowhere else, so that every layer agrees on one clock. Monotonic
//! durations (timeouts, latencies) use `tokio::time::Instant` instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current unix time in seconds.
#[must_use]
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The current unix time in milliseconds.
#[must_use]
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
