//! Fleet-wide rate limits (`limits.global`): one limit for every replica, kept in
//! Redis, with almost no round trips far from the limit and none wasted at it.
//!
//! ```text
//!   request ─► lease of this subject ─ token left? ─ yes ─► admitted (no I/O)
//!                    │                     │ (below the watermark: top up in the background)
//!                    │                     no
//!                    ▼                     ▼
//!              at capacity ───────► LEASE script on Redis: GCRA on Redis's clock,
//!                                   grants up to n at once, 1 near the limit, 0 past it
//!                                          │ error / timeout / breaker open
//!                                          ▼
//!                                   on_unavailable: local (limit ÷ live replicas),
//!                                   open, or closed (503 RATE_LIMIT_UNAVAILABLE)
//! ```
//!
//! Each subject's windows are keys of Redis that share the subject's hash tag, so
//! a cluster keeps them on one slot, and one script takes from all of them at
//! once: no replica can read a window another is writing. A replica is *leased*
//! up to `max_lease` requests at a time, shared out by the script so that the
//! leases shrink to one as the subject nears its limit; it spends them with one
//! atomic decrement each and asks for more in the background when a lease runs
//! low. What is left when a lease expires goes back to Redis. So the fleet admits
//! at most the limit, and refuses early by at most what the other replicas hold
//! unspent. `mode: exact` asks Redis on every limited request.
//!
//! The RateLimit headers state the fleet's window as Redis last answered, plus the
//! requests this replica still holds. When Redis fails, a circuit breaker stops
//! asking it for a while and `on_unavailable` decides; the replica count of the
//! `local` fallback comes from heartbeats kept in Redis (the last count seen is
//! used while it is down). Quotas may be counted in Redis too (`quotas: true`):
//! each replica reads a subject's total before admitting its first request (so a
//! replica that just started gives no used-up quota back), adds its usage every
//! `quota_batch` and reads back the total.

pub mod backend;
pub mod breaker;
pub mod meter;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use backend::Target;
use backend::{Answer, BackendError, Connection, Scripts};
use breaker::{Breaker, Change};
use meter::{Meter, Operation, Outcome};

use super::buckets::{Bounded, MAX_WINDOWS};
use super::gcra::{Clock, Rate, Standing};
use super::{
    Exceeded, Limiter, OwnRates, Subject, Verdict, Window, Windows, key_of_name, rates_of,
};

/// How often a replica asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Leases: Redis is asked when a lease runs low, and on every request only
    /// near the limit.
    Lease,
    /// Every limited request asks Redis.
    Exact,
}

/// What a replica does while Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Enforce its share: each limit divided by the live replicas.
    Local,
    /// Let requests through (quotas still count).
    Open,
    /// Refuse with 503 `RATE_LIMIT_UNAVAILABLE`.
    Closed,
}

impl OnUnavailable {
    /// The config's word for it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OnUnavailable::Local => "local",
            OnUnavailable::Open => "open",
            OnUnavailable::Closed => "closed",
        }
    }
}

/// `limits.global`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSettings {
    /// Where Redis is.
    pub target: Target,
    /// Longest wait for one answer; past it the call counts as failed.
    pub timeout: Duration,
    /// Leases or every request.
    pub mode: Mode,
    /// Most requests one lease grants.
    pub max_lease: u32,
    /// Longest a lease is held before what is left goes back (at most a tenth of
    /// the subject's shortest window).
    pub lease_ttl: Duration,
    /// What happens while Redis cannot be asked.
    pub on_unavailable: OnUnavailable,
    /// Failures in a row that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one call probes.
    pub breaker_cooldown: Duration,
    /// How often a replica says it is alive.
    pub heartbeat: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Count quotas in Redis instead of the store.
    pub quotas: bool,
    /// How often quota usage is added to Redis.
    pub quota_batch: Duration,
}

/// Requests a replica holds for one subject, and where its windows stood at
/// Redis's last answer.
#[derive(Debug)]
struct Lease {
    /// The subject's keys, one per window.
    keys: Box<[String]>,
    /// The windows' rates.
    rates: Box<[Rate]>,
    /// Requests held and not spent.
    tokens: AtomicU32,
    /// When (clock ns) what is held goes back.
    expires: AtomicU64,
    /// How long a lease is held (ns).
    ttl: u64,
    /// The last grant: the lease is topped up below a quarter of it.
    last_grant: AtomicU32,
    /// A top-up (or a request's own ask) is on its way.
    refilling: AtomicBool,
    /// Wakes the requests that wait for it.
    answered: Notify,
    /// Each window's TAT on this replica's clock, as of Redis's last answer.
    tats: [AtomicU64; MAX_WINDOWS],
}

impl Lease {
    /// Spends one held request at `now`: the requests still held after it.
    fn take(&self, now: u64) -> Option<u32> {
        if now >= self.expires.load(Ordering::Acquire) {
            return None;
        }
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
            .ok()
            .map(|held| held - 1)
    }

    /// True when, as Redis last answered, a window has nothing left at `now`.
    fn is_empty(&self, now: u64) -> bool {
        self.rates
            .iter()
            .zip(&self.tats)
            .any(|(rate, tat)| rate.standing(tat.load(Ordering::Acquire), now).remaining == 0)
    }

    /// True when `left` is low enough to ask for more: half the last grant, so
    /// the top-up has the other half's time to arrive.
    fn wants_more(&self, left: u32) -> bool {
        left <= self.last_grant.load(Ordering::Relaxed) / 2
    }

    /// Takes in Redis's answer at `now`: the windows' standing, and the requests it
    /// granted beyond the one the caller spends (`spent`).
    fn record(&self, answer: &Answer, spent: u32, now: u64) -> u32 {
        for (tat, ahead) in self.tats.iter().zip(answer.ahead_us) {
            tat.store(
                now.saturating_add(ahead.saturating_mul(1000)),
                Ordering::Release,
            );
        }
        let granted = u32::try_from(answer.granted).unwrap_or(0);
        if granted > 0 {
            self.last_grant.store(granted, Ordering::Relaxed);
        }
        let extra = granted.saturating_sub(spent);
        if extra > 0 {
            self.tokens.fetch_add(extra, Ordering::AcqRel);
            self.expires
                .store(now.saturating_add(self.ttl), Ordering::Release);
        }
        self.tokens.load(Ordering::Acquire)
    }

    /// Writes the windows as the headers state them: the fleet's standing plus
    /// what this replica holds (`held`).
    fn windows(&self, held: u32, now: u64, windows: &mut Windows) {
        for ((slot, rate), tat) in windows.iter_mut().zip(&*self.rates).zip(&self.tats) {
            let standing = with_held(rate.standing(tat.load(Ordering::Acquire), now), held, rate);
            *slot = Some(Window::of_rate(rate, standing));
        }
    }
}

/// The ask for a lease in flight: when it ends, answered or not (or dropped with
/// its request), the lease may be asked for again and its waiters look at it.
struct Asking<'l>(&'l Lease);

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.0.refilling.store(false, Ordering::Release);
        self.0.answered.notify_waiters();
    }
}

/// `standing` with `held` more requests available, at most the limit.
fn with_held(standing: Standing, held: u32, rate: &Rate) -> Standing {
    let remaining = standing.remaining.saturating_add(held).min(rate.limit);
    Standing {
        remaining,
        next_in: if remaining > 0 { 0 } else { standing.next_in },
        ..standing
    }
}

/// The fleet-wide limiter of one process.
#[derive(Debug)]
pub struct Global {
    settings: GlobalSettings,
    /// The connection: set at once for one server, once connected for a cluster.
    conn: watch::Sender<Option<Arc<Connection>>>,
    scripts: Scripts,
    breaker: Breaker,
    leases: Bounded<Arc<Lease>>,
    /// Live replicas, as last counted (at least 1).
    live: AtomicU32,
    clock: Clock,
    meter: Meter,
    /// This replica's name in the heartbeat set.
    id: String,
}

/// Why the fleet-wide limiter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GlobalError {
    /// The URL or CA cannot be used.
    #[error("limits.global: {0}")]
    Backend(#[from] BackendError),
    /// Its meters could not be registered.
    #[error("limits.global metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// No random replica id.
    #[error("limits.global: no randomness for the replica id")]
    Random,
}

impl Global {
    /// Sets up the limiter (connecting lazily: Redis need not be up) and starts its
    /// tasks: heartbeats, lease expiry, and, with `quotas: true`, the quota batches
    /// of `limiter`'s counters.
    pub fn start(
        settings: GlobalSettings,
        limiter: Arc<Limiter>,
        metrics: &crate::metrics::Metrics,
        max_principals: usize,
    ) -> Result<(Arc<Global>, Vec<JoinHandle<()>>), GlobalError> {
        let conn = if settings.target.cluster {
            None
        } else {
            Some(Arc::new(settings.target.single(settings.timeout)?))
        };
        let id = crate::random::public_id("replica_").map_err(|_| GlobalError::Random)?;
        let breaker = Breaker::new(settings.breaker_failures, nanos(settings.breaker_cooldown));
        let meter = Meter::new(metrics)?;
        meter.replicas(1);
        let global = Arc::new(Global {
            conn: watch::Sender::new(conn),
            scripts: Scripts::default(),
            breaker,
            leases: Bounded::new(max_principals, 1, |_| Arc::new(empty_lease())),
            live: AtomicU32::new(1),
            clock: Clock::default(),
            meter,
            id,
            settings,
        });
        let mut tasks = Vec::new();
        if global.settings.target.cluster {
            tasks.push(tokio::spawn(global.clone().connect_cluster()));
        }
        tasks.push(tokio::spawn(global.clone().heartbeat_forever()));
        tasks.push(tokio::spawn(global.clone().expire_forever()));
        if global.settings.quotas {
            tasks.push(tokio::spawn(global.clone().quotas_forever(limiter)));
        }
        Ok((global, tasks))
    }

    /// The settings it runs with (a reload that changes them needs a restart).
    #[must_use]
    pub fn settings(&self) -> &GlobalSettings {
        &self.settings
    }

    /// True while Redis cannot be asked and `on_unavailable` is in force.
    #[must_use]
    pub fn unavailable(&self) -> bool {
        self.breaker.is_open()
    }

    /// The verdict on `subject` when it needs no round trip: a request held in its
    /// lease, the fallback while the breaker is open, or no rate windows at all.
    /// `None` when Redis must be asked ([`Global::check_remote`]).
    pub fn check_local<'a>(
        self: &Arc<Self>,
        limiter: &Limiter,
        subject: &Subject<'a>,
        unix: i64,
    ) -> Option<Verdict<'a>> {
        let now = self.clock.now();
        if self.quota_unread(limiter, subject, unix, now) {
            return None;
        }
        let rates = rates_of(subject.limits);
        if rates.is_empty() {
            return Some(limiter.check(subject, unix));
        }
        // While the breaker is open, requests already held are still spent (Redis
        // granted them), and only then does the fallback decide.
        let asking = self.breaker.remaining(now) == 0;
        let leasing = self.settings.mode == Mode::Lease;
        let key = lease_key(subject.key, rates);
        let mut windows = [None; MAX_WINDOWS + 1];
        let held = self
            .leases
            .with_own(
                key,
                || Arc::new(self.lease(subject.key, rates)),
                |lease| {
                    let Some(left) = lease.take(now) else {
                        // Redis said a window is empty until a time not yet come:
                        // refused here, without asking again (`mode: exact` asks
                        // every time).
                        let known = asking && leasing && lease.is_empty(now);
                        if known {
                            lease.windows(0, now, &mut windows);
                        }
                        return known.then_some(false);
                    };
                    if asking
                        && leasing
                        && lease.wants_more(left)
                        && !lease.refilling.swap(true, Ordering::AcqRel)
                    {
                        tokio::spawn(self.clone().refill(lease.clone()));
                    }
                    lease.windows(left, now, &mut windows);
                    Some(true)
                },
            )
            .flatten();
        match held {
            Some(true) => Some(self.rest(limiter, subject, unix, key, &windows)),
            Some(false) => Some(limiter.check_with(subject, unix, OwnRates::Refused(&windows))),
            None if !asking => Some(self.fallback(limiter, subject, unix, now)),
            None => None,
        }
    }

    /// The verdict on `subject` after asking Redis (see [`Global::check_local`]).
    pub async fn check_remote<'a>(
        self: &Arc<Self>,
        limiter: &Limiter,
        subject: &Subject<'a>,
        unix: i64,
    ) -> Verdict<'a> {
        if self.quota_unread(limiter, subject, unix, self.clock.now()) {
            self.read_quota(limiter, subject, unix).await;
            if let Some(verdict) = self.check_local(limiter, subject, unix) {
                return verdict;
            }
        }
        let rates = rates_of(subject.limits);
        if rates.is_empty() {
            // The quota could not be read: this replica's count decides.
            return limiter.check(subject, unix);
        }
        let key = lease_key(subject.key, rates);
        // A subject met at capacity has no lease to keep requests in: it asks for
        // one at a time.
        let own =
            self.leases
                .with_own(key, || Arc::new(self.lease(subject.key, rates)), Arc::clone);
        let wanted = match (&own, self.settings.mode) {
            (Some(_), Mode::Lease) => self.settings.max_lease,
            (None, _) | (_, Mode::Exact) => 1,
        };
        let lease = own.unwrap_or_else(|| Arc::new(self.lease(subject.key, rates)));
        let _asking = if wanted > 1 {
            // One request at a time asks for this subject's lease; the others wait
            // for its answer (or a top-up's), then spend from it.
            let answered = lease.answered.notified();
            if lease.refilling.swap(true, Ordering::AcqRel) {
                // Past the timeout, ask too: that answer was not coming.
                let _ = tokio::time::timeout(self.settings.timeout, answered).await;
                if let Some(verdict) = self.check_local(limiter, subject, unix) {
                    return verdict;
                }
                None
            } else {
                Some(Asking(&lease))
            }
        } else {
            None
        };
        let live = self.live.load(Ordering::Relaxed);
        let answer = self
            .call(Operation::Acquire, async |conn| {
                let n = i64::from(wanted);
                self.scripts
                    .lease(conn, &lease.keys, &lease.rates, n, live)
                    .await
            })
            .await;
        let now = self.clock.now();
        let Some(answer) = answer else {
            return self.fallback(limiter, subject, unix, now);
        };
        let held = lease.record(&answer, 1, now);
        let mut windows = [None; MAX_WINDOWS + 1];
        lease.windows(held, now, &mut windows);
        if answer.granted > 0 {
            return self.rest(limiter, subject, unix, key, &windows);
        }
        limiter.check_with(subject, unix, OwnRates::Refused(&windows))
    }

    /// True when `subject`'s quota is counted in Redis, this replica has not read
    /// its total yet in this period, and Redis may be asked.
    fn quota_unread(&self, limiter: &Limiter, subject: &Subject<'_>, unix: i64, now: u64) -> bool {
        self.settings.quotas
            && self.breaker.remaining(now) == 0
            && subject
                .limits
                .quota
                .as_ref()
                .is_some_and(|quota| limiter.quotas().unknown(subject, quota, unix))
    }

    /// Reads the fleet's total of `subject`'s quota from Redis (adding nothing),
    /// so that a replica that just started, or meets the subject for the first
    /// time, does not admit what the others already used.
    async fn read_quota(&self, limiter: &Limiter, subject: &Subject<'_>, unix: i64) {
        let Some(quota) = &subject.limits.quota else {
            return;
        };
        let period = super::quota::label(quota.period.word(unix));
        let (key, expire_at) = self.quota_key(&subject.name(), &period, unix);
        let total = self
            .call(Operation::Quota, async |conn| {
                self.scripts.quota(conn, &key, 0, expire_at).await
            })
            .await;
        if let Some(total) = total {
            limiter.quotas().learn(subject, quota, total, unix);
        }
    }

    /// The Redis key of `name`'s quota counter in `period` (a store label), and
    /// the unix time it expires at when written at `now`.
    fn quota_key(&self, name: &str, period: &str, now: i64) -> (String, i64) {
        // A day's counter lives two days, a month's 32: past its period only a
        // late flush of it could still come.
        let keep = if period.len() > 7 { 2 } else { 32 };
        let key = format!(
            "{}:q:{{{:016x}}}:{period}",
            self.settings.key_prefix,
            key_of_name(name),
        );
        (key, now + keep * 86_400)
    }

    /// The subject's other limits (the address budget, the quota), once the
    /// fleet-wide windows admitted it; a refusal there gives the request back to
    /// the lease.
    fn rest<'a>(
        &self,
        limiter: &Limiter,
        subject: &Subject<'a>,
        unix: i64,
        key: u64,
        windows: &Windows,
    ) -> Verdict<'a> {
        let verdict = limiter.check_with(subject, unix, OwnRates::Admitted(windows));
        if verdict.exceeded.is_some() {
            self.leases.get(key, |lease| {
                lease.tokens.fetch_add(1, Ordering::AcqRel);
            });
        }
        verdict
    }

    /// The verdict while Redis cannot be asked.
    fn fallback<'a>(
        &self,
        limiter: &Limiter,
        subject: &Subject<'a>,
        unix: i64,
        now: u64,
    ) -> Verdict<'a> {
        match self.settings.on_unavailable {
            OnUnavailable::Local => {
                let divisor = self.live.load(Ordering::Relaxed);
                limiter.check_with(subject, unix, OwnRates::Local { divisor })
            }
            OnUnavailable::Open => limiter.check_with(subject, unix, OwnRates::Skipped),
            OnUnavailable::Closed => Verdict {
                limits: subject.limits,
                windows: [None; MAX_WINDOWS + 1],
                exceeded: Some(Exceeded::Unavailable {
                    retry_after: self.breaker.remaining(now).div_ceil(1_000_000_000).max(1),
                }),
            },
        }
    }

    /// A new, empty lease of the subject `key` with windows `rates`.
    fn lease(&self, key: u64, rates: &[Rate]) -> Lease {
        let prefix = &self.settings.key_prefix;
        let shortest = rates.iter().map(|r| r.window).min().unwrap_or_default();
        Lease {
            keys: rates
                .iter()
                .map(|r| format!("{prefix}:rl:{{{key:016x}}}:{}", r.window.as_millis()))
                .collect(),
            rates: rates.into(),
            tokens: AtomicU32::new(0),
            expires: AtomicU64::new(0),
            ttl: nanos(self.settings.lease_ttl.min(shortest / 10)).max(1_000_000),
            last_grant: AtomicU32::new(0),
            refilling: AtomicBool::new(false),
            answered: Notify::new(),
            tats: Default::default(),
        }
    }

    /// Tops `lease` up in the background.
    async fn refill(self: Arc<Self>, lease: Arc<Lease>) {
        let live = self.live.load(Ordering::Relaxed);
        let wanted = i64::from(self.settings.max_lease);
        let answer = self
            .call(Operation::Refill, async |conn| {
                self.scripts
                    .lease(conn, &lease.keys, &lease.rates, wanted, live)
                    .await
            })
            .await;
        if let Some(answer) = answer {
            lease.record(&answer, 0, self.clock.now());
        }
        drop(Asking(&lease));
    }

    /// One call to Redis, within the timeout, through the breaker, metered. `None`
    /// when it was not made or failed.
    async fn call<T>(
        &self,
        operation: Operation,
        f: impl AsyncFnOnce(&mut Connection) -> Result<T, BackendError>,
    ) -> Option<T> {
        if !self.breaker.allows(self.clock.now()) {
            self.meter.call(operation, Outcome::Skipped, None);
            return None;
        }
        let started = Instant::now();
        let mut connected = self.conn.subscribe();
        let call = async {
            // A cluster still being connected is waited for, within the timeout.
            let conn = match connected.wait_for(Option::is_some).await {
                Ok(conn) => conn.clone(),
                Err(_) => None,
            };
            let Some(conn) = conn else {
                return Err(BackendError::NotConnected);
            };
            f(&mut Connection::clone(&conn)).await
        };
        let result = match tokio::time::timeout(self.settings.timeout, call).await {
            // The connection's own response timeout is the same as this one and
            // often fires first: a timeout all the same.
            Ok(Err(BackendError::Redis(error))) if error.is_timeout() => {
                Err(BackendError::Timeout(self.settings.timeout))
            }
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout(self.settings.timeout)),
        };
        let took = Some(started.elapsed());
        match result {
            Ok(value) => {
                self.meter.call(operation, Outcome::Ok, took);
                if self.breaker.success() == Change::Closed {
                    self.meter.fallback(false);
                    tracing::info!("limits.global: redis answers again; fleet-wide limits apply");
                }
                Some(value)
            }
            Err(error) => {
                let outcome = match error {
                    BackendError::Timeout(_) => Outcome::Timeout,
                    BackendError::Redis(_)
                    | BackendError::NotConnected
                    | BackendError::Malformed => Outcome::Error,
                };
                self.meter.call(operation, outcome, took);
                if self.breaker.failure(self.clock.now()) == Change::Opened {
                    self.meter.fallback(true);
                    tracing::warn!(
                        %error,
                        on_unavailable = self.settings.on_unavailable.name(),
                        cooldown = ?self.settings.breaker_cooldown,
                        "limits.global: redis is unavailable; the fallback applies until it answers"
                    );
                } else {
                    tracing::debug!(%error, operation = ?operation, "limits.global: a call to redis failed");
                }
                None
            }
        }
    }

    /// Connects to the cluster, retrying until it answers.
    async fn connect_cluster(self: Arc<Self>) {
        let mut wait = Duration::from_millis(100);
        for attempt in 0u32.. {
            let target = &self.settings.target;
            match target.connect_cluster(self.settings.timeout).await {
                Ok(conn) => {
                    self.conn.send_replace(Some(Arc::new(conn)));
                    if attempt > 0 {
                        tracing::info!(attempt, "limits.global: connected to the redis cluster");
                    }
                    return;
                }
                Err(error) if attempt == 0 => {
                    tracing::warn!(%error, "limits.global: cannot connect to the redis cluster yet; retrying");
                }
                Err(error) => {
                    tracing::debug!(%error, attempt, "limits.global: cannot connect to the redis cluster yet");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// Keeps this replica counted among the live ones, and the count up to date.
    async fn heartbeat_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.heartbeat(false).await;
        }
    }

    async fn heartbeat(&self, leaving: bool) {
        let set = format!("{}:replicas", self.settings.key_prefix);
        let period = self.settings.heartbeat;
        let live = self
            .call(Operation::Heartbeat, async |conn| {
                self.scripts
                    .heartbeat(conn, &set, &self.id, period, leaving)
                    .await
            })
            .await;
        if let Some(live) = live.filter(|_| !leaving) {
            let live = live.max(1);
            self.live.store(live, Ordering::Relaxed);
            self.meter.replicas(live);
        }
    }

    /// Gives back what expired leases hold, and forgets leases idle for long.
    async fn expire_forever(self: Arc<Self>) {
        let every =
            (self.settings.lease_ttl / 2).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.expire(false).await;
        }
    }

    /// Gives back what expired leases (or, at shutdown, all leases) hold.
    async fn expire(&self, all: bool) {
        let now = self.clock.now();
        let mut back = Vec::new();
        self.leases.for_each(|lease| {
            if (all || now >= lease.expires.load(Ordering::Acquire))
                && lease.tokens.load(Ordering::Acquire) > 0
            {
                let held = lease.tokens.swap(0, Ordering::AcqRel);
                if held > 0 {
                    back.push((lease.clone(), held));
                }
            }
        });
        let live = self.live.load(Ordering::Relaxed);
        for (lease, held) in back {
            self.call(Operation::GiveBack, async |conn| {
                let n = -i64::from(held);
                self.scripts
                    .lease(conn, &lease.keys, &lease.rates, n, live)
                    .await
            })
            .await;
        }
        // A lease nobody used for a minute past its expiry holds nothing worth
        // keeping: its windows are read again on the next request.
        let idle = now.saturating_sub(60_000_000_000);
        self.leases.retain(|lease| {
            lease.expires.load(Ordering::Acquire) > idle
                || lease.tokens.load(Ordering::Acquire) > 0
                || lease.refilling.load(Ordering::Acquire)
        });
    }

    /// Adds the quota usage counted here to Redis every `quota_batch`.
    async fn quotas_forever(self: Arc<Self>, limiter: Arc<Limiter>) {
        let mut tick = tokio::time::interval(self.settings.quota_batch);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush_quotas(&limiter).await;
        }
    }

    /// Adds every pending quota count to Redis, taking back each fleet total.
    pub async fn flush_quotas(&self, limiter: &Limiter) {
        let quotas = limiter.quotas();
        let now = crate::clock::unix_now();
        for usage in quotas.pending() {
            let (key, expire_at) = self.quota_key(&usage.name, &usage.period, now);
            let total = self
                .call(Operation::Quota, async |conn| {
                    self.scripts.quota(conn, &key, usage.delta, expire_at).await
                })
                .await;
            match total {
                Some(total) => quotas.flushed(&usage, total),
                None => return,
            }
        }
    }

    /// At shutdown: gives back every lease, adds the last quota usage and leaves
    /// the set of live replicas.
    pub async fn shutdown(&self, limiter: &Limiter) {
        self.expire(true).await;
        if self.settings.quotas {
            self.flush_quotas(limiter).await;
        }
        self.heartbeat(true).await;
    }
}

/// A lease that holds nothing (the bounded map's unused overflow value).
fn empty_lease() -> Lease {
    Lease {
        keys: Box::default(),
        rates: Box::default(),
        tokens: AtomicU32::new(0),
        expires: AtomicU64::new(0),
        ttl: 0,
        last_grant: AtomicU32::new(0),
        refilling: AtomicBool::new(false),
        answered: Notify::new(),
        tats: Default::default(),
    }
}

/// The key of a subject's lease: its own key mixed with its windows, so that a
/// subject whose limits change (a new tier) starts a new lease.
fn lease_key(subject: u64, rates: &[Rate]) -> u64 {
    rates.iter().fold(subject, |key, rate| {
        let window = u64::try_from(rate.window.as_millis()).unwrap_or(u64::MAX);
        (key ^ (u64::from(rate.limit) << 32 ^ window)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn lease(rates: &[Rate]) -> Lease {
        Lease {
            rates: rates.into(),
            ttl: 2 * SEC,
            ..empty_lease()
        }
    }

    fn answer(granted: i64, ahead_us: &[u64]) -> Answer {
        let mut answer = Answer {
            granted,
            ..Answer::default()
        };
        answer.ahead_us[..ahead_us.len()].copy_from_slice(ahead_us);
        answer
    }

    #[test]
    fn a_lease_spends_what_redis_granted_beyond_the_first_until_it_expires() {
        let minute = Rate::new(100, Duration::from_secs(60)).unwrap();
        let lease = lease(&[minute]);
        assert_eq!(lease.take(0), None, "an empty lease holds nothing");
        // Redis granted 16 (the caller spends one): 84 are left in the fleet's
        // window, whose TAT is 16 intervals of 600 ms ahead.
        let held = lease.record(&answer(16, &[16 * 600_000]), 1, 10 * SEC);
        assert_eq!(held, 15);
        let mut windows = [None; MAX_WINDOWS + 1];
        lease.windows(held, 10 * SEC, &mut windows);
        let window = windows[0].unwrap();
        assert_eq!((window.limit, window.remaining), (100, 84 + 15));
        assert_eq!(lease.take(10 * SEC), Some(14));
        assert!(!lease.wants_more(14));
        for _ in 0..10 {
            lease.take(10 * SEC).unwrap();
        }
        assert!(lease.wants_more(4), "below a quarter of the last grant");
        // Past its expiry nothing more is spent: the rest goes back to Redis.
        assert_eq!(lease.take(12 * SEC), None);
        assert_eq!(lease.tokens.load(Ordering::Acquire), 4);
    }

    #[test]
    fn a_refusal_is_remembered_until_the_window_gives_one_back() {
        let minute = Rate::new(100, Duration::from_secs(60)).unwrap();
        let lease = lease(&[minute]);
        assert!(!lease.is_empty(0), "nothing known: ask");
        // Redis refused: the TAT is 300 ms past what admits one more (99 intervals
        // of 600 ms).
        lease.record(&answer(0, &[59_700_000]), 1, 0);
        assert_eq!(lease.tokens.load(Ordering::Acquire), 0);
        assert!(lease.is_empty(0));
        assert!(lease.is_empty(SEC / 4));
        let mut windows = [None; MAX_WINDOWS + 1];
        lease.windows(0, 0, &mut windows);
        let refused = windows[0].unwrap();
        assert_eq!((refused.remaining, refused.reset_secs), (0, 1));
        // 300 ms later one request is due again: ask Redis.
        assert!(!lease.is_empty(300_000_000));
    }

    #[test]
    fn the_lease_key_changes_with_the_limits() {
        let a = Rate::new(100, Duration::from_secs(60)).unwrap();
        let b = Rate::new(300, Duration::from_secs(60)).unwrap();
        let c = Rate::new(100, Duration::from_secs(3600)).unwrap();
        assert_eq!(lease_key(7, &[a]), lease_key(7, &[a]));
        assert_ne!(lease_key(7, &[a]), lease_key(7, &[b]));
        assert_ne!(lease_key(7, &[a]), lease_key(7, &[c]));
        assert_ne!(lease_key(7, &[a]), lease_key(8, &[a]));
        assert_ne!(lease_key(7, &[a]), lease_key(7, &[a, c]));
    }

    #[test]
    fn what_a_replica_holds_counts_as_remaining_up_to_the_limit() {
        let rate = Rate::new(10, Duration::from_secs(10)).unwrap();
        let empty = rate.standing(20 * SEC, 0);
        assert_eq!(empty.remaining, 0);
        let held = with_held(empty, 3, &rate);
        assert_eq!((held.remaining, held.next_in), (3, 0));
        assert_eq!(with_held(rate.standing(0, 0), 5, &rate).remaining, 10);
    }
}
