//! Criterion micro-benchmarks of the rate limiter's admission decision, in
//! nanoseconds per decision: one window, two windows and a quota, a refusal, the
//! same subject hammered from 2 and 4 threads at once (contended compare-and-swap
//! on one bucket; on a 2-core machine 4 threads also oversubscribe), 50,000
//! distinct subjects in turn (bucket map probes that miss the caches), and writing
//! the `RateLimit` headers of a verdict; and the fleet-wide limiter far from its
//! limit, against a real Redis.
//!
//! `cargo bench --bench limits`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "benchmark setup: a failed step should stop the run loudly"
)]
#![allow(
    clippy::disallowed_types,
    reason = "the contended benchmark times itself with std's clock, as criterion does; \
              no Tokio runtime or paused clock is involved"
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use authmd_proxy::credentials::{AnonymousId, Principal};
use authmd_proxy::limits::gcra::Rate;
use authmd_proxy::limits::global::{Global, GlobalSettings, Mode, OnUnavailable, Target};
use authmd_proxy::limits::headers::{self, Styles};
use authmd_proxy::limits::quota::{Period, Quota};
use authmd_proxy::limits::{LimitSet, Limiter, Subject};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::HeaderMap;

/// A fixed unix time (2026-11-23 10:00 UTC), so the quota period never rolls mid-run.
const NOW: i64 = 1_795_428_000;
const CAPACITY: usize = 100_000;
const DISTINCT: u32 = 50_000;
const ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn rate(limit: u32, window: Duration) -> Rate {
    Rate::new(limit, window).expect("a non-zero rate")
}

/// One window so wide that nothing the benchmark does can empty it.
fn one_window() -> LimitSet {
    LimitSet::new("bench", vec![rate(1_000_000_000, HOUR)], None)
}

fn two_windows_and_quota() -> LimitSet {
    LimitSet::new(
        "bench",
        vec![rate(1_000_000_000, MINUTE), rate(1_000_000_000, HOUR)],
        Some(Quota {
            limit: u64::MAX / 2,
            period: Period::Day,
        }),
    )
}

fn anonymous() -> Principal {
    Principal::Anonymous(Some(AnonymousId(0x5eed_0000_0000_0001)))
}

/// Times `iters` checks of `subject` on this thread while `threads - 1` others
/// check the same subject as fast as they can.
fn contended(limits: &LimitSet, principal: &Principal, threads: usize, iters: u64) -> Duration {
    // A fresh limiter per sample: however many requests the other threads make,
    // the bucket never runs dry.
    let limiter = Limiter::new(CAPACITY);
    let subject = principal.subject(ADDRESS, limits);
    let stop = AtomicBool::new(false);
    let ready = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| {
                ready.fetch_add(1, Ordering::Release);
                while !stop.load(Ordering::Relaxed) {
                    black_box(limiter.check(black_box(&subject), NOW));
                }
            });
        }
        // Measure only once every other thread is hammering.
        while ready.load(Ordering::Acquire) < threads - 1 {
            thread::yield_now();
        }
        let start = Instant::now();
        let mut admitted = true;
        for _ in 0..iters {
            let verdict = limiter.check(black_box(&subject), NOW);
            admitted = verdict.exceeded.is_none();
            black_box(&verdict);
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        assert!(admitted, "the contended bucket ran dry");
        elapsed
    })
}

fn checks(c: &mut Criterion) {
    let principal = anonymous();
    let one = one_window();
    let two = two_windows_and_quota();
    let mut group = c.benchmark_group("limits");

    {
        let limiter = Limiter::new(CAPACITY);
        let subject = principal.subject(ADDRESS, &one);
        group.bench_function("check_uncontended", |b| {
            b.iter(|| black_box(limiter.check(black_box(&subject), NOW)))
        });
        assert!(limiter.check(&subject, NOW).exceeded.is_none());
    }

    {
        let limiter = Limiter::new(CAPACITY);
        let subject = principal.subject(ADDRESS, &two);
        group.bench_function("check_two_windows_and_quota", |b| {
            b.iter(|| black_box(limiter.check(black_box(&subject), NOW)))
        });
        assert!(limiter.check(&subject, NOW).exceeded.is_none());
    }

    {
        let limits = LimitSet::new("bench", vec![rate(1, HOUR)], None);
        let limiter = Limiter::new(CAPACITY);
        let subject = principal.subject(ADDRESS, &limits);
        assert!(limiter.check(&subject, NOW).exceeded.is_none());
        assert!(limiter.check(&subject, NOW).exceeded.is_some());
        group.bench_function("check_refused", |b| {
            b.iter(|| black_box(limiter.check(black_box(&subject), NOW)))
        });
    }

    for threads in [2, 4] {
        group.bench_function(format!("check_contended_{threads}threads"), |b| {
            b.iter_custom(|iters| contended(&one, &principal, threads, iters))
        });
    }

    {
        let limiter = Limiter::new(CAPACITY);
        let subjects: Vec<Subject<'_>> = (0..DISTINCT)
            .map(|i| {
                let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
                Subject::address(address, &one)
            })
            .collect();
        // Every subject has its bucket before timing starts: only lookups are timed.
        for subject in &subjects {
            limiter.check(subject, NOW);
        }
        assert_eq!(limiter.tracked(), subjects.len());
        let mut next = 0;
        group.bench_function("check_distinct_subjects", |b| {
            b.iter(|| {
                let subject = &subjects[next];
                next = if next + 1 == subjects.len() {
                    0
                } else {
                    next + 1
                };
                black_box(limiter.check(black_box(subject), NOW))
            })
        });
        assert_eq!(limiter.tracked(), subjects.len());
    }

    {
        let limiter = Limiter::new(CAPACITY);
        let subject = principal.subject(ADDRESS, &two);
        let verdict = limiter.check(&subject, NOW);
        assert!(verdict.exceeded.is_none());
        group.bench_function("headers_write", |b| {
            b.iter_batched(
                || HeaderMap::with_capacity(8),
                |mut map| {
                    headers::write(&mut map, black_box(&verdict), Styles::default(), NOW);
                    map
                },
                BatchSize::SmallInput,
            )
        });
    }

    global_lease(&mut group, &principal, &one);

    group.finish();
}

/// The fleet-wide limiter far from the limit, on the Redis of `AUTHMD_BENCH_REDIS_URL`
/// (default `redis://127.0.0.1:6379`; skipped when none answers): a decision
/// spends a request its replica holds, and now and then one asks Redis for more
/// in the background (on the caller's thread when the lease ran dry, which the
/// time per decision then includes). The end-to-end benchmark's `authmd-global`
/// target measures the whole cost, Redis calls included, at real request rates.
fn global_lease(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    principal: &Principal,
    limits: &LimitSet,
) {
    let url = std::env::var("AUTHMD_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let reachable = runtime.block_on(async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    });
    if reachable.is_none() {
        eprintln!("limits/global_lease: no Redis answers at AUTHMD_BENCH_REDIS_URL: skipped");
        return;
    }
    let settings = GlobalSettings {
        target: Target {
            urls: vec![url],
            cluster: false,
            ca_pem: None,
        },
        timeout: Duration::from_millis(200),
        mode: Mode::Lease,
        // The largest lease, so that a top-up (one Redis round trip, ~100 µs)
        // arrives before this one thread, deciding millions of times a second,
        // spends the rest: what is timed is the decision, not Redis's latency.
        max_lease: 10_000,
        lease_ttl: Duration::from_secs(2),
        on_unavailable: OnUnavailable::Local,
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(5),
        heartbeat: Duration::from_secs(2),
        key_prefix: format!("authmd-bench-{}", std::process::id()),
        quotas: false,
        quota_batch: Duration::from_secs(1),
    };
    let limiter = Arc::new(Limiter::new(CAPACITY));
    let metrics = authmd_proxy::metrics::Metrics::new().unwrap();
    let (global, _tasks) = Global::start(settings, limiter.clone(), &metrics, CAPACITY).unwrap();
    let subject = principal.subject(ADDRESS, limits);
    let decide = || match global.check_local(&limiter, &subject, NOW) {
        Some(verdict) => verdict,
        None => runtime.block_on(global.check_remote(&limiter, &subject, NOW)),
    };
    assert!(decide().exceeded.is_none());
    group.bench_function("global_lease_far_from_limit", |b| {
        b.iter(|| black_box(decide()))
    });
    assert!(decide().exceeded.is_none());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = checks
}
criterion_main!(benches);
