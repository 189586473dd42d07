//! Fleet-wide rate limits on Redis (`limits.global`): three proxies share one
//! Redis and one `100/min` subject, and together admit what one would.
//!
//! Needs the Redis of `AUTHMD_TEST_REDIS_URL` (`.ci/run` sets it); without it the
//! tests say so and skip. Each test uses a key prefix of its own, so tests and
//! runs never see each other's windows.
//!
//! The window is a minute, so GCRA gives one request back every 600 ms: a run
//! that takes `t` seconds may admit `floor(t / 0.6)` more than 100. The bounds
//! below add exactly that.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::time::Duration;

use crate::support::TestProxy;
use crate::support::redis::{config, metric, redis_url, spread, unique_prefix};

/// Requests GCRA gives back over `elapsed` at one per 600 ms.
fn refilled(elapsed: Duration) -> usize {
    (elapsed.as_millis() / 600) as usize
}

/// Three proxies sharing `url`. A loaded test machine must not make a call miss
/// its timeout (the fallback would then decide, and the count would not be the
/// fleet's): the timeout is generous, and [`no_failed_calls`] checks it held.
async fn fleet(url: &str, prefix: &str, extra: &str) -> Vec<TestProxy> {
    let yaml = config(url, prefix, &format!("    timeout: 5s\n{extra}"));
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(TestProxy::start(&yaml, None).await);
    }
    proxies
}

/// No call to Redis failed or timed out on any of `proxies`.
fn no_failed_calls(proxies: &[TestProxy]) {
    for proxy in proxies {
        for outcome in ["error", "timeout", "skipped"] {
            let label = format!("outcome=\"{outcome}\"");
            let failed = metric(proxy, "authmd_ratelimit_backend_calls_total", &[&label]);
            assert_eq!(failed, 0.0, "calls with {label}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_leases_admit_one_limit_with_few_round_trips() {
    let Some(url) = redis_url() else { return };
    let proxies = fleet(&url, &unique_prefix("lease"), "").await;
    let (seen, elapsed) = spread(&proxies, 1000).await;
    no_failed_calls(&proxies);
    let admitted = seen.get(&200).copied().unwrap_or(0);
    let refused = seen.get(&429).copied().unwrap_or(0);
    assert_eq!(admitted + refused, 1000, "only 200s and 429s: {seen:?}");
    // Never more than the limit (plus what the window gave back meanwhile); short
    // of it by at most what replicas held unspent when the run ended.
    let ceiling = 100 + refilled(elapsed);
    assert!(
        admitted <= ceiling,
        "admitted {admitted} > {ceiling} in {elapsed:?}"
    );
    // Short by what replicas still hold: each spends what it holds on its next
    // request, and near the limit grants are single requests, so at the end a
    // replica holds at most a top-up or two that came after its last request.
    assert!(admitted >= 100 - 2 * 3, "admitted only {admitted}");
    let calls: f64 = proxies
        .iter()
        .map(|p| {
            metric(
                p,
                "authmd_ratelimit_backend_calls_total",
                &["outcome=\"ok\""],
            )
        })
        .sum();
    let lease_calls: f64 = proxies
        .iter()
        .map(|p| {
            metric(
                p,
                "authmd_ratelimit_backend_calls_total",
                &["operation=\"acquire\"", "outcome=\"ok\""],
            ) + metric(
                p,
                "authmd_ratelimit_backend_calls_total",
                &["operation=\"refill\"", "outcome=\"ok\""],
            )
        })
        .sum();
    eprintln!(
        "leases: admitted {admitted}, refused {refused} in {elapsed:?}; {calls} redis calls ({lease_calls} for leases) for 1000 requests: {:.3} per request",
        calls / 1000.0
    );
    assert!(
        calls < 1000.0 / 2.0,
        "{calls} redis calls for 1000 requests"
    );
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_in_exact_mode_admit_exactly_the_limit() {
    let Some(url) = redis_url() else { return };
    let proxies = fleet(&url, &unique_prefix("exact"), "    mode: exact").await;
    let (seen, elapsed) = spread(&proxies, 1000).await;
    no_failed_calls(&proxies);
    let admitted = seen.get(&200).copied().unwrap_or(0);
    assert_eq!(
        admitted + seen.get(&429).copied().unwrap_or(0),
        1000,
        "{seen:?}"
    );
    let ceiling = 100 + refilled(elapsed);
    assert!(
        (100..=ceiling).contains(&admitted),
        "exact mode admitted {admitted} in {elapsed:?} (100 to {ceiling})"
    );
    let calls: f64 = proxies
        .iter()
        .map(|p| {
            metric(
                p,
                "authmd_ratelimit_backend_calls_total",
                &["operation=\"acquire\"", "outcome=\"ok\""],
            )
        })
        .sum();
    assert_eq!(calls, 1000.0, "one round trip per request");
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

/// `RateLimit-Remaining` on one replica counts what the others admitted: the
/// fleet's window as Redis last answered, within what the replicas hold unspent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headers_of_one_replica_count_what_the_others_admitted() {
    let Some(url) = redis_url() else { return };
    let proxies = fleet(&url, &unique_prefix("headers"), "").await;
    let http = crate::support::client();
    let remaining = |response: &reqwest::Response| -> u64 {
        response.headers()["ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let get = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .header("X-Agent-Key", crate::support::WRITER_KEY)
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..40 {
        assert_eq!(get(proxies[0].url("/offers")).await.status(), 200);
    }
    let response = get(proxies[1].url("/offers")).await;
    assert_eq!(response.status(), 200);
    // 41 admitted so far; the first replica may hold unspent what its leases
    // granted beyond them (at most half of what was left, 50, even counting itself
    // alone), which the fleet's count already took.
    let left = remaining(&response);
    assert!(
        (100 - 41 - 50..=100 - 41).contains(&left),
        "the second replica says {left} are left after 41 requests"
    );
    assert_eq!(response.headers()["ratelimit-limit"], "100");
    for proxy in proxies {
        proxy.shutdown().await;
    }
}

/// The lease script itself, on a real Redis: grants up to what was asked far
/// from the limit, shares out what is left among twice the replicas, one at a
/// time near the limit, none past it, and takes back what is given back.
#[tokio::test]
async fn the_lease_script_shrinks_its_grants_to_one_near_the_limit() {
    use authmd_proxy::limits::gcra::Rate;
    use authmd_proxy::limits::global::Target;
    use authmd_proxy::limits::global::backend::Scripts;

    let Some(url) = redis_url() else { return };
    let target = Target {
        urls: vec![url],
        cluster: false,
        ca_pem: None,
    };
    let mut conn = target.single(Duration::from_secs(5)).unwrap();
    let scripts = Scripts::default();
    let prefix = unique_prefix("script");
    let keys = [format!("{prefix}:rl:{{0000000000000001}}:60000")];
    let rate = [Rate::new(100, Duration::from_secs(60)).unwrap()];
    let mut lease = async |n: i64, replicas: u32| {
        scripts
            .lease(&mut conn, &keys, &rate, n, replicas)
            .await
            .unwrap()
            .granted
    };
    // Far from the limit one replica gets what it asks: 100 / (2 * 1) is more.
    assert_eq!(lease(32, 1).await, 32);
    // 68 left, three replicas: 68 / 6.
    assert_eq!(lease(32, 3).await, 11);
    let mut grants = Vec::new();
    loop {
        match lease(32, 3).await {
            0 => break,
            n => grants.push(n),
        }
    }
    assert_eq!(grants.iter().sum::<i64>(), 100 - 43, "{grants:?}");
    assert!(grants.windows(2).all(|w| w[0] >= w[1]), "{grants:?}");
    assert_eq!(
        grants.last(),
        Some(&1),
        "one at a time at the end: {grants:?}"
    );
    // Five given back are five to grant again, and no more.
    assert_eq!(lease(-5, 3).await, -5);
    let mut again = 0;
    while lease(1, 3).await == 1 {
        again += 1;
    }
    assert!(
        (5..=6).contains(&again),
        "{again} granted after 5 given back"
    );
}
