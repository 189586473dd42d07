//! The bounded map of per-subject state ([`Bounded`]), and the rate buckets kept in
//! it ([`Buckets`]); the quota counters live in one too.
//!
//! A principal's bucket holds one GCRA word per window of its limit set. The map
//! never holds more than `capacity` principals: a sweeper drops buckets that are
//! full again (they remember nothing), and a principal first seen while the map is
//! at capacity is not given a fresh bucket but shares one of a fixed set of
//! *overflow* buckets, chosen by its hash. So a flood of made-up identifiers or
//! addresses costs no memory past the ceiling, earns no fresh allowance (flooders
//! share a handful of buckets, which they drain for each other), and never touches
//! the bucket of a principal already tracked: an abuser's bucket is not reset.

use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::gcra::Rate;

/// Most windows one limit set may have.
pub const MAX_WINDOWS: usize = 4;

/// Overflow buckets shared by principals first seen at capacity.
const OVERFLOW: usize = 1024;

/// One principal's bucket: a GCRA word per window.
#[derive(Debug, Default)]
pub struct Bucket(pub [AtomicU64; MAX_WINDOWS]);

impl Bucket {
    /// True when every window is full at `now`: the bucket holds no state.
    fn is_idle(&self, now: u64) -> bool {
        self.0
            .iter()
            .all(|w| Rate::is_full(w.load(Ordering::Relaxed), now))
    }
}

/// Principal hashes are already uniformly distributed 64-bit values: the map uses
/// them as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in so the hasher stays total.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map of per-subject state that never holds more than `capacity` subjects: a
/// subject first seen at capacity gets one of a fixed set of shared overflow
/// values, chosen by its hash, instead of an entry of its own.
#[derive(Debug)]
pub struct Bounded<V> {
    map: papaya::HashMap<u64, V, BuildHasherDefault<IdentityHasher>>,
    overflow: Box<[V]>,
    capacity: usize,
    /// Set when a subject met a full map, so the sweeper runs early.
    full: AtomicBool,
}

impl<V> Bounded<V> {
    /// A map of at most `capacity` subjects and `slots` overflow values.
    #[must_use]
    pub fn new(capacity: usize, slots: usize, overflow: impl FnMut(usize) -> V) -> Bounded<V> {
        Bounded {
            map: papaya::HashMap::builder()
                .hasher(BuildHasherDefault::default())
                .capacity(capacity.min(4096))
                .build(),
            overflow: (0..slots.max(1)).map(overflow).collect(),
            capacity,
            full: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the value of the subject whose hash is `key`: its own (made by
    /// `make` if it has none yet), or an overflow value when the map is at capacity
    /// and it has none.
    pub fn with<R>(&self, key: u64, make: impl FnOnce() -> V, f: impl FnOnce(&V) -> R) -> R {
        let map = self.map.pin();
        if let Some(value) = map.get(&key) {
            return f(value);
        }
        if map.len() >= self.capacity {
            self.full.store(true, Ordering::Relaxed);
            let slot = usize::try_from(key % self.overflow.len() as u64).unwrap_or(0);
            return f(&self.overflow[slot]);
        }
        f(map.get_or_insert_with(key, make))
    }

    /// Runs `f` on the value of the subject whose hash is `key`, made by `make` if it
    /// has none yet; `None`, without running `f`, when it has none and the map is at
    /// capacity (for state that cannot be shared, unlike [`Bounded::with`]'s).
    pub fn with_own<R>(
        &self,
        key: u64,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        let map = self.map.pin();
        if let Some(value) = map.get(&key) {
            return Some(f(value));
        }
        if map.len() >= self.capacity {
            self.full.store(true, Ordering::Relaxed);
            return None;
        }
        Some(f(map.get_or_insert_with(key, make)))
    }

    /// True while a subject first seen now would get a value of its own (not an
    /// overflow slot).
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.map.len() < self.capacity
    }

    /// Runs `f` on the subject's own value, if it has one.
    pub fn get<R>(&self, key: u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.map.pin().get(&key).map(f)
    }

    /// Runs `f` on every subject's own value.
    pub fn for_each(&self, mut f: impl FnMut(&V)) {
        for value in self.map.pin().values() {
            f(value);
        }
    }

    /// The overflow values.
    pub fn overflow(&self) -> &[V] {
        &self.overflow
    }

    /// Keeps the subjects for which `keep` is true; returns how many are left.
    pub fn retain(&self, mut keep: impl FnMut(&V) -> bool) -> usize {
        self.full.store(false, Ordering::Relaxed);
        let map = self.map.pin();
        map.retain(|_, value| keep(value));
        map.len()
    }

    /// True when a subject found the map full since the last sweep.
    #[must_use]
    pub fn wants_sweep(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Subjects tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no subject is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The rate buckets of every subject the limiter is tracking.
pub type Buckets = Bounded<Bucket>;

impl Bounded<Bucket> {
    /// Buckets for at most `capacity` subjects.
    #[must_use]
    pub fn buckets(capacity: usize) -> Buckets {
        Bounded::new(capacity, OVERFLOW, |_| Bucket::default())
    }

    /// Runs `f` on the subject's bucket (see [`Bounded::with`]).
    pub fn bucket<R>(&self, key: u64, f: impl FnOnce(&Bucket) -> R) -> R {
        self.with(key, Bucket::default, f)
    }

    /// Drops the buckets that are full at `now`; returns how many are left.
    pub fn sweep(&self, now: u64) -> usize {
        self.retain(|bucket| !bucket.is_idle(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn at_capacity_newcomers_share_overflow_and_tracked_buckets_keep_their_state() {
        let rate = Rate::new(2, Duration::from_secs(60)).unwrap();
        let buckets = Buckets::buckets(3);
        let take = |key: u64| buckets.bucket(key, |b| rate.take(&b.0[0], 0).is_ok());
        // The abuser drains its bucket.
        assert!(take(1) && take(1) && !take(1));
        assert!(take(2) && take(3));
        assert_eq!(buckets.len(), 3);
        // The map is full: new principals share overflow buckets...
        assert!(take(1000 + OVERFLOW as u64) && take(1000) && !take(1000));
        assert_eq!(buckets.len(), 3);
        assert!(buckets.wants_sweep());
        // ...and the abuser is still refused: nothing reset it.
        assert!(!take(1));
        // Nothing is idle yet, so a sweep drops nothing.
        assert_eq!(buckets.sweep(0), 3);
        // A minute later every bucket is full again and the sweep empties the map.
        assert_eq!(buckets.sweep(60_000_000_000), 0);
        assert!(!buckets.wants_sweep());
        assert!(take(1000));
        assert_eq!(buckets.len(), 1);
    }
}
