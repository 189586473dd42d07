//! Fleet-wide rate limits (`limits.global`) on the Redis deployments other than a
//! plain server, each a real `redis-server` the test starts
//! (`support::private_redis`) and kills at its end:
//!
//! - `rediss://` with `ca_file`: the proxies trust the test's CA and limit a subject
//!   across the fleet; without `ca_file` (the system's roots only) no handshake
//!   succeeds, the failures are counted, the fallback answers, and nothing hangs.
//! - A Redis Cluster of three masters (`cluster: true`, `nodes:`): the windows of a
//!   subject (two here) share its hash tag, so one script takes from both on one
//!   slot; the heartbeat counts both replicas, and the quota is counted in Redis.
//! - A password in the URL of a failing setup never shows in the log, down to
//!   its debug lines and redis-rs's own.
//!
//! Without `redis-server` the tests say so and skip. The windows are `100/min`, so
//! a run of `t` seconds may admit `floor(t / 0.6)` more than 100 (GCRA gives one
//! back every 600 ms), as in `global_limits`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step fails the test"
)]

use std::time::Duration;

use crate::support::private_redis::{ClusterRedis, TlsRedis};
use crate::support::redis::{config, metric, spread, unique_prefix};
use crate::support::{Binary, TestProxy, WRITER_KEY, client, eventually};

/// Requests GCRA gives back over `elapsed` at one per 600 ms.
fn refilled(elapsed: Duration) -> usize {
    (elapsed.as_millis() / 600) as usize
}

/// Settings that make the replicas find each other within a fraction of a second,
/// and a timeout a loaded test machine meets (the feature is not its speed).
const QUICK: &str =
    "    timeout: 1s\n    heartbeat: 200ms\n    breaker: {failures: 3, cooldown: 200ms}\n";

/// The proxy's calls to Redis with `outcome`.
fn calls(proxy: &TestProxy, outcome: &str) -> f64 {
    // `+ 0.0`: no samples sum to -0.
    metric(
        proxy,
        "authmd_ratelimit_backend_calls_total",
        &[&format!("outcome=\"{outcome}\"")],
    ) + 0.0
}

/// Waits until every proxy counts `n` live replicas (heartbeats answered, so each
/// reaches Redis) and none is in its fallback.
async fn until_fleet_of(proxies: &[TestProxy], n: f64) {
    eventually(Duration::from_secs(20), || async {
        proxies.iter().all(|p| {
            metric(p, "authmd_ratelimit_live_replicas", &[]) == n
                && metric(p, "authmd_ratelimit_fallback_active", &[]) == 0.0
        })
    })
    .await;
}

/// Sends 300 requests over `proxies` (Redis reached by all) and checks that they
/// admitted about 100 together, with no failed call to Redis meanwhile; answers
/// how many they admitted.
async fn admits_one_limit(proxies: &[TestProxy], label: &str) -> usize {
    let failed_before: f64 = proxies
        .iter()
        .map(|p| calls(p, "error") + calls(p, "timeout"))
        .sum();
    let (seen, elapsed) = spread(proxies, 300).await;
    let admitted = seen.get(&200).copied().unwrap_or(0);
    let refused = seen.get(&429).copied().unwrap_or(0);
    assert_eq!(admitted + refused, 300, "only 200s and 429s: {seen:?}");
    let ceiling = 100 + refilled(elapsed);
    let floor = 100 - 32 * proxies.len();
    assert!(
        (floor..=ceiling).contains(&admitted),
        "{label}: admitted {admitted} in {elapsed:?} ({floor} to {ceiling})"
    );
    let ok: f64 = proxies.iter().map(|p| calls(p, "ok")).sum();
    let failed: f64 = proxies
        .iter()
        .map(|p| calls(p, "error") + calls(p, "timeout"))
        .sum();
    assert!(ok > 0.0, "{label}: no call to redis succeeded");
    assert_eq!(
        failed, failed_before,
        "{label}: calls to redis failed during the run"
    );
    eprintln!(
        "{label}: admitted {admitted}, refused {refused} in {elapsed:?}; {ok} redis calls ok"
    );
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_fleet_shares_one_limit_and_without_the_ca_the_fallback_answers() {
    let started = tokio::time::Instant::now();
    let Some(redis) = TlsRedis::start().await else {
        return;
    };
    eprintln!("tls redis up in {:?}", started.elapsed());

    // With the CA: two replicas share the window of one subject.
    let extra = format!("{QUICK}    ca_file: {}\n", redis.ca_file.display());
    let yaml = config(&redis.url(), &unique_prefix("tls"), &extra);
    let proxies = vec![
        TestProxy::start(&yaml, None).await,
        TestProxy::start(&yaml, None).await,
    ];
    until_fleet_of(&proxies, 2.0).await;
    admits_one_limit(&proxies, "rediss with ca_file").await;
    for proxy in proxies {
        proxy.shutdown().await;
    }

    // Without it the server's certificate is no system root's: every handshake
    // fails, the replica says so in its metrics, and its share answers instead.
    let yaml = config(&redis.url(), &unique_prefix("tls-untrusted"), QUICK);
    let proxy = TestProxy::start(&yaml, None).await;
    let http = client();
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let response = http
                .get(proxy.url("/offers"))
                .header("X-Agent-Key", WRITER_KEY)
                .send()
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
        }
        statuses
    })
    .await
    .unwrap_or_else(|_| panic!("requests hung while the TLS handshake with redis fails"));
    // One replica's share of 100/min is all of it: 20 requests are admitted.
    assert!(
        answered.iter().all(|&s| s == 200),
        "without the CA: {answered:?}"
    );
    eventually(Duration::from_secs(10), || async {
        metric(&proxy, "authmd_ratelimit_fallback_active", &[]) == 1.0
    })
    .await;
    let (ok, error, timeout) = (
        calls(&proxy, "ok"),
        calls(&proxy, "error"),
        calls(&proxy, "timeout"),
    );
    eprintln!("rediss without ca_file: {ok:.0} ok, {error:.0} errors, {timeout:.0} timeouts");
    assert_eq!(ok, 0.0, "a call succeeded without trusting the CA");
    assert!(
        error > 0.0,
        "the failed handshakes are not counted as errors"
    );
    proxy.shutdown().await;
    eprintln!("tls test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_two_replicas_share_one_subjects_windows() {
    let started = tokio::time::Instant::now();
    let Some(cluster) = ClusterRedis::start().await else {
        return;
    };
    eprintln!("cluster up in {:?}", started.elapsed());
    let urls = cluster.urls();
    let prefix = unique_prefix("cluster");
    let extra = format!(
        "{QUICK}    cluster: true\n    nodes: [{}]\n    quotas: true\n    quota_batch: 50ms\n",
        urls[1..].join(", ")
    );
    // Two windows: the script takes from both keys at once, which a cluster
    // allows only when they are on one slot. And a quota, counted in Redis.
    let yaml = config(&urls[0], &prefix, &extra).replace(
        "rate_limits: [100/min]",
        "rate_limits: [100/min, 1000/hour]\n    quota: 10000/day",
    );
    let proxies = vec![
        TestProxy::start(&yaml, None).await,
        TestProxy::start(&yaml, None).await,
    ];
    until_fleet_of(&proxies, 2.0).await;
    let admitted = admits_one_limit(&proxies, "cluster").await;

    // What the replicas wrote: the set of live ones, and the subject's windows on
    // one slot.
    let mut conn = cluster.connection().await;
    let live: u32 = redis::cmd("ZCARD")
        .arg(format!("{prefix}:replicas"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(live, 2);
    let mut windows = Vec::new();
    for node in &cluster.nodes {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", node.port)).unwrap();
        let mut node = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:rl:*"))
            .query_async(&mut node)
            .await
            .unwrap();
        windows.push(keys.len());
    }
    windows.sort_unstable();
    assert_eq!(
        windows,
        [0, 0, 2],
        "the subject's two windows are not on one node"
    );
    // The quota counter holds what the fleet admitted, once the batches are in.
    let quota = format!("{prefix}:q:*");
    eventually(Duration::from_secs(10), || async {
        let mut counted = 0;
        for node in &cluster.nodes {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", node.port)).unwrap();
            let mut node = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&quota)
                .query_async(&mut node)
                .await
                .unwrap();
            for key in keys {
                let n: usize = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut node)
                    .await
                    .unwrap();
                counted += n;
            }
        }
        counted == admitted
    })
    .await;
    for proxy in proxies {
        proxy.shutdown().await;
    }
    eprintln!("cluster test took {:?}", started.elapsed());
}

/// A password that must never be shown.
const PASSWORD: &str = "redis-s3cret-pw-71c9";

/// The binary on `yaml` (in `dir`), logging everything, redis-rs's own records
/// included.
async fn verbose_binary(dir: &std::path::Path, name: &str, yaml: &str) -> Binary {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml.replace("{upstream}", "builtin:echo")).unwrap();
    let data = dir.join(format!("{name}-data"));
    std::fs::create_dir(&data).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authmd-proxy"));
    command
        .arg("run")
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "debug");
    Binary::launch(command).await
}

/// Sends requests to `proxy` until its log has a line with `wanted`; answers every
/// line seen.
async fn log_until(proxy: &Binary, wanted: &str) -> Vec<String> {
    let http = client();
    let lines = std::cell::RefCell::new(proxy.startup.clone());
    eventually(Duration::from_secs(20), || async {
        let response = http
            .get(format!("{}/offers", proxy.url))
            .header("X-Agent-Key", WRITER_KEY)
            .send()
            .await;
        assert!(response.is_ok(), "the proxy did not answer");
        let mut lines = lines.borrow_mut();
        lines.extend(proxy.log_lines());
        lines.iter().any(|l| l.contains(wanted))
    })
    .await;
    lines.into_inner()
}

/// A Redis URL with a password, in setups that fail (a TLS handshake with a
/// certificate no root vouches for; a server that refuses the password; a cluster
/// whose seed refuses connections):
/// the failures are logged, at every level down to debug and redis-rs's own
/// records, and no line shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_a_failing_redis_url_is_never_logged() {
    let Some(redis) = TlsRedis::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tls_url = format!("rediss://:{PASSWORD}@localhost:{}", redis.server.port);
    let tls = verbose_binary(
        dir.path(),
        "tls",
        &config(&tls_url, &unique_prefix("pw-tls"), QUICK),
    )
    .await;
    let refused_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster_url = format!("redis://:{PASSWORD}@127.0.0.1:{refused_port}");
    let cluster = verbose_binary(
        dir.path(),
        "cluster",
        &config(
            &cluster_url,
            &unique_prefix("pw-cluster"),
            &format!("{QUICK}    cluster: true\n"),
        ),
    )
    .await;
    // With the CA the handshake succeeds and the server refuses the password.
    let refused = verbose_binary(
        dir.path(),
        "refused",
        &config(
            &tls_url,
            &unique_prefix("pw-refused"),
            &format!("{QUICK}    ca_file: {}\n", redis.ca_file.display()),
        ),
    )
    .await;
    let mut lines = log_until(&tls, "redis is unavailable").await;
    lines.extend(log_until(&cluster, "cannot connect to the redis cluster").await);
    lines.extend(log_until(&refused, "redis is unavailable").await);
    for failure in [
        "UnknownIssuer",
        "Connection refused",
        "Password authentication failed",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(failure)),
            "no line says {failure}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("a call to redis failed")),
        "the debug lines are not in the log"
    );
    let shown: Vec<&String> = lines.iter().filter(|l| l.contains(PASSWORD)).collect();
    assert!(shown.is_empty(), "the password is in the log: {shown:#?}");
    eprintln!("{} log lines, none with the password", lines.len());
}
