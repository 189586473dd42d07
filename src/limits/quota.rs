//! Quotas: requests per UTC day or calendar month, counted in memory and written
//! to the store in batches.
//!
//! Each subject's counter is three atomics: the period it counts, the net usage the
//! store last reported (`synced`, every replica's flushed requests), and the
//! requests this replica admitted since its last flush (`pending`). Admission is a
//! compare-and-swap on `pending`; no request touches the store. A flusher adds the
//! pending counts to the store (which returns each total) and reads back the rows
//! other replicas changed, so replicas share one count, late by at most a flush
//! interval. A crash loses at most the requests admitted since the last flush; they
//! are never charged, the subject is never refused for them.
//!
//! A payment that buys several requests is credited as negative usage, so the same
//! row carries it to every replica and across restarts.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

use super::buckets::Bounded;
use super::{Subject, Window, key_of_name};

const DAY: i64 = 86_400;
/// Bit of a period word that says it counts months.
const MONTHLY: u32 = 1 << 31;
/// Counters shared by subjects first seen at capacity.
const OVERFLOW: usize = 256;

/// The period a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

/// `limit` requests per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per period.
    pub limit: u64,
    /// The period.
    pub period: Period,
}

impl Period {
    /// The period containing unix time `now`, as a word that also says its kind.
    #[must_use]
    pub fn word(self, now: i64) -> u32 {
        let day = now.div_euclid(DAY);
        match self {
            Period::Day => u32::try_from(day).unwrap_or(0) & !MONTHLY,
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                u32::try_from(y * 12 + i64::from(m) - 1).unwrap_or(0) | MONTHLY
            }
        }
    }

    /// Seconds from `now` until the period containing it ends.
    #[must_use]
    pub fn ends_in(self, now: i64) -> u64 {
        let day = now.div_euclid(DAY);
        let end = match self {
            Period::Day => (day + 1) * DAY,
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY
            }
        };
        u64::try_from(end - now).unwrap_or(0)
    }

    /// The nominal length the headers state: a day, or 30 days for a month.
    #[must_use]
    pub fn secs(self) -> u64 {
        match self {
            Period::Day => 86_400,
            Period::Month => 30 * 86_400,
        }
    }
}

/// The store's name for a period word: `2026-11-23` or `2026-11`.
#[must_use]
pub fn label(word: u32) -> String {
    let index = i64::from(word & !MONTHLY);
    if word & MONTHLY == 0 {
        let (y, m, d) = civil_from_days(index);
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        format!(
            "{:04}-{:02}",
            index.div_euclid(12),
            index.rem_euclid(12) + 1
        )
    }
}

/// The period word of a store label, if it is one.
#[must_use]
pub fn parse_label(text: &str) -> Option<u32> {
    let mut parts = text.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) {
        return None;
    }
    match parts.next() {
        None => u32::try_from(y * 12 + i64::from(m) - 1)
            .ok()
            .map(|w| w | MONTHLY),
        Some(d) => {
            let d: u32 = d.parse().ok()?;
            if parts.next().is_some() || !(1..=31).contains(&d) {
                return None;
            }
            u32::try_from(days_from_civil(y, m, d)).ok()
        }
    }
}

/// Year, month (1-12) and day (1-31) of a day count since 1970-01-01 (the
/// proleptic Gregorian calendar; Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One subject's counter.
#[derive(Debug)]
struct Counter {
    /// The subject's name; empty for overflow counters, which are never stored.
    name: Box<str>,
    /// The period word being counted.
    period: AtomicU32,
    /// Net usage in the store as of the last flush or read.
    synced: AtomicI64,
    /// Requests admitted (less credits bought) here and not yet flushed.
    pending: AtomicI64,
    /// `synced` holds a total the store gave for this period (a flush, or a read
    /// with [`Quotas::learn`]), not just this replica's own count.
    known: AtomicBool,
}

impl Counter {
    fn new(name: Box<str>, period: u32, synced: i64) -> Counter {
        Counter {
            name,
            period: AtomicU32::new(period),
            synced: AtomicI64::new(synced),
            pending: AtomicI64::new(0),
            known: AtomicBool::new(false),
        }
    }

    /// Moves the counter to `period` if it still counts an earlier one.
    fn roll(&self, period: u32) {
        let seen = self.period.load(Ordering::Acquire);
        if seen != period
            && self
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // Unflushed usage of the old period no longer limits anyone; it is
            // dropped rather than charged to the new one.
            self.synced.store(0, Ordering::Release);
            self.pending.store(0, Ordering::Release);
            self.known.store(false, Ordering::Release);
        }
    }

    fn used(&self) -> i64 {
        self.synced.load(Ordering::Acquire) + self.pending.load(Ordering::Acquire)
    }
}

/// Where a subject stands against its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaStanding {
    /// Admitted; this many requests are left in the period.
    Admitted {
        /// Requests left.
        remaining: u64,
        /// Seconds until the period ends.
        reset_secs: u64,
    },
    /// Used up until the period ends.
    Exhausted {
        /// Seconds until the period ends.
        reset_secs: u64,
    },
}

impl QuotaStanding {
    /// The standing as a header window.
    #[must_use]
    pub fn window(&self, quota: &Quota) -> Window {
        let (remaining, reset_secs) = match *self {
            QuotaStanding::Admitted {
                remaining,
                reset_secs,
            } => (remaining, reset_secs),
            QuotaStanding::Exhausted { reset_secs } => (0, reset_secs),
        };
        Window {
            limit: quota.limit,
            window_secs: quota.period.secs(),
            remaining,
            reset_secs,
        }
    }
}

/// Usage to add to the store: `delta` more requests by `name` in `period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The subject.
    pub name: String,
    /// The period's label (`2026-11-23`, `2026-11`).
    pub period: String,
    /// Net requests since the last flush (negative when credits were bought).
    pub delta: i64,
}

/// Every subject's quota counter.
#[derive(Debug)]
pub struct Quotas {
    counters: Bounded<Counter>,
}

impl Quotas {
    /// Counters for at most `capacity` subjects.
    #[must_use]
    pub fn new(capacity: usize) -> Quotas {
        Quotas {
            counters: Bounded::new(capacity, OVERFLOW, |_| Counter::new(Box::from(""), 0, 0)),
        }
    }

    fn with<R>(
        &self,
        key: u64,
        name: impl FnOnce() -> String,
        period: u32,
        f: impl FnOnce(&Counter) -> R,
    ) -> R {
        self.counters
            .with(key, || Counter::new(name().into_boxed_str(), period, 0), f)
    }

    /// Counts one request by `subject` at unix time `now`, unless its quota is used up.
    pub fn take(&self, subject: &Subject<'_>, quota: &Quota, now: i64) -> QuotaStanding {
        let period = quota.period.word(now);
        let reset_secs = quota.period.ends_in(now);
        let limit = i64::try_from(quota.limit).unwrap_or(i64::MAX);
        self.with(
            subject.key,
            || subject.name(),
            period,
            |counter| {
                counter.roll(period);
                let mut pending = counter.pending.load(Ordering::Acquire);
                loop {
                    let used = counter.synced.load(Ordering::Acquire) + pending;
                    if used >= limit {
                        return QuotaStanding::Exhausted { reset_secs };
                    }
                    match counter.pending.compare_exchange_weak(
                        pending,
                        pending + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            return QuotaStanding::Admitted {
                                remaining: u64::try_from(limit - used - 1).unwrap_or(0),
                                reset_secs,
                            };
                        }
                        Err(seen) => pending = seen,
                    }
                }
            },
        )
    }

    /// Where `subject` stands at unix time `now`, without counting a request.
    #[must_use]
    pub fn peek(&self, subject: &Subject<'_>, quota: &Quota, now: i64) -> QuotaStanding {
        let period = quota.period.word(now);
        let reset_secs = quota.period.ends_in(now);
        let used = self
            .counters
            .get(subject.key, |c| {
                (c.period.load(Ordering::Acquire) == period).then(|| c.used())
            })
            .flatten()
            .unwrap_or(0);
        let left = i64::try_from(quota.limit).unwrap_or(i64::MAX) - used;
        match u64::try_from(left) {
            Ok(remaining) if remaining > 0 => QuotaStanding::Admitted {
                remaining,
                reset_secs,
            },
            _ => QuotaStanding::Exhausted { reset_secs },
        }
    }

    /// Credits `subject` with `requests` more in the current period (a payment
    /// bought them).
    pub fn credit(&self, subject: &Subject<'_>, quota: &Quota, requests: u64, now: i64) {
        let period = quota.period.word(now);
        self.with(
            subject.key,
            || subject.name(),
            period,
            |counter| {
                counter.roll(period);
                counter.pending.fetch_sub(
                    i64::try_from(requests).unwrap_or(i64::MAX),
                    Ordering::AcqRel,
                );
            },
        );
    }

    /// The usage not yet written to the store.
    #[must_use]
    pub fn pending(&self) -> Vec<Usage> {
        let mut pending = Vec::new();
        self.counters.for_each(|counter| {
            let delta = counter.pending.load(Ordering::Acquire);
            if delta != 0 {
                pending.push(Usage {
                    name: counter.name.to_string(),
                    period: label(counter.period.load(Ordering::Acquire)),
                    delta,
                });
            }
        });
        pending
    }

    /// Records that the store added `usage` and now holds `total` for it.
    pub fn flushed(&self, usage: &Usage, total: i64) {
        let Some(period) = parse_label(&usage.period) else {
            return;
        };
        self.counters.get(key_of_name(&usage.name), |counter| {
            if counter.period.load(Ordering::Acquire) == period {
                counter.synced.store(total, Ordering::Release);
                counter.pending.fetch_sub(usage.delta, Ordering::AcqRel);
                counter.known.store(true, Ordering::Release);
            }
        });
    }

    /// True when `subject`'s counter has no total from the store for the period
    /// of unix time `now` (its first request here, or the first of a period):
    /// where the store is asked on the request path (quotas in Redis), it is read
    /// with [`Quotas::learn`] before admitting, or a replica that just started
    /// would give a used-up quota back. False for a subject past capacity, whose
    /// shared overflow counter is never stored.
    #[must_use]
    pub fn unknown(&self, subject: &Subject<'_>, quota: &Quota, now: i64) -> bool {
        let period = quota.period.word(now);
        self.counters
            .get(subject.key, |counter| {
                counter.period.load(Ordering::Acquire) != period
                    || !counter.known.load(Ordering::Acquire)
            })
            .unwrap_or_else(|| self.counters.has_room())
    }

    /// Takes in the fleet's total `used` by `subject` in the period of unix time
    /// `now`, read from the store, unless a flush gave the counter a total since.
    pub fn learn(&self, subject: &Subject<'_>, quota: &Quota, used: i64, now: i64) {
        let period = quota.period.word(now);
        self.with(
            subject.key,
            || subject.name(),
            period,
            |counter| {
                if counter.name.is_empty() {
                    return;
                }
                counter.roll(period);
                if counter.period.load(Ordering::Acquire) == period
                    && !counter.known.swap(true, Ordering::AcqRel)
                {
                    counter.synced.store(used, Ordering::Release);
                }
            },
        );
    }

    /// Takes in a row of the store (another replica's flush, or a row loaded at
    /// start): `name` has used `used` in the period labelled `period`.
    pub fn absorb(&self, name: &str, period: &str, used: i64, now: i64) {
        let Some(word) = parse_label(period) else {
            return;
        };
        let kind = if word & MONTHLY == 0 {
            Period::Day
        } else {
            Period::Month
        };
        if kind.word(now) != word {
            return;
        }
        self.with(
            key_of_name(name),
            || name.to_owned(),
            word,
            |counter| {
                if !counter.name.is_empty() {
                    counter.roll(word);
                    if counter.period.load(Ordering::Acquire) == word {
                        counter.synced.store(used, Ordering::Release);
                    }
                }
            },
        );
    }

    /// Drops the counters of past periods that have nothing left to flush.
    pub fn sweep(&self, now: i64) {
        let today = Period::Day.word(now);
        let month = Period::Month.word(now);
        self.counters.retain(|counter| {
            let period = counter.period.load(Ordering::Acquire);
            period == today || period == month || counter.pending.load(Ordering::Acquire) != 0
        });
        for counter in self.counters.overflow() {
            let period = counter.period.load(Ordering::Acquire);
            if period != today && period != month {
                counter.pending.store(0, Ordering::Release);
                counter.synced.store(0, Ordering::Release);
            }
        }
    }

    /// Requests `name` has used in the current period, as far as this replica knows.
    #[must_use]
    pub fn used(&self, name: &str) -> Option<i64> {
        self.counters.get(key_of_name(name), Counter::used)
    }

    /// Subjects counted.
    #[must_use]
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// True when nothing is counted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitSet;

    // 2026-11-23T10:00:00Z
    const NOW: i64 = 1_795_428_000;

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(label(Period::Day.word(NOW)), "2026-11-23");
        assert_eq!(label(Period::Month.word(NOW)), "2026-11");
        assert_eq!(Period::Day.ends_in(NOW), 14 * 3600);
        assert_eq!(Period::Month.ends_in(NOW), (7 * 24 + 14) * 3600);
        for word in [Period::Day.word(NOW), Period::Month.word(NOW)] {
            assert_eq!(parse_label(&label(word)), Some(word));
        }
        // Month ends across a year and in a leap February.
        let dec31 = days_from_civil(2026, 12, 31) * DAY;
        assert_eq!(Period::Month.ends_in(dec31), 86_400);
        assert_eq!(label(Period::Month.word(dec31 + 86_400)), "2027-01");
        let feb28 = days_from_civil(2028, 2, 28) * DAY;
        assert_eq!(Period::Month.ends_in(feb28), 2 * 86_400);
        for days in [-1000, 0, 59, 60, 10_957, 20_415, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(parse_label("2026-13"), None);
        assert_eq!(parse_label("nonsense"), None);
    }

    fn subject(limits: &LimitSet) -> Subject<'_> {
        Subject::address("192.0.2.1".parse().unwrap(), limits)
    }

    #[test]
    fn counts_to_the_limit_then_refuses_until_the_period_ends() {
        let quotas = Quotas::new(10);
        let quota = Quota {
            limit: 3,
            period: Period::Day,
        };
        let limits = LimitSet::default();
        let who = subject(&limits);
        for left in [2, 1, 0] {
            assert_eq!(
                quotas.take(&who, &quota, NOW),
                QuotaStanding::Admitted {
                    remaining: left,
                    reset_secs: 14 * 3600
                }
            );
        }
        assert_eq!(
            quotas.take(&who, &quota, NOW),
            QuotaStanding::Exhausted {
                reset_secs: 14 * 3600
            }
        );
        // A bought credit lets one more through.
        quotas.credit(&who, &quota, 1, NOW);
        assert!(matches!(
            quotas.take(&who, &quota, NOW),
            QuotaStanding::Admitted { remaining: 0, .. }
        ));
        assert!(matches!(
            quotas.take(&who, &quota, NOW),
            QuotaStanding::Exhausted { .. }
        ));
        // The next day starts afresh.
        let tomorrow = NOW + 14 * 3600;
        assert!(matches!(
            quotas.take(&who, &quota, tomorrow),
            QuotaStanding::Admitted {
                remaining: 2,
                reset_secs: 86_400
            }
        ));
    }

    #[test]
    fn flushing_and_absorbing_keep_one_count() {
        let quotas = Quotas::new(10);
        let quota = Quota {
            limit: 10,
            period: Period::Month,
        };
        let limits = LimitSet::default();
        let who = subject(&limits);
        for _ in 0..4 {
            quotas.take(&who, &quota, NOW);
        }
        let pending = quotas.pending();
        assert_eq!(
            pending,
            vec![Usage {
                name: "addr:192.0.2.1".into(),
                period: "2026-11".into(),
                delta: 4
            }]
        );
        // Meanwhile another request; then the store says 4 (ours) + 3 (another replica's).
        quotas.take(&who, &quota, NOW);
        quotas.flushed(&pending[0], 7);
        assert_eq!(quotas.used("addr:192.0.2.1"), Some(8));
        assert_eq!(quotas.pending()[0].delta, 1);
        // Another replica's later flush is read back.
        quotas.absorb("addr:192.0.2.1", "2026-11", 9, NOW);
        assert_eq!(quotas.used("addr:192.0.2.1"), Some(10));
        assert!(matches!(
            quotas.take(&who, &quota, NOW),
            QuotaStanding::Exhausted { .. }
        ));
        // Rows of other periods are ignored; unknown subjects are loaded.
        quotas.absorb("addr:192.0.2.1", "2026-10", 1, NOW);
        assert_eq!(quotas.used("addr:192.0.2.1"), Some(10));
        quotas.absorb("key:abc", "2026-11-23", 5, NOW);
        assert_eq!(quotas.used("key:abc"), Some(5));
    }

    #[test]
    fn a_counter_is_unknown_until_the_store_gives_it_a_total_for_the_period() {
        let quotas = Quotas::new(1);
        let quota = Quota {
            limit: 3,
            period: Period::Day,
        };
        let limits = LimitSet::default();
        let who = subject(&limits);
        // Never seen: unknown. The fleet has used 2 of 3: one more, then refused.
        assert!(quotas.unknown(&who, &quota, NOW));
        quotas.learn(&who, &quota, 2, NOW);
        assert!(!quotas.unknown(&who, &quota, NOW));
        assert!(matches!(
            quotas.take(&who, &quota, NOW),
            QuotaStanding::Admitted { remaining: 0, .. }
        ));
        assert!(matches!(
            quotas.take(&who, &quota, NOW),
            QuotaStanding::Exhausted { .. }
        ));
        // A second read is ignored: the counter knows its total already.
        quotas.learn(&who, &quota, 0, NOW);
        assert_eq!(quotas.used("addr:192.0.2.1"), Some(3));
        // A new period must be read again.
        assert!(quotas.unknown(&who, &quota, NOW + 86_400));
        // A newcomer past capacity shares an overflow counter, never read.
        let other = Subject::address("192.0.2.2".parse().unwrap(), &limits);
        assert!(!quotas.unknown(&other, &quota, NOW));
        quotas.learn(&other, &quota, 3, NOW);
        assert_eq!(quotas.len(), 1);

        // Taken before any read (Redis was away): unknown still, and the total
        // read later adds to what is pending here.
        let quotas = Quotas::new(10);
        quotas.take(&who, &quota, NOW);
        assert!(quotas.unknown(&who, &quota, NOW));
        quotas.learn(&who, &quota, 1, NOW);
        assert_eq!(quotas.used("addr:192.0.2.1"), Some(2));
        let pending = quotas.pending();
        quotas.flushed(&pending[0], 2);
        assert_eq!(quotas.used("addr:192.0.2.1"), Some(2));
        assert!(!quotas.unknown(&who, &quota, NOW));
    }

    #[test]
    fn at_capacity_newcomers_share_overflow_counters() {
        let quotas = Quotas::new(1);
        let quota = Quota {
            limit: 1,
            period: Period::Day,
        };
        let limits = LimitSet::default();
        let first = Subject::address("192.0.2.1".parse().unwrap(), &limits);
        assert!(matches!(
            quotas.take(&first, &quota, NOW),
            QuotaStanding::Admitted { .. }
        ));
        let mut refused = 0;
        for i in 0..2000u32 {
            let ip = std::net::IpAddr::from(i.to_be_bytes());
            let who = Subject::address(ip, &limits);
            if matches!(
                quotas.take(&who, &quota, NOW),
                QuotaStanding::Exhausted { .. }
            ) {
                refused += 1;
            }
        }
        assert_eq!(quotas.len(), 1);
        assert!(refused >= 2000 - OVERFLOW, "{refused}");
        assert!(quotas.pending().iter().all(|u| u.name == "addr:192.0.2.1"));
        // The day after, past counters are swept.
        quotas.sweep(NOW + 86_400);
        assert_eq!(quotas.len(), 1, "unflushed usage is kept until flushed");
        let pending = quotas.pending();
        quotas.flushed(&pending[0], 1);
        quotas.sweep(NOW + 86_400);
        assert_eq!(quotas.len(), 0);
    }
}
