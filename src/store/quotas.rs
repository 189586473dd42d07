//! Quota usage kept in step with the store: the counters of every replica are
//! added to the store's rows, and the rows other replicas changed are read back.
//!
//! Runs off the request path, as background tasks; the request path only touches
//! the in-memory counters of [`Quotas`].

use std::sync::Arc;
use std::time::Duration;

use super::{Store, StoreError};
use crate::clock::unix_now;
use crate::limits::Limiter;
use crate::limits::quota::{self, Quotas};

/// Reads the current periods' quota rows changed at or after `since_ms` into the
/// counters; returns the store clock to read from next time.
pub async fn read_quotas(quotas: &Quotas, store: &Store, since_ms: i64) -> Result<i64, StoreError> {
    let now = unix_now();
    let periods = vec![
        quota::label(quota::Period::Day.word(now)),
        quota::label(quota::Period::Month.word(now)),
    ];
    let (rows, clock) = store.quota_usage_since(since_ms, periods).await?;
    for (subject, period, used) in rows {
        quotas.absorb(&subject, &period, used, now);
    }
    Ok(clock)
}

/// Keeps quota counters and the store in step: every `every`, adds the pending
/// usage to the store and reads back the rows other replicas changed since
/// `since_ms`. Runs until aborted; a store outage only delays the writes (usage
/// accumulates in memory and is written when the store returns).
pub async fn sync_quotas_forever(
    limiter: Arc<Limiter>,
    store: Store,
    every: Duration,
    mut since_ms: i64,
) {
    let quotas = limiter.quotas();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        flush_quotas(quotas, &store).await;
        // Rows committed while the last read ran may carry an earlier clock: read
        // with a margin (taking a row twice is harmless).
        match read_quotas(quotas, &store, since_ms - 5_000).await {
            Ok(clock) => since_ms = clock,
            Err(error) => tracing::warn!(%error, "could not read quota usage from the store"),
        }
    }
}

/// Adds every pending quota count to the store.
pub async fn flush_quotas(quotas: &Quotas, store: &Store) {
    let pending = quotas.pending();
    if pending.is_empty() {
        return;
    }
    match store.add_quota_usage(pending.clone()).await {
        Ok(totals) => {
            for (usage, total) in pending.iter().zip(totals) {
                quotas.flushed(usage, total);
            }
        }
        Err(error) => {
            tracing::warn!(%error, subjects = pending.len(), "could not write quota usage to the store; will retry")
        }
    }
}
