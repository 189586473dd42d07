//! Fleet-wide rate limits (`limits.global`) when Redis fails, against real Redis:
//!
//! - a private `redis-server` killed (SIGKILL) mid-run and started again on the
//!   same socket, once per `on_unavailable` behaviour: `local` admits each
//!   replica's share, `open` everything, `closed` answers 503
//!   `RATE_LIMIT_UNAVAILABLE` with a `Retry-After`; after the restart the breaker
//!   closes by itself and the limits are the fleet's again;
//! - the shared Redis behind a relay that holds every chunk longer than the
//!   timeout: the calls time out and are counted so, the breaker opens, requests
//!   are answered by the fallback, and the limits are global again once Redis is
//!   fast again;
//! - `/readyz`, 200 all along, with a `degraded` note only while Redis is away;
//! - quotas counted in Redis by two replicas: the fleet admits the quota plus at
//!   most one batch, then both refuse, and a replica started again gives no
//!   used-up quota back;
//! - `check` on broken `limits.global` settings, and a Redis password that never
//!   shows in any output, log line or metric.
//!
//! No test waits by sleeping: each polls (`eventually`) for what it waits for.
//! Every request is bounded by [`HANG`], a detector of hangs, not a speed claim.
//! The breaker and the heartbeats run on short periods (200 ms, 100 ms) so that
//! an outage and its recovery take a fraction of a second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::redis::{PrivateRedis, config, metric, redis_url, unique_prefix};
use crate::support::relay::Relay;
use crate::support::{Binary, TestProxy, WRITER_KEY, assert_envelope, client, eventually};

/// Longest any one request may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(10);

/// Longest an outage or a recovery may take to show.
const WITHIN: Duration = Duration::from_secs(10);

const CALLS: &str = "authmd_ratelimit_backend_calls_total";
const FALLBACK: &str = "authmd_ratelimit_fallback_active";
const LIVE: &str = "authmd_ratelimit_live_replicas";

/// The fleet's config on `url`: the writer's tier allows 30 requests a minute;
/// heartbeats every 100 ms, and a breaker that opens after two failures for
/// 200 ms. `extra` adds settings under `limits.global` (indented four spaces).
fn fleet_config(url: &str, prefix: &str, extra: &str) -> String {
    let extra =
        format!("    heartbeat: 100ms\n    breaker: {{failures: 2, cooldown: 200ms}}\n{extra}");
    let yaml = config(url, prefix, &extra);
    assert!(yaml.contains("rate_limits: [100/min]"));
    yaml.replace("rate_limits: [100/min]", "rate_limits: [30/min]")
}

/// A proxy with its admin listener (`/readyz`, `/metrics`), served until the
/// handle is aborted.
struct Replica {
    proxy: TestProxy,
    admin: String,
    serving: JoinHandle<()>,
}

impl Replica {
    async fn start(yaml: &str) -> Replica {
        let proxy = TestProxy::start(yaml, None).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        let gateway = proxy.running().gateway.clone();
        let serving = tokio::spawn(authmd_proxy::server::serve_admin(
            listener,
            gateway,
            std::future::pending(),
        ));
        Replica {
            proxy,
            admin,
            serving,
        }
    }

    fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric(&self.proxy, name, labels)
    }

    /// Calls of `operation` (any, when empty) that ended `outcome`.
    fn calls(&self, operation: &str, outcome: &str) -> f64 {
        let outcome = format!("outcome=\"{outcome}\"");
        if operation.is_empty() {
            return self.metric(CALLS, &[&outcome]);
        }
        let operation = format!("operation=\"{operation}\"");
        self.metric(CALLS, &[&operation, &outcome])
    }

    /// `GET /offers` with the writer's key.
    async fn get(&self) -> reqwest::Response {
        let request = client()
            .get(self.proxy.url("/offers"))
            .header("X-Agent-Key", WRITER_KEY)
            .send();
        tokio::time::timeout(HANG, request)
            .await
            .expect("a request hung")
            .unwrap()
    }

    /// `/readyz`: its status and body.
    async fn readyz(&self) -> (u16, serde_json::Value) {
        let request = client().get(format!("{}/readyz", self.admin)).send();
        let response = tokio::time::timeout(HANG, request)
            .await
            .expect("/readyz hung")
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn shutdown(self) {
        tokio::time::timeout(HANG, self.proxy.shutdown())
            .await
            .expect("the shutdown hung");
        self.serving.abort();
    }
}

async fn fleet(yaml: &str, n: usize) -> Vec<Replica> {
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(Replica::start(yaml).await);
    }
    replicas
}

/// Polls until every replica's `name` gauge reads `value`.
async fn all_read(replicas: &[Replica], name: &str, value: f64) -> Duration {
    eventually(WITHIN, || async {
        replicas.iter().all(|r| r.metric(name, &[]) == value)
    })
    .await
}

/// `/readyz` while Redis is away: 200, ready, and one note naming the fallback.
async fn assert_degraded(replica: &Replica, says: &str) {
    let (status, body) = replica.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    let notes = body["degraded"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{body}");
    let note = notes[0].as_str().unwrap();
    assert!(
        note.starts_with("limits.global: redis is unavailable") && note.contains(says),
        "{body}"
    );
}

/// `/readyz` with Redis answering: exactly `{"status":"ready"}`.
async fn assert_ready(replica: &Replica) {
    let (status, body) = replica.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"status": "ready"}));
}

/// Sends `n` requests to `replica`, one after another; counts the statuses.
async fn send(replica: &Replica, n: usize) -> HashMap<u16, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        *seen
            .entry(replica.get().await.status().as_u16())
            .or_insert(0) += 1;
    }
    seen
}

/// Sends `n` requests, in turn to each replica; counts the statuses, and the
/// time it took.
async fn round_robin(replicas: &[Replica], n: usize) -> (HashMap<u16, usize>, Duration) {
    let started = Instant::now();
    let mut seen = HashMap::new();
    for replica in replicas.iter().cycle().take(n) {
        *seen
            .entry(replica.get().await.status().as_u16())
            .or_insert(0) += 1;
    }
    (seen, started.elapsed())
}

/// What a replica's share of `30/min` (15/min, one every 4 s) gives back over
/// `elapsed`.
fn share_refilled(elapsed: Duration) -> usize {
    (elapsed.as_secs() / 4) as usize
}

/// What the fleet's `30/min` (one every 2 s) gives back over `elapsed`.
fn fleet_refilled(elapsed: Duration) -> usize {
    (elapsed.as_secs() / 2) as usize
}

/// Two replicas on a private Redis, which has been killed: the breaker is open
/// on both, and `on_unavailable` is in force.
struct Outage {
    redis: PrivateRedis,
    replicas: Vec<Replica>,
    on_unavailable: &'static str,
    started: Instant,
    opened: Duration,
}

impl Outage {
    /// Starts Redis and two replicas that count each other, then kills Redis and
    /// waits for the breaker to open; `says` is in the `/readyz` note meanwhile.
    /// `None` when there is no `redis-server`.
    async fn begin(on_unavailable: &'static str, says: &str, status: u16) -> Option<Outage> {
        let started = Instant::now();
        let mut redis = PrivateRedis::start().await?;
        let extra = format!("    on_unavailable: {on_unavailable}\n");
        let prefix = unique_prefix(&format!("killed-{on_unavailable}"));
        let replicas = fleet(&fleet_config(&redis.url(), &prefix, &extra), 2).await;
        // Both heartbeats are counted before Redis goes: each one's share is half.
        all_read(&replicas, LIVE, 2.0).await;
        for replica in &replicas {
            assert_ready(replica).await;
        }

        redis.kill();
        // A request at once, before the breaker knows: its call fails (within the
        // timeout) and the fallback answers it.
        for replica in &replicas {
            assert_eq!(replica.get().await.status(), status);
        }
        // The heartbeats fail (errors or timeouts, as the reconnection goes), and
        // the breaker opens on both.
        let opened = all_read(&replicas, FALLBACK, 1.0).await;
        for replica in &replicas {
            // Two failed calls (the request's, heartbeats) opened it.
            let failed = replica.calls("", "error") + replica.calls("", "timeout");
            assert!(failed >= 2.0, "{failed} failed calls");
            assert_degraded(replica, says).await;
        }
        // While it is open, calls are not made but counted as skipped.
        eventually(WITHIN, || async {
            replicas
                .iter()
                .all(|r| r.calls("heartbeat", "skipped") > 0.0)
        })
        .await;
        Some(Outage {
            redis,
            replicas,
            on_unavailable,
            started,
            opened,
        })
    }

    /// Starts Redis again: a probe after the cooldown finds it, the breaker
    /// closes, calls are made and answered, `/readyz` says nothing more, and the
    /// limit is the fleet's again.
    async fn end(mut self) {
        for replica in &self.replicas {
            assert_eq!(
                replica.metric(LIVE, &[]),
                2.0,
                "the replica count seen last is kept while Redis is away"
            );
        }
        self.redis.restart().await;
        let recovered = all_read(&self.replicas, FALLBACK, 0.0).await;
        all_read(&self.replicas, LIVE, 2.0).await;
        for replica in &self.replicas {
            assert_ready(replica).await;
            let acquired = replica.calls("acquire", "ok");
            let response = replica.get().await;
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["ratelimit-limit"],
                "30",
                "the fleet's limit, not a share"
            );
            assert!(replica.calls("acquire", "ok") > acquired);
        }
        eprintln!(
            "on_unavailable: {}: breaker open {:?} after the kill, closed {recovered:?} after the restart; {:?} in all",
            self.on_unavailable,
            self.opened,
            self.started.elapsed()
        );
        for replica in self.replicas {
            replica.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_local_admits_each_replica_s_share_then_the_fleet_s_limit_again() {
    let Some(outage) = Outage::begin("local", "each replica enforces its share", 200).await else {
        return;
    };
    for replica in &outage.replicas {
        // One was admitted at the kill.
        let seen = send(replica, 24).await;
        let admitted = 1 + seen.get(&200).copied().unwrap_or(0);
        let ceiling = 15 + share_refilled(outage.started.elapsed());
        assert!(
            (15..=ceiling).contains(&admitted),
            "a replica's share of 30/min among 2 is 15: admitted {admitted} ({seen:?})"
        );
        assert_eq!(
            admitted + seen.get(&429).copied().unwrap_or(0),
            25,
            "{seen:?}"
        );
    }
    // The share is what the headers state.
    let refused = outage.replicas[0].get().await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["ratelimit-limit"], "15");
    assert!(refused.headers().get("retry-after").is_some());
    outage.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_open_admits_everything_then_the_fleet_s_limit_again() {
    let Some(outage) = Outage::begin("open", "rate limits are not enforced", 200).await else {
        return;
    };
    for replica in &outage.replicas {
        let seen = send(replica, 40).await;
        assert_eq!(
            seen,
            HashMap::from([(200, 40)]),
            "more than the limit, all admitted"
        );
    }
    outage.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_closed_answers_503_with_retry_after_then_the_fleet_s_limit_again() {
    let Some(outage) = Outage::begin("closed", "limited routes answer 503", 503).await else {
        return;
    };
    for replica in &outage.replicas {
        for _ in 0..3 {
            let response = replica.get().await;
            // The breaker's cooldown is 200 ms: retry in a second.
            assert_eq!(response.headers()["retry-after"], "1");
            assert_envelope(
                response,
                503,
                "temporarily_unavailable",
                "RATE_LIMIT_UNAVAILABLE",
            )
            .await;
        }
    }
    outage.end().await;
}

/// `redis://[auth@]host:port[/db]` split into the address a relay forwards to and
/// the URL that goes through a relay on `port` instead; `None` for TLS, which a
/// relay on another address would break.
fn through_relay(url: &str) -> Option<(String, impl Fn(u16) -> String)> {
    let rest = url.strip_prefix("redis://")?;
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (auth, address) = authority
        .rsplit_once('@')
        .map_or(("", authority), |(u, a)| (u, a));
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("{auth}@")
    };
    let path = path.to_owned();
    let relayed = move |port: u16| format!("redis://{auth}127.0.0.1:{port}/{path}");
    Some((address.to_owned(), relayed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_slower_than_the_timeout_opens_the_breaker_and_the_fallback_answers() {
    let Some(url) = redis_url() else { return };
    let Some((address, relayed)) = through_relay(&url) else {
        eprintln!("skipped: the slow-Redis test relays plain TCP; {url:?} is not `redis://`");
        return;
    };
    let started = Instant::now();
    let relay = Relay::start(&address).await;
    // One request per lease: a call that timed out may still take its grant in
    // Redis, and then it takes one, no more.
    let yaml = fleet_config(
        &relayed(relay.port),
        &unique_prefix("slow"),
        "    timeout: 50ms\n    max_lease: 1\n",
    );
    let replicas = fleet(&yaml, 2).await;
    all_read(&replicas, LIVE, 2.0).await;
    for replica in &replicas {
        let response = replica.get().await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "30");
    }

    // Every chunk is held six times the timeout: each call times out.
    relay.delay(Duration::from_millis(300));
    let opened = eventually(WITHIN, || async {
        replicas
            .iter()
            .all(|r| r.calls("", "timeout") >= 2.0 && r.metric(FALLBACK, &[]) == 1.0)
    })
    .await;
    for replica in &replicas {
        // A timeout is a timeout, not an error.
        assert_eq!(
            replica.calls("", "error"),
            0.0,
            "timeouts counted as errors"
        );
        assert_degraded(replica, "each replica enforces its share").await;
        let answered = Instant::now();
        let seen = send(replica, 10).await;
        assert_eq!(
            seen,
            HashMap::from([(200, 10)]),
            "the fallback answers: 10 of a share of 15"
        );
        eprintln!(
            "10 requests answered by the fallback in {:?}",
            answered.elapsed()
        );
        let refused = replica.get().await;
        assert_eq!(refused.headers()["ratelimit-limit"], "15");
    }
    // The breaker holds calls back: they are skipped, not made.
    eventually(WITHIN, || async {
        replicas.iter().all(|r| r.calls("", "skipped") > 0.0)
    })
    .await;

    relay.restore();
    let recovered = all_read(&replicas, FALLBACK, 0.0).await;
    for replica in &replicas {
        assert_ready(replica).await;
    }
    // The limit is the fleet's again: 30 a minute across both replicas, less the 2
    // admitted before the delay and the grants that calls timed out on.
    let lost = replicas
        .iter()
        .map(|r| r.calls("acquire", "timeout") + r.calls("refill", "timeout"))
        .sum::<f64>() as usize;
    let (seen, elapsed) = round_robin(&replicas, 60).await;
    let admitted = seen.get(&200).copied().unwrap_or(0);
    let ceiling = 28 + fleet_refilled(started.elapsed());
    let floor = 28usize.saturating_sub(lost);
    assert!(
        (floor..=ceiling).contains(&admitted),
        "admitted {admitted} of the fleet's 28 left ({floor} to {ceiling}; {lost} grants lost to timeouts) in {elapsed:?}: {seen:?}"
    );
    assert!(
        admitted > 2 * 5,
        "more than the 5 left of each replica's share: the fleet's limit"
    );
    eprintln!(
        "slow redis: breaker open {opened:?} after the delay, closed {recovered:?} after it ended; {lost} grants lost; {:?} in all",
        started.elapsed()
    );
    for replica in replicas {
        replica.shutdown().await;
    }
}

/// The fleet's quota usage that Redis holds under `prefix` (every counter).
async fn counted(redis: &redis::aio::MultiplexedConnection, prefix: &str) -> i64 {
    let mut redis = redis.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:q:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut total = 0;
    for key in keys {
        let used: i64 = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        total += used;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_in_redis_admit_the_fleet_s_quota_plus_at_most_one_batch() {
    let Some(url) = redis_url() else { return };
    let redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = unique_prefix("quota");
    let yaml = config(&url, &prefix, "    quotas: true\n    quota_batch: 50ms\n");
    assert!(yaml.contains("    rate_limits: [100/min]\n"));
    let yaml = yaml.replace("    rate_limits: [100/min]\n", "    quota: 10/day\n");
    let mut replicas = fleet(&yaml, 2).await;
    // In turn, one request to each replica, each admitted one counted in Redis (its
    // batch flushed) before the next request: a replica knows the fleet's total as
    // of its own last batch, so it lets through at most what the other admitted
    // since, one request.
    let mut admitted = 0;
    let mut refused = [false; 2];
    for _ in 0..20 {
        for (i, replica) in replicas.iter().enumerate() {
            let response = replica.get().await;
            match response.status().as_u16() {
                200 => {
                    admitted += 1;
                    eventually(WITHIN, || async {
                        counted(&redis, &prefix).await == admitted
                    })
                    .await;
                }
                _ => {
                    assert_eq!(response.headers()["ratelimit-remaining"], "0");
                    assert_envelope(response, 402, "quota_exceeded", "QUOTA_EXCEEDED").await;
                    refused[i] = true;
                }
            }
        }
        if refused == [true, true] {
            break;
        }
    }
    assert_eq!(refused, [true, true], "both replicas refuse in the end");
    assert!(
        (10..=11).contains(&admitted),
        "the fleet admitted {admitted} on a quota of 10 (one batch of one request over it at most)"
    );
    for replica in &replicas {
        assert_eq!(
            replica.calls("quota", "error") + replica.calls("quota", "timeout"),
            0.0
        );
        assert_eq!(replica.get().await.status(), 402, "still refused");
    }
    // A replica started again reads the total before its first request: it gives
    // the used-up quota back to no one.
    let restarted = replicas.remove(0);
    restarted.shutdown().await;
    replicas.push(Replica::start(&yaml).await);
    let response = replicas[1].get().await;
    assert_eq!(response.status(), 402, "the restart gave the quota back");
    assert_eq!(counted(&redis, &prefix).await, admitted);
    eprintln!("quotas in redis: the fleet admitted {admitted} on a quota of 10");
    for replica in replicas {
        replica.shutdown().await;
    }
}

/// A password in the Redis URLs below: it must never be printed.
const PASSWORD: &str = "s3cr3t-pw";

/// The fleet's config with its upstream filled in (for the real binary) and
/// `settings` as the whole of `limits.global`.
fn binary_config(settings: &str) -> String {
    let yaml = config("URL", "authmd", "").replace("{upstream}", "builtin:echo");
    let (head, _) = yaml.split_once("  global:\n").unwrap();
    format!("{head}  global:\n{settings}")
}

/// Runs `check --config FILE` on `yaml` (with a `ca.pem` beside it); its exit
/// code and everything it printed, the file's path replaced by `FILE`.
fn check(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    std::fs::write(
        dir.path().join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authmd-proxy"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        printed.replace(path.to_str().unwrap(), "FILE"),
    )
}

#[test]
fn check_names_each_bad_global_setting_by_line_column_and_path_and_never_the_password() {
    // The `limits.global:` block starts on line 22 of the fleet's config.
    let yaml = binary_config(&format!(
        "    url: \"http://:{PASSWORD}@127.0.0.1:6379/0\"
    nodes: [\"redis://:{PASSWORD}@10.0.0.2:6379\"]
    ca_file: ca.pem
    mode: fast
    on_unavailable: maybe
    max_lease: 0
"
    ));
    assert_eq!(yaml.lines().nth(20), Some("  global:"), "{yaml}");
    let (code, printed) = check(&yaml);
    assert_eq!(code, Some(64), "{printed}");
    for line in [
        "FILE:22:5: limits.global.url: not a Redis URL: write `redis://host:6379/0`, `rediss://host:6380` (TLS) or `redis+unix:///path/to/socket`",
        "FILE:23:5: limits.global.nodes: `nodes` lists a cluster's other seed nodes: set `cluster: true`, or leave it out",
        "FILE:24:5: limits.global.ca_file: `ca_file` is for TLS: write the URL as `rediss://`",
        "FILE:25:5: limits.global.mode: unknown mode `fast`; write `lease` or `exact`",
        "FILE:26:5: limits.global.on_unavailable: unknown behaviour `maybe`; write `local` (each replica enforces its share), `open` or `closed`",
        "FILE:27:5: limits.global.max_lease: must be from 1 to 10000",
        "6 problem(s)",
    ] {
        assert!(printed.contains(line), "missing {line:?} in\n{printed}");
    }
    assert!(!printed.contains(PASSWORD), "{printed}");

    // A `redis://` URL that does not parse, and a bad seed node of a cluster: named
    // by their paths, never quoted.
    let yaml = binary_config(&format!(
        "    url: \"redis://:{PASSWORD}@127.0.0.1:port/0\"
    cluster: true
    nodes: [\"redis://:{PASSWORD}@10.0.0.2:6379\", \"tcp://:{PASSWORD}@10.0.0.3\"]
"
    ));
    let (code, printed) = check(&yaml);
    assert_eq!(code, Some(64), "{printed}");
    for line in [
        "FILE:22:5: limits.global.url: not a Redis URL",
        ": limits.global.nodes[1]: not a Redis URL",
        "2 problem(s)",
    ] {
        assert!(printed.contains(line), "missing {line:?} in\n{printed}");
    }
    assert!(!printed.contains(PASSWORD), "{printed}");

    // A good URL with a password passes, unsaid.
    let (code, printed) = check(&binary_config(&format!(
        "    url: \"redis://:{PASSWORD}@127.0.0.1:1/0\"\n"
    )));
    assert_eq!(code, Some(0), "{printed}");
    assert!(!printed.contains(PASSWORD), "{printed}");
}

/// Runs the binary on `settings` with `RUST_LOG=debug`, until its breaker is
/// open (Redis is on a closed port); then checks that the password is in no log
/// line, no metric and no `/readyz`, though Redis's errors are logged.
async fn password_is_never_printed(settings: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, binary_config(settings)).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authmd-proxy"));
    command
        .args(["run", "--config", path.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "debug");
    let mut proxy = Binary::launch(command).await;
    let admin = proxy.admin.clone().expect("the admin address is printed");
    let http = client();
    let scrape = || async {
        let request = http.get(format!("{admin}/metrics")).send();
        let response = tokio::time::timeout(HANG, request).await.unwrap().unwrap();
        response.text().await.unwrap()
    };
    eventually(WITHIN, || async {
        let metrics = scrape().await;
        metrics.contains(&format!("\n{FALLBACK} 1\n"))
            && metrics.contains("operation=\"heartbeat\",outcome=\"skipped\"")
    })
    .await;
    let response = http
        .get(format!("{}/offers", proxy.url))
        .header("X-Agent-Key", WRITER_KEY)
        .send();
    let response = tokio::time::timeout(HANG, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the fallback admits it");
    let readyz = http.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 200);
    let readyz = readyz.text().await.unwrap();
    assert!(readyz.contains("\"degraded\""), "{readyz}");
    let metrics = scrape().await;
    proxy.signal("TERM");
    proxy.wait().await;
    let mut log = proxy.startup.clone();
    log.extend(proxy.remaining_log_lines());
    assert!(
        log.iter()
            .any(|l| l.contains("redis is unavailable") && l.contains("error=")),
        "the breaker opening is logged, with why:\n{}",
        log.join("\n")
    );
    for (what, text) in [
        ("log", log.join("\n")),
        ("/metrics", metrics),
        ("/readyz", readyz),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password is in the {what}:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_redis_password_is_in_no_log_line_metric_or_readiness_answer() {
    let single = format!(
        "    url: \"redis://user:{PASSWORD}@127.0.0.1:1/0\"
    heartbeat: 100ms
    breaker: {{failures: 2, cooldown: 200ms}}
"
    );
    let cluster = format!(
        "    url: \"redis://user:{PASSWORD}@127.0.0.1:1\"
    cluster: true
    nodes: [\"redis://:{PASSWORD}@127.0.0.1:2\"]
    heartbeat: 100ms
    breaker: {{failures: 2, cooldown: 200ms}}
"
    );
    tokio::join!(
        password_is_never_printed(&single),
        password_is_never_printed(&cluster)
    );
}
