//! Rate limits and quotas: who a request counts against, and whether it may pass.
//!
//! ```text
//! principal ─► subject (hash, limit set) ─► rate windows (GCRA) ─► quota ─► verdict
//!                                              429 + Retry-After     402 (x402)
//! ```
//!
//! A request counts against its *subject*: the API key, the token subject, the
//! anonymous identifier, or, without any of these, the client address (taken from
//! `X-Forwarded-For` only when the peer is a configured trusted proxy). The subject's
//! limit set is its tier's, or its key's own. Rate windows are lock-free GCRA
//! buckets ([`gcra`]) in a bounded map ([`buckets`]); quotas are per-day or
//! per-month counters ([`quota`]) flushed to the store in batches. [`headers`]
//! writes what the verdict says onto every response.
//!
//! An anonymous identifier is whatever the caller chose to send, so a client that
//! makes up a new one per request would get a fresh allowance each time. The
//! identifiers seen from one address therefore also share an *address budget*
//! (`limits.anonymous_per_address` times the anonymous tier's windows), taken in
//! the same all-or-nothing way as the identifier's own windows.

pub mod buckets;
pub mod gcra;
pub mod global;
pub mod headers;
pub mod quota;
pub mod x402;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;

use buckets::{Buckets, MAX_WINDOWS};
use gcra::{Clock, Rate, Standing};
use quota::{Quota, QuotaStanding, Quotas};

/// What a tier (or a key of its own) is allowed: rate windows and a quota.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitSet {
    /// Names the set in structured headers (the tier or key it belongs to).
    pub name: String,
    /// Rate windows, shortest first; at most [`MAX_WINDOWS`].
    pub rates: Vec<Rate>,
    /// Requests per day or month.
    pub quota: Option<Quota>,
    /// `RateLimit-Policy` in draft-06 syntax.
    pub draft_policy: Option<http::HeaderValue>,
    /// `RateLimit-Policy` in structured syntax.
    pub structured_policy: Option<http::HeaderValue>,
    /// The structured item name of each window, rates then quota.
    pub window_names: Vec<String>,
    /// The limit of each window as a header value, rates then quota: built once,
    /// cloned onto every response.
    pub limit_values: Vec<(u64, http::HeaderValue)>,
}

impl LimitSet {
    /// The set `name`: `rates` (at most [`MAX_WINDOWS`] are used) and `quota`.
    #[must_use]
    pub fn new(name: &str, mut rates: Vec<Rate>, quota: Option<Quota>) -> LimitSet {
        rates.truncate(MAX_WINDOWS);
        let mut windows: Vec<(u64, u64)> = rates
            .iter()
            .map(|r| (u64::from(r.limit), r.window_secs()))
            .collect();
        let mut window_names: Vec<String> = rates
            .iter()
            .map(|r| format!("{name}-{}s", r.window_secs()))
            .collect();
        if let Some(quota) = &quota {
            windows.push((quota.limit, quota.period.secs()));
            window_names.push(match quota.period {
                quota::Period::Day => format!("{name}-day"),
                quota::Period::Month => format!("{name}-month"),
            });
        }
        LimitSet {
            name: name.to_owned(),
            limit_values: windows
                .iter()
                .map(|&(limit, _)| (limit, headers::number(limit)))
                .collect(),
            draft_policy: headers::draft_policy(&windows),
            structured_policy: headers::structured_policy(&window_names, &windows),
            window_names,
            rates,
            quota,
        }
    }

    /// The set of a key with limits of its own: `rates` and `quota` where given,
    /// its tier's (`base`) where not.
    #[must_use]
    pub fn with_own(
        base: &LimitSet,
        name: &str,
        rates: Option<Vec<Rate>>,
        quota: Option<Quota>,
    ) -> LimitSet {
        LimitSet::new(
            name,
            rates.unwrap_or_else(|| base.rates.clone()),
            quota.or(base.quota),
        )
    }

    /// True when the set limits nothing.
    #[must_use]
    pub fn is_unlimited(&self) -> bool {
        self.rates.is_empty() && self.quota.is_none()
    }

    /// The budget one address shares among all the anonymous identifiers it sends:
    /// `base`'s rate windows, each `factor` times as large, and no quota. `None`
    /// when `factor` is 0 (no budget) or `base` has no rate windows.
    #[must_use]
    pub fn per_address(base: &LimitSet, factor: u32) -> Option<LimitSet> {
        if factor == 0 || base.rates.is_empty() {
            return None;
        }
        let rates = base
            .rates
            .iter()
            .filter_map(|r| Rate::new(r.limit.saturating_mul(factor), r.window))
            .collect();
        Some(LimitSet::new(
            &format!("{}-per-address", base.name),
            rates,
            None,
        ))
    }
}

/// `10/s`, `300/min`, `100/10s`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let hint = || format!("`{text}` is not a rate; write e.g. `10/s`, `300/min` or `100/10s`");
    let (count, window) = text.split_once('/').ok_or_else(hint)?;
    let count: u32 = count.trim().parse().map_err(|_| hint())?;
    let window = match window.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => humantime::parse_duration(other).map_err(|_| hint())?,
    };
    if window < Duration::from_secs(1) || window > Duration::from_secs(86_400) {
        return Err(format!(
            "`{text}`: a rate window is between 1s and 1 day; use `quota` for longer periods"
        ));
    }
    Rate::new(count, window).ok_or_else(|| format!("`{text}`: a rate allows at least one request"))
}

/// Rate windows from their texts, shortest first. Every malformed entry (with its
/// index), a window given twice, and more than [`MAX_WINDOWS`] windows are errors.
pub fn parse_rates<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Rate>, Vec<(Option<usize>, String)>> {
    let mut rates: Vec<Rate> = Vec::new();
    let mut errors = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let text = text.as_ref();
        match parse_rate(text) {
            Ok(rate) if rates.iter().any(|r| r.window == rate.window) => {
                errors.push((Some(i), format!("two rates with the same window `{text}`")));
            }
            Ok(rate) => rates.push(rate),
            Err(message) => errors.push((Some(i), message)),
        }
    }
    if rates.len() > MAX_WINDOWS {
        errors.push((None, format!("at most {MAX_WINDOWS} rates per tier or key")));
    }
    rates.sort_by_key(|r| r.window);
    if errors.is_empty() {
        Ok(rates)
    } else {
        Err(errors)
    }
}

/// `5000/month`, `1000/day`.
pub fn parse_quota(text: &str) -> Result<Quota, String> {
    let hint = || format!("`{text}` is not a quota; write e.g. `1000/day` or `5000/month`");
    let (count, period) = text.split_once('/').ok_or_else(hint)?;
    let limit: u64 = count.trim().parse().map_err(|_| hint())?;
    let period = match period.trim() {
        "d" | "day" => quota::Period::Day,
        "month" => quota::Period::Month,
        _ => return Err(hint()),
    };
    if limit == 0 {
        return Err(format!("`{text}`: a quota allows at least one request"));
    }
    Ok(Quota { limit, period })
}

/// The limits a stored key declares of its own (JSON
/// `{"rate_limits": [...], "quota": "..."}`), over those of its tier `base`.
pub fn stored_limits(id: &str, text: &str, base: &LimitSet) -> Result<LimitSet, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        rate_limits: Option<Vec<String>>,
        quota: Option<String>,
    }
    let own: Own =
        serde_json::from_str(text).map_err(|e| format!("limits are not valid JSON: {e}"))?;
    let rates = match own.rate_limits {
        Some(texts) => Some(parse_rates(&texts).map_err(|errors| {
            errors
                .into_iter()
                .map(|(_, message)| message)
                .collect::<Vec<_>>()
                .join("; ")
        })?),
        None => None,
    };
    let quota = own.quota.as_deref().map(parse_quota).transpose()?;
    Ok(LimitSet::with_own(base, id, rates, quota))
}

/// The `limits:` section.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Most principals tracked at once (rate buckets, and quota counters each).
    pub max_principals: usize,
    /// Which header families responses carry.
    pub headers: headers::Styles,
    /// How often quota usage is written to (and read back from) the store.
    pub quota_flush: Duration,
    /// x402 payment past a used-up quota, when configured.
    pub payments: Option<x402::Payments>,
    /// What every anonymous identifier seen from one address shares (see
    /// [`LimitSet::per_address`]); `None` when it is off.
    pub anonymous_budget: Option<LimitSet>,
    /// Fleet-wide limits on Redis, when configured.
    pub global: Option<global::GlobalSettings>,
}

/// How many identifiers' worth of the anonymous tier's windows one address may use
/// when nothing is configured: a few honest agents behind one NAT each get their own
/// allowance, while a client rotating identifiers gets at most four allowances.
pub const ANONYMOUS_PER_ADDRESS: u32 = 4;

impl Default for LimitSettings {
    fn default() -> LimitSettings {
        LimitSettings {
            trusted_proxies: Vec::new(),
            max_principals: 100_000,
            headers: headers::Styles::default(),
            quota_flush: Duration::from_secs(5),
            payments: None,
            anonymous_budget: None,
            global: None,
        }
    }
}

impl LimitSettings {
    /// The address a request comes from: the peer, or, when the peer is a trusted
    /// proxy, the rightmost `X-Forwarded-For` entry that is not itself one.
    #[must_use]
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers
            .get_all(http::header::HeaderName::from_static("x-forwarded-for"))
            .iter()
            .rev()
        {
            let Ok(text) = value.to_str() else {
                return client;
            };
            for hop in text.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(address) => {
                        client = address;
                        if !self.is_trusted(address) {
                            return address;
                        }
                    }
                    Err(_) => return client,
                }
            }
        }
        client
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&address))
    }
}

/// Who a request counts against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// A stable 64-bit hash of `name`: the key of its bucket and counter.
    pub key: u64,
    /// Its limits.
    pub limits: &'a LimitSet,
    who: Who<'a>,
    /// The budget it shares with others, checked after its own windows.
    shared: Option<Shared<'a>>,
}

/// A rate budget a subject shares with others: an anonymous identifier's, with
/// every identifier sent from the same address.
#[derive(Debug, Clone, Copy)]
struct Shared<'a> {
    /// The key of the shared bucket.
    key: u64,
    /// Its rate windows (a quota, if any, is not used).
    limits: &'a LimitSet,
}

#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    Named(&'a [u8]),
    Anonymous(u64),
    Address(IpAddr),
}

impl Subject<'_> {
    /// The subject's stable name, as the store records its quota usage:
    /// `key:<id>`, a token's subject, `anonymous:<hash>` or `addr:<ip>`.
    #[must_use]
    pub fn name(&self) -> String {
        match self.who {
            Who::Named(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Who::Anonymous(id) => format!("anonymous:{id:016x}"),
            Who::Address(ip) => format!("addr:{ip}"),
        }
    }
}

/// A fixed-seed hash: the same name hashes the same in every replica, so the store
/// and the in-memory tables agree on keys.
fn stable_hash(kind: u8, bytes: &[u8]) -> u64 {
    let state = foldhash::quality::FixedState::with_seed(0x6175_7468_6d64_0001 ^ u64::from(kind));
    state.hash_one(bytes)
}

/// The hash of a subject named `name` (as [`Subject::name`] spells it).
#[must_use]
pub fn key_of_name(name: &str) -> u64 {
    if let Some(hex) = name.strip_prefix("anonymous:") {
        if let Ok(id) = u64::from_str_radix(hex, 16) {
            return stable_hash(1, &id.to_le_bytes());
        }
    }
    if let Some(ip) = name
        .strip_prefix("addr:")
        .and_then(|a| a.parse::<IpAddr>().ok())
    {
        return address_key(ip);
    }
    stable_hash(0, name.as_bytes())
}

fn address_key(ip: IpAddr) -> u64 {
    address_hash(2, ip)
}

/// The key of the budget anonymous identifiers from `ip` share: apart from the
/// address's own bucket, whose windows are the tier's and not the budget's.
fn budget_key(ip: IpAddr) -> u64 {
    address_hash(3, ip)
}

fn address_hash(kind: u8, ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => stable_hash(kind, &v4.octets()),
        IpAddr::V6(v6) => stable_hash(kind, &v6.octets()),
    }
}

impl<'a> Subject<'a> {
    /// A subject known by a stable name: `key:<id>`, or a token's subject.
    #[must_use]
    pub fn named(name: &'a [u8], limits: &'a LimitSet) -> Subject<'a> {
        Subject {
            key: stable_hash(0, name),
            limits,
            who: Who::Named(name),
            shared: None,
        }
    }

    /// An anonymous agent, by the digest of the identifier it sent.
    #[must_use]
    pub fn anonymous(id: u64, limits: &'a LimitSet) -> Subject<'a> {
        Subject {
            key: stable_hash(1, &id.to_le_bytes()),
            limits,
            who: Who::Anonymous(id),
            shared: None,
        }
    }

    /// A client known only by its address.
    #[must_use]
    pub fn address(address: IpAddr, limits: &'a LimitSet) -> Subject<'a> {
        Subject {
            key: address_key(address),
            limits,
            who: Who::Address(address.to_canonical()),
            shared: None,
        }
    }

    /// The same subject, and when it is an anonymous identifier, also counted
    /// against `budget`, which every identifier from `address` shares. Other
    /// subjects are returned as they are: a key or token is not made up per request,
    /// and a subject without an identifier is already the address.
    #[must_use]
    pub fn sharing_address_budget(
        self,
        address: IpAddr,
        budget: Option<&'a LimitSet>,
    ) -> Subject<'a> {
        match (self.who, budget) {
            (Who::Anonymous(_), Some(limits)) => Subject {
                shared: Some(Shared {
                    key: budget_key(address),
                    limits,
                }),
                ..self
            },
            _ => self,
        }
    }
}

/// Where a request stands against one limit, for the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Requests allowed per window.
    pub limit: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Requests left.
    pub remaining: u64,
    /// Seconds until the limit is fully available again (or, when `remaining` is
    /// 0, until one more request is).
    pub reset_secs: u64,
}

impl Window {
    /// Where `standing` leaves the window `rate`.
    #[must_use]
    pub fn of_rate(rate: &Rate, standing: Standing) -> Window {
        Window {
            limit: u64::from(rate.limit),
            window_secs: rate.window_secs(),
            remaining: u64::from(standing.remaining),
            reset_secs: if standing.remaining == 0 {
                standing.retry_after_secs()
            } else {
                standing.reset_secs()
            },
        }
    }
}

/// Where a request stands against every limit of its set.
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    /// The set.
    pub limits: &'a LimitSet,
    /// One entry per rate window, then the quota's.
    pub windows: [Option<Window>; MAX_WINDOWS + 1],
    /// Why the request may not pass; `None` when it may.
    pub exceeded: Option<Exceeded>,
}

impl Verdict<'_> {
    /// The window with the fewest requests left (the one the single-valued
    /// headers report); ties go to the later reset.
    #[must_use]
    pub fn tightest(&self) -> Option<&Window> {
        self.windows.iter().flatten().min_by(|a, b| {
            a.remaining
                .cmp(&b.remaining)
                .then(b.reset_secs.cmp(&a.reset_secs))
        })
    }
}

/// Why a request may not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// A rate window is empty.
    Rate {
        /// Seconds until every empty window admits a request again.
        retry_after: u64,
    },
    /// The quota is used up until the period ends (or a payment is made).
    Quota,
    /// The fleet-wide limits could not be asked and `on_unavailable: closed`
    /// refuses rather than guess.
    Unavailable {
        /// Seconds until they are asked again.
        retry_after: u64,
    },
}

/// Where a request stands against each rate window, then the quota.
pub type Windows = [Option<Window>; MAX_WINDOWS + 1];

/// How [`Limiter::check_with`] takes a subject's own rate windows.
#[derive(Debug, Clone, Copy)]
pub enum OwnRates<'w> {
    /// From this replica's buckets, each window's limit divided by `divisor`
    /// (1 for the limit as configured; the replica count when a fleet-wide limit
    /// falls back to each replica's share).
    Local {
        /// What each limit is divided by (at least 1).
        divisor: u32,
    },
    /// Already admitted elsewhere (the fleet-wide limiter); the windows stand as
    /// given.
    Admitted(&'w Windows),
    /// Refused elsewhere (the fleet-wide limiter); the windows stand as given.
    Refused(&'w Windows),
    /// Not checked at all.
    Skipped,
}

/// The limiter: every subject's buckets and quota counters.
#[derive(Debug)]
pub struct Limiter {
    clock: Clock,
    buckets: Buckets,
    quotas: Quotas,
}

impl Limiter {
    /// A limiter tracking at most `max_principals` subjects.
    #[must_use]
    pub fn new(max_principals: usize) -> Limiter {
        Limiter {
            clock: Clock::default(),
            buckets: Buckets::buckets(max_principals),
            quotas: Quotas::new(max_principals),
        }
    }

    /// The quota counters (for the store flusher).
    #[must_use]
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Rate buckets currently tracked.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Counts one request against `subject`: every rate window, then those of the
    /// budget it shares, if any, then the quota at unix time `unix_now`. Nothing is
    /// taken unless everything admits it. The verdict reports the subject's own
    /// limits, or the shared budget's when that refused or has fewer requests left.
    pub fn check<'a>(&self, subject: &Subject<'a>, unix_now: i64) -> Verdict<'a> {
        self.check_with(subject, unix_now, OwnRates::Local { divisor: 1 })
    }

    /// [`Limiter::check`], with the subject's own rate windows taken as `own` says.
    /// When they were [`OwnRates::Admitted`] elsewhere and a later check refuses,
    /// the caller gives that request back.
    pub fn check_with<'a>(
        &self,
        subject: &Subject<'a>,
        unix_now: i64,
        own: OwnRates<'_>,
    ) -> Verdict<'a> {
        let limits = subject.limits;
        let mut verdict = Verdict {
            limits,
            windows: [None; MAX_WINDOWS + 1],
            exceeded: None,
        };
        if limits.is_unlimited() {
            return verdict;
        }
        let own_rates = rates_of(limits);
        // A replica's share of a fleet-wide limit, computed on the stack (and only
        // then).
        let shares: [Rate; MAX_WINDOWS];
        let rates: &[Rate] = match own {
            OwnRates::Local { divisor } if divisor > 1 => {
                shares = std::array::from_fn(|i| {
                    own_rates
                        .get(i)
                        .map_or(Rate::ONE_PER_SECOND, |rate| rate.divided(divisor))
                });
                &shares[..own_rates.len()]
            }
            OwnRates::Local { .. } => own_rates,
            OwnRates::Admitted(windows) | OwnRates::Refused(windows) => {
                verdict.windows = *windows;
                &[]
            }
            OwnRates::Skipped => &[],
        };
        // Read only when a bucket here is taken from: a decision made elsewhere,
        // without an address budget, needs no clock.
        let now = if rates.is_empty() && subject.shared.is_none() {
            0
        } else {
            self.clock.now()
        };
        let refused = self
            .take_rates(subject.key, rates, now, &mut verdict.windows)
            .is_some();
        if refused || matches!(own, OwnRates::Refused(_)) {
            if let Some(quota) = &limits.quota {
                let standing = self.quotas.peek(subject, quota, unix_now);
                verdict.windows[MAX_WINDOWS] = Some(standing.window(quota));
            }
            verdict.exceeded = Some(Exceeded::Rate {
                retry_after: retry_after(&verdict.windows),
            });
            return verdict;
        }
        let mut shared = None;
        if let Some(budget) = &subject.shared {
            let mut windows = [None; MAX_WINDOWS + 1];
            let budget_rates = rates_of(budget.limits);
            if self
                .take_rates(budget.key, budget_rates, now, &mut windows)
                .is_some()
            {
                // The address has used its budget: the identifier's own windows
                // give back what they took, and the answer tells the budget.
                self.give_back(subject.key, rates, now, &mut verdict.windows);
                return Verdict {
                    limits: budget.limits,
                    exceeded: Some(Exceeded::Rate {
                        retry_after: retry_after(&windows),
                    }),
                    windows,
                };
            }
            shared = Some((budget, budget_rates, windows));
        }
        if let Some(quota) = &limits.quota {
            let standing = self.quotas.take(subject, quota, unix_now);
            verdict.windows[MAX_WINDOWS] = Some(standing.window(quota));
            if let QuotaStanding::Exhausted { .. } = standing {
                // The request does not pass: give the rate windows back their token.
                self.give_back(subject.key, rates, now, &mut verdict.windows);
                if let Some((budget, budget_rates, mut windows)) = shared {
                    self.give_back(budget.key, budget_rates, now, &mut windows);
                }
                verdict.exceeded = Some(Exceeded::Quota);
                return verdict;
            }
        }
        if let Some((budget, _, windows)) = shared {
            let left =
                |windows: &[Option<Window>]| windows.iter().flatten().map(|w| w.remaining).min();
            if left(&windows) < left(&verdict.windows) {
                return Verdict {
                    limits: budget.limits,
                    windows,
                    exceeded: None,
                };
            }
        }
        verdict
    }

    /// Takes one request from every window `rates` of the bucket `key`, noting in
    /// `windows` where each stands. Returns the index of the window that refused,
    /// having given back what the earlier ones took; `None` when all admitted.
    fn take_rates(
        &self,
        key: u64,
        rates: &[Rate],
        now: u64,
        windows: &mut [Option<Window>; MAX_WINDOWS + 1],
    ) -> Option<usize> {
        if rates.is_empty() {
            return None;
        }
        self.buckets.bucket(key, |bucket| {
            let mut refused = None;
            for (i, rate) in rates.iter().enumerate() {
                match rate.take(&bucket.0[i], now) {
                    Ok(standing) => windows[i] = Some(Window::of_rate(rate, standing)),
                    Err(standing) => {
                        windows[i] = Some(Window::of_rate(rate, standing));
                        refused = Some(i);
                        break;
                    }
                }
            }
            if let Some(at) = refused {
                // Give back what the earlier windows took, and report where the later
                // ones stand (any of them may refuse too).
                for (rate, word) in rates[..at].iter().zip(&bucket.0) {
                    rate.give_back(word);
                }
                for (i, rate) in rates.iter().enumerate() {
                    if i == at {
                        continue;
                    }
                    let standing = rate.standing(bucket.0[i].load(Ordering::Relaxed), now);
                    windows[i] = Some(Window::of_rate(rate, standing));
                }
            }
            refused
        })
    }

    /// Gives back the request [`Limiter::take_rates`] took from every window of
    /// the bucket `key` (a later check refused it), noting where each stands.
    fn give_back(
        &self,
        key: u64,
        rates: &[Rate],
        now: u64,
        windows: &mut [Option<Window>; MAX_WINDOWS + 1],
    ) {
        if rates.is_empty() {
            return;
        }
        self.buckets.bucket(key, |bucket| {
            for (i, (rate, word)) in rates.iter().zip(&bucket.0).enumerate() {
                rate.give_back(word);
                let standing = rate.standing(word.load(Ordering::Relaxed), now);
                windows[i] = Some(Window::of_rate(rate, standing));
            }
        });
    }

    /// Drops the buckets that hold no state (full again); returns how many are left.
    pub fn sweep(&self, unix_now: i64) -> usize {
        self.quotas.sweep(unix_now);
        self.buckets.sweep(self.clock.now())
    }

    /// True when a subject found the bucket map full since the last sweep.
    #[must_use]
    pub fn wants_sweep(&self) -> bool {
        self.buckets.wants_sweep()
    }
}

/// The rate windows of `limits` the buckets hold.
pub fn rates_of(limits: &LimitSet) -> &[Rate] {
    &limits.rates[..limits.rates.len().min(MAX_WINDOWS)]
}

/// The `Retry-After` of a refusal: when every empty rate window admits again.
pub fn retry_after(windows: &[Option<Window>; MAX_WINDOWS + 1]) -> u64 {
    windows[..MAX_WINDOWS]
        .iter()
        .flatten()
        .filter(|w| w.remaining == 0)
        .map(|w| w.reset_secs)
        .max()
        .unwrap_or(1)
}

/// A single rate limit per client address, for the proxy's own endpoints
/// (registration, anonymous tokens).
#[derive(Debug)]
pub struct AddressLimiter {
    /// The rate as configured, to tell whether a reloaded config changed it.
    burst: u32,
    period: Duration,
    rate: Rate,
    clock: Clock,
    buckets: Buckets,
    /// When the map was last swept (clock nanoseconds): a full map is swept at
    /// most once a second, so a flood cannot make every request pay for a sweep.
    swept_at: std::sync::atomic::AtomicU64,
}

/// Addresses an [`AddressLimiter`] tracks.
const ADDRESS_CAPACITY: usize = 100_000;

impl AddressLimiter {
    /// `burst` requests per `period`; `None` when `burst` is 0 (no limit).
    #[must_use]
    pub fn new(burst: u32, period: Duration) -> Option<AddressLimiter> {
        Some(AddressLimiter {
            burst,
            period,
            rate: Rate::new(burst, period)?,
            clock: Clock::default(),
            buckets: Buckets::buckets(ADDRESS_CAPACITY),
            swept_at: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// `burst` requests per `period`, continuing `previous` (the limiter of the
    /// config being replaced) when its rate is the same, so a reload does not give
    /// every client a fresh allowance.
    #[must_use]
    pub fn carried(
        previous: Option<&Arc<AddressLimiter>>,
        burst: u32,
        period: Duration,
    ) -> Option<Arc<AddressLimiter>> {
        match previous {
            Some(old) if old.burst == burst && old.period == period => Some(old.clone()),
            _ => AddressLimiter::new(burst, period).map(Arc::new),
        }
    }

    /// Takes one request from `address`'s bucket, or says how many seconds until
    /// one is available.
    pub fn check(&self, address: IpAddr) -> Result<(), u32> {
        let now = self.clock.now();
        let last = self.swept_at.load(Ordering::Relaxed);
        if self.buckets.wants_sweep()
            && now.saturating_sub(last) >= 1_000_000_000
            && self
                .swept_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.buckets.sweep(now);
        }
        self.buckets
            .bucket(address_key(address), |bucket| {
                self.rate.take(&bucket.0[0], now)
            })
            .map(drop)
            .map_err(|s| u32::try_from(s.retry_after_secs()).unwrap_or(u32::MAX))
    }

    /// Returns the request [`AddressLimiter::check`] took from `address`: where only
    /// failures should count (password sign-ins), a success gives its attempt back.
    pub fn give_back(&self, address: IpAddr) {
        self.buckets.bucket(address_key(address), |bucket| {
            self.rate.give_back(&bucket.0[0]);
        });
    }
}

/// Keeps a limiter's map small: sweeps idle buckets every `every`, and sooner when
/// the map fills. Runs until aborted.
pub async fn sweep_forever(limiter: Arc<Limiter>, every: Duration) {
    let mut tick = tokio::time::interval(every.min(Duration::from_secs(1)));
    let mut since = Duration::ZERO;
    loop {
        tick.tick().await;
        since += every.min(Duration::from_secs(1));
        if since >= every || limiter.wants_sweep() {
            since = Duration::ZERO;
            let left = limiter.sweep(crate::clock::unix_now());
            tracing::debug!(left, "swept idle rate buckets");
        }
    }
}

#[cfg(test)]
mod tests;
