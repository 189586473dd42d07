//! The address budget of anonymous identifiers, over real sockets: a client that
//! makes up a new `X-Agent-Key` per request gets at most `anonymous_per_address`
//! identifiers' worth of the anonymous tier, a few agents behind one address each
//! get their own allowance, keys are not counted against it, it can be turned off,
//! and a bad setting is a config error naming the field.
//!
//! Every request comes from 127.0.0.1. Windows are a minute long: the default
//! budget of 20 a minute refills one request every 3 seconds, which a test's few
//! dozen requests take far less than; where a count depends on it, the test allows
//! for what refilled while it ran. Each test counts what reached a real upstream.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

use crate::support::{self, TestProxy, WRITER_KEY, assert_envelope, client};

/// Anonymous agents may make 5 requests a minute; keys of the `free` tier 100.
const CONFIG: &str = r#"
upstream: {url: "{upstream}"}
credentials:
  headers:
    - {name: X-Agent-Key, anonymous: true}
  key_prefixes: [ak_live]
scopes:
  offers:read: Read offers
tiers:
  - name: anonymous
    scopes: [offers:read]
    rate_limits: [5/min]
  - name: free
    scopes: [offers:read]
    rate_limits: [100/min]
keys:
  - id: writer
    hash: blake3:5e3badb54234fb3ed212ad03431ec29d20925e7e39e421d1a4fd63d269624e14
    scopes: [offers:read]
    tier: free
routes:
  - {path: /offers, methods: [GET], access: anonymous, scopes: [offers:read]}
"#;

/// `CONFIG` with `limits:` lines added.
fn with_limits(lines: &str) -> String {
    CONFIG.replace("routes:", &format!("limits:\n{lines}routes:"))
}

/// A real upstream counting the requests that reach it.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    let addr = support::upstream(move |_request: hyper::Request<hyper::body::Incoming>| {
        count.fetch_add(1, Ordering::Relaxed);
        async { hyper::Response::new(authmd_proxy::body::Body::full("offers")) }
    })
    .await;
    (addr, served)
}

/// A proxy and one client for all of a test's requests.
struct Agents {
    proxy: TestProxy,
    client: reqwest::Client,
    started: Instant,
}

impl Agents {
    async fn start(config: &str, upstream: SocketAddr) -> Agents {
        Agents {
            proxy: TestProxy::start(config, Some(upstream)).await,
            client: client(),
            started: Instant::now(),
        }
    }

    /// One GET /offers with `X-Agent-Key: key` (none when empty).
    async fn send(&self, key: &str) -> reqwest::Response {
        let mut request = self.client.get(self.proxy.url("/offers"));
        if !key.is_empty() {
            request = request.header("x-agent-key", key);
        }
        request.send().await.unwrap()
    }

    async fn status(&self, key: &str) -> u16 {
        self.send(key).await.status().as_u16()
    }

    /// Sends `per_id` requests with each of `ids` identifiers named after
    /// `prefix`, one identifier after another; returns how many were served.
    async fn rotate(&self, prefix: &str, ids: u32, per_id: u32) -> u32 {
        let mut served = 0;
        for id in 0..ids {
            let key = format!("{prefix}-{id}");
            for _ in 0..per_id {
                if self.status(&key).await == 200 {
                    served += 1;
                }
            }
        }
        served
    }

    /// Requests the default budget (20 a minute) has refilled since the start.
    fn refilled(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs() / 3).unwrap()
    }
}

#[tokio::test]
async fn made_up_identifiers_from_one_address_share_four_allowances_by_default() {
    let (upstream, reached) = counting_upstream().await;
    let agents = Agents::start(CONFIG, upstream).await;
    // Twenty identifiers would be a hundred requests if each got its own 5.
    let served = agents.rotate("made-up", 20, 5).await;
    let most = 20 + agents.refilled();
    assert!(
        (20..=most).contains(&served),
        "{served} served: four identifiers' worth of 5 a minute is 20"
    );
    assert_eq!(reached.load(Ordering::Relaxed), u64::from(served));

    // Yet another identifier is refused with a normal 429 whose headers tell the
    // address budget, the window that refused it.
    let mut refused = None;
    for fresh in 0..5 {
        let response = agents.send(&format!("made-up-fresh-{fresh}")).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
    }
    let response = refused.unwrap();
    let headers = response.headers().clone();
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    assert_eq!(header("ratelimit-limit"), "20");
    assert_eq!(header("ratelimit-remaining"), "0");
    assert_eq!(header("ratelimit-policy"), "20;w=60");
    assert_eq!(header("x-ratelimit-limit"), "20");
    let retry_after: u64 = header("retry-after").parse().unwrap();
    assert!(
        (1..=3).contains(&retry_after),
        "one request every 3 s: {retry_after}"
    );
    assert_eq!(header("ratelimit-reset"), header("retry-after"));
    let served = reached.load(Ordering::Relaxed);
    assert_envelope(response, 429, "rate_limit_exceeded", "RATE_LIMIT_EXCEEDED").await;
    assert_eq!(
        reached.load(Ordering::Relaxed),
        served,
        "a refusal reaches nothing"
    );
}

#[tokio::test]
async fn a_few_agents_behind_one_address_each_get_their_own_allowance() {
    let (upstream, reached) = counting_upstream().await;
    let agents = Agents::start(CONFIG, upstream).await;
    for agent in ["agent-a", "agent-b", "agent-c"] {
        for n in 0..5 {
            assert_eq!(agents.status(agent).await, 200, "{agent} request {n}");
        }
        // The sixth is refused by the agent's own window, which the headers tell.
        let refused = agents.send(agent).await;
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["ratelimit-limit"], "5");
        assert_eq!(refused.headers()["ratelimit-policy"], "5;w=60");
    }
    assert_eq!(reached.load(Ordering::Relaxed), 15);
    // Their refusals took nothing from the budget: a fourth agent gets its 5 too.
    assert_eq!(agents.rotate("agent-d", 1, 6).await, 5);
    if agents.refilled() == 0 {
        // The 20 of the budget are used up.
        assert_eq!(agents.status("agent-e").await, 429);
    }

    // While the budget has fewer requests left than an identifier's own window,
    // the headers tell the budget.
    let agents = Agents::start(CONFIG, upstream).await;
    assert_eq!(agents.rotate("agent", 3, 5).await, 15);
    assert_eq!(agents.rotate("agent-w", 1, 2).await, 2);
    let response = agents.send("agent-x").await;
    assert_eq!(response.status(), 200);
    let remaining: u32 = response.headers()["ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    if agents.refilled() == 0 {
        assert_eq!(response.headers()["ratelimit-limit"], "20");
        assert_eq!(response.headers()["ratelimit-policy"], "20;w=60");
        assert_eq!(remaining, 2, "20 less the 18 served");
    }
}

#[tokio::test]
async fn keys_and_requests_without_an_identifier_are_not_counted_against_it() {
    let (upstream, _) = counting_upstream().await;
    let agents = Agents::start(CONFIG, upstream).await;
    // A key's requests leave the budget whole...
    for n in 0..30 {
        assert_eq!(agents.status(WRITER_KEY).await, 200, "key request {n}");
    }
    let served = agents.rotate("made-up", 20, 5).await;
    assert!((20..=20 + agents.refilled()).contains(&served), "{served}");
    // ...and a used-up budget leaves the key its own allowance.
    let key = agents.send(WRITER_KEY).await;
    assert_eq!(key.status(), 200);
    assert_eq!(key.headers()["ratelimit-limit"], "100");
    // 100 a minute less the 31 served, plus one for each 0.6 s the test has run
    // (a slow machine refills the bucket meanwhile).
    let remaining: u32 = key.headers()["ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let refilled = u32::try_from(agents.started.elapsed().as_millis() / 600).unwrap();
    assert!(
        (69..=69 + refilled).contains(&remaining),
        "{remaining} remaining, {refilled} refilled"
    );
    // A request without an identifier counts against the address's own bucket.
    assert_eq!(agents.status("").await, 200);
}

#[tokio::test]
async fn the_budget_is_configurable_and_can_be_turned_off() {
    let (upstream, reached) = counting_upstream().await;
    let twice = with_limits("  anonymous_per_address: 2\n");
    let agents = Agents::start(&twice, upstream).await;
    let served = agents.rotate("made-up", 20, 5).await;
    // Twice 5 a minute refills one request every 6 seconds.
    let refilled = agents.refilled() / 2;
    assert!((10..=10 + refilled).contains(&served), "{served}");

    let off = with_limits("  anonymous_per_address: 0\n");
    let agents = Agents::start(&off, upstream).await;
    assert_eq!(
        agents.rotate("made-up", 20, 5).await,
        100,
        "without a budget every identifier has its own allowance"
    );
    assert_eq!(reached.load(Ordering::Relaxed), u64::from(served) + 100);
}

#[tokio::test]
async fn a_bad_budget_is_a_config_error_naming_the_field() {
    for bad in ["-1", "four", "[4]"] {
        let config = with_limits(&format!("  anonymous_per_address: {bad}\n"));
        let errors = authmd_proxy::config::Config::from_yaml_str(
            &config,
            "limits.yaml",
            &authmd_proxy::config::Overrides::default(),
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(errors.starts_with("limits.yaml:"), "{errors}");
        assert!(
            errors.contains(": limits.anonymous_per_address: expected a whole number"),
            "{bad}: {errors}"
        );
    }
}
