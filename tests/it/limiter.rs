//! The limiter as a library under contention: many threads on one subject never
//! get more than its limit, and what a refused request took is given back.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use authmd_proxy::limits::gcra::Rate;
use authmd_proxy::limits::quota::{Period, Quota};
use authmd_proxy::limits::{Exceeded, LimitSet, Limiter, Subject};

const THREADS: usize = 8;
const ATTEMPTS: usize = 20_000;

/// Every thread hammers the same subject; returns how many requests passed.
fn hammer(limiter: &Arc<Limiter>, limits: &Arc<LimitSet>) -> u64 {
    let admitted = Arc::new(AtomicU64::new(0));
    let address: IpAddr = "192.0.2.1".parse().unwrap();
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let (limiter, limits, admitted) = (limiter.clone(), limits.clone(), admitted.clone());
            scope.spawn(move || {
                let subject = Subject::address(address, &limits);
                for _ in 0..ATTEMPTS {
                    if limiter.check(&subject, 1_795_428_000).exceeded.is_none() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    admitted.load(Ordering::Relaxed)
}

fn rate(limit: u32, secs: u64) -> Rate {
    Rate::new(limit, Duration::from_secs(secs)).unwrap()
}

#[test]
fn many_threads_on_one_bucket_get_exactly_its_limit() {
    // Windows of an hour and a day: nothing refills while the test runs.
    let limits = Arc::new(LimitSet::new(
        "t",
        vec![rate(1000, 3600), rate(1500, 86_400)],
        None,
    ));
    let limiter = Arc::new(Limiter::new(1000));
    assert_eq!(hammer(&limiter, &limits), 1000);
    // The 159,000 refusals took nothing from the day window.
    let subject = Subject::address("192.0.2.1".parse().unwrap(), &limits);
    let verdict = limiter.check(&subject, 1_795_428_000);
    assert!(matches!(verdict.exceeded, Some(Exceeded::Rate { .. })));
    assert_eq!(verdict.windows[0].unwrap().remaining, 0);
    assert_eq!(verdict.windows[1].unwrap().remaining, 500);
}

#[test]
fn many_threads_on_one_quota_get_exactly_the_quota() {
    let quota = Quota {
        limit: 700,
        period: Period::Day,
    };
    let limits = Arc::new(LimitSet::new("t", vec![rate(1000, 3600)], Some(quota)));
    let limiter = Arc::new(Limiter::new(1000));
    assert_eq!(hammer(&limiter, &limits), 700);
    // Requests the quota refused gave their rate token back.
    let subject = Subject::address("192.0.2.1".parse().unwrap(), &limits);
    let verdict = limiter.check(&subject, 1_795_428_000);
    assert_eq!(verdict.exceeded, Some(Exceeded::Quota));
    assert_eq!(verdict.windows[0].unwrap().remaining, 300);
    assert_eq!(limiter.quotas().used("addr:192.0.2.1"), Some(700));
}
