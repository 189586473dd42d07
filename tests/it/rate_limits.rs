//! Rate limits and quotas over real sockets: the exact headers each response
//! carries, the 429 and 402 answers, who counts against which bucket, and quota
//! usage that survives a restart.
//!
//! Windows are minutes to hours long, so nothing refills while a test runs;
//! `RateLimit-Reset` is a whole number of seconds rounded up from the exact time,
//! which the milliseconds a test takes can move by one second at most, so it is
//! compared with that tolerance (every other value exactly).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers of the tests: a failed step fails the test"
)]

use crate::support::{READER_KEY, TestProxy, WRITER_KEY, assert_envelope, client};

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
    rate_limits: [3/hour]
  - name: free
    scopes: [offers:read]
    rate_limits: [2/min, 5/hour]
  - name: metered
    scopes: [offers:read]
    quota: 3/day
keys:
  - id: writer
    hash: blake3:5e3badb54234fb3ed212ad03431ec29d20925e7e39e421d1a4fd63d269624e14
    scopes: [offers:read]
    tier: free
  - id: reader
    hash: blake3:3002225b1a30aefeed4ac8e020b60bf3a476dbb26802044570a85ddf52efc19e
    scopes: [offers:read]
    tier: metered
routes:
  - {path: /offers, methods: [GET], access: anonymous, scopes: [offers:read]}
  - {path: /health, methods: [GET], access: public}
"#;

struct Seen {
    status: u16,
    headers: reqwest::header::HeaderMap,
}

impl Seen {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn number(&self, name: &str) -> u64 {
        self.get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .parse()
            .unwrap()
    }

    /// Limit, Remaining and Policy exactly; Reset to within the second a test may
    /// take; the legacy reset as the same moment in unix time.
    fn assert_limits(&self, limit: u64, remaining: u64, reset: u64, policy: &str) {
        assert_eq!(self.number("ratelimit-limit"), limit, "limit");
        assert_eq!(self.number("ratelimit-remaining"), remaining, "remaining");
        let seen = self.number("ratelimit-reset");
        assert!(
            seen == reset || seen + 1 == reset,
            "reset {seen}, expected {reset}"
        );
        assert_eq!(self.get("ratelimit-policy"), Some(policy));
        assert_eq!(self.number("x-ratelimit-limit"), limit);
        assert_eq!(self.number("x-ratelimit-remaining"), remaining);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let at = self.number("x-ratelimit-reset");
        assert!(
            (now + reset - 2..=now + reset).contains(&at),
            "x-ratelimit-reset {at} is not now ({now}) + {reset}"
        );
    }
}

async fn get(proxy: &TestProxy, headers: &[(&str, &str)]) -> Seen {
    let mut request = client().get(proxy.url("/offers"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Seen {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
    }
}

#[tokio::test]
async fn every_response_counts_down_and_the_429_says_when_to_come_back() {
    let proxy = TestProxy::start(CONFIG, None).await;
    // Anonymous, by client address: 3 per hour, one every 20 minutes.
    let first = get(&proxy, &[]).await;
    assert_eq!(first.status, 200);
    first.assert_limits(3, 2, 1200, "3;w=3600");
    get(&proxy, &[]).await.assert_limits(3, 1, 2400, "3;w=3600");
    // The last request of the window: nothing left, and the next one is 20 minutes away.
    get(&proxy, &[]).await.assert_limits(3, 0, 1200, "3;w=3600");
    let response = client().get(proxy.url("/offers")).send().await.unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1199..=1200).contains(&retry_after), "{retry_after}");
    let reset: u64 = response.headers()["ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        reset, retry_after,
        "Reset names the same moment as Retry-After"
    );
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    let body = assert_envelope(response, 429, "rate_limit_exceeded", "RATE_LIMIT_EXCEEDED").await;
    assert_eq!(body["docs"], format!("{}/auth.md#rate-limits", proxy.url));

    // A key has buckets of its own, in its tier's two windows; the tightest is
    // reported and the policy lists both.
    let key = [("x-agent-key", WRITER_KEY)];
    get(&proxy, &key)
        .await
        .assert_limits(2, 1, 30, "2;w=60, 5;w=3600");
    get(&proxy, &key)
        .await
        .assert_limits(2, 0, 30, "2;w=60, 5;w=3600");
    let refused = get(&proxy, &key).await;
    assert_eq!(refused.status, 429);
    assert!((29..=30).contains(&refused.number("retry-after")));
    refused.assert_limits(2, 0, 30, "2;w=60, 5;w=3600");

    // An anonymous identifier is a subject of its own, apart from the address.
    let anonymous = [("x-agent-key", "agent-7f3a")];
    get(&proxy, &anonymous)
        .await
        .assert_limits(3, 2, 1200, "3;w=3600");
    let other = [("x-agent-key", "agent-9b1c")];
    get(&proxy, &other)
        .await
        .assert_limits(3, 2, 1200, "3;w=3600");

    // Public routes are limited by address in the anonymous tier; that bucket is
    // the one the first requests emptied.
    let health = client().get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 429);
}

#[tokio::test]
async fn a_used_up_quota_is_402_and_survives_a_restart() {
    let proxy = TestProxy::start(CONFIG, None).await;
    let key = [("x-agent-key", READER_KEY)];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let midnight = 86_400 - now % 86_400;
    for remaining in [2, 1, 0] {
        let seen = get(&proxy, &key).await;
        assert_eq!(seen.status, 200);
        seen.assert_limits(3, remaining, midnight, "3;w=86400");
    }
    let response = client()
        .get(proxy.url("/offers"))
        .header("x-agent-key", READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert!(response.headers().get("payment-required").is_none());
    assert_envelope(response, 402, "quota_exceeded", "QUOTA_EXCEEDED").await;

    // The usage was written to the store on shutdown and is read back at start.
    let proxy = proxy.restart().await;
    let again = get(&proxy, &key).await;
    assert_eq!(again.status, 402, "the restart gave the quota back");
    assert_eq!(again.number("ratelimit-remaining"), 0);
    // Another key of another tier is untouched.
    let other = get(&proxy, &[("x-agent-key", WRITER_KEY)]).await;
    assert_eq!(other.status, 200);
}

#[tokio::test]
async fn a_key_s_own_limits_and_structured_headers() {
    let config = CONFIG
        .replace(
            "    tier: free\n",
            "    tier: free\n    rate_limits: [1/hour]\n    quota: 10/month\n",
        )
        .replace("routes:", "limits:\n  headers: [structured]\nroutes:");
    let proxy = TestProxy::start(&config, None).await;
    let key = [("x-agent-key", WRITER_KEY)];
    let seen = get(&proxy, &key).await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.get("ratelimit-policy"),
        Some("\"writer-3600s\";q=1;w=3600, \"writer-month\";q=10;w=2592000")
    );
    let ratelimit = seen.get("ratelimit").unwrap();
    assert!(
        ratelimit.starts_with("\"writer-3600s\";r=0;t=3600, \"writer-month\";r=9;t="),
        "{ratelimit}"
    );
    for absent in ["ratelimit-limit", "x-ratelimit-limit"] {
        assert!(seen.get(absent).is_none(), "{absent}");
    }
    let refused = get(&proxy, &key).await;
    assert_eq!(refused.status, 429);
    assert!(
        refused
            .get("ratelimit")
            .unwrap()
            .starts_with("\"writer-3600s\";r=0;t=3600, \"writer-month\";r=9;"),
        "a refused request is not counted against the quota: {:?}",
        refused.get("ratelimit")
    );
}

#[tokio::test]
async fn forwarded_for_separates_clients_only_behind_a_trusted_proxy() {
    let run = |trusted: &str| {
        CONFIG.replace(
            "routes:",
            &format!("limits:\n  trusted_proxies: [{trusted}]\nroutes:"),
        )
    };
    // Behind a trusted proxy each forwarded client has its own bucket.
    let proxy = TestProxy::start(&run("127.0.0.0/8"), None).await;
    for client_ip in ["203.0.113.1", "203.0.113.2"] {
        let xff = [("x-forwarded-for", client_ip)];
        get(&proxy, &xff)
            .await
            .assert_limits(3, 2, 1200, "3;w=3600");
    }
    // A peer that is not trusted cannot choose its bucket.
    let proxy = TestProxy::start(&run("10.0.0.0/8"), None).await;
    get(&proxy, &[("x-forwarded-for", "203.0.113.1")])
        .await
        .assert_limits(3, 2, 1200, "3;w=3600");
    get(&proxy, &[("x-forwarded-for", "203.0.113.2")])
        .await
        .assert_limits(3, 1, 2400, "3;w=3600");
}

#[tokio::test]
async fn bad_limits_are_config_errors_naming_the_field() {
    let config = CONFIG
        .replace("rate_limits: [3/hour]", "rate_limits: [3/fortnight, 0/s]")
        .replace("quota: 3/day", "quota: 3/week")
        .replace(
            "routes:",
            "limits:\n  headers: [draft-06, structured]\n  trusted_proxies: [10.0.0.300/8]\nroutes:",
        );
    let errors = authmd_proxy::config::Config::from_yaml_str(
        &config,
        "limits.yaml",
        &authmd_proxy::config::Overrides::default(),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "tiers[0].rate_limits[0]: `3/fortnight` is not a rate",
        "tiers[0].rate_limits[1]: `0/s`: a rate allows at least one request",
        "tiers[2].quota: `3/week` is not a quota",
        "limits.headers: `draft-06` and `structured` both send `RateLimit-Policy`",
        "limits.trusted_proxies[0]: `10.0.0.300/8` is not an address or network",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert!(errors.starts_with("limits.yaml:"), "{errors}");
}

#[tokio::test]
async fn an_unmetered_route_counts_against_nothing_and_is_served_past_a_used_up_allowance() {
    let config = CONFIG.replace(
        "  - {path: /health, methods: [GET], access: public}",
        "  - {path: /health, methods: [GET], access: public}\n  - {path: /pricing, methods: [GET], access: public, metered: false}",
    );
    let proxy = TestProxy::start(&config, None).await;
    let pricing = || async {
        let response = client().get(proxy.url("/pricing")).send().await.unwrap();
        Seen {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
        }
    };
    // Reading the pricing page first takes nothing from the 3 per hour.
    for _ in 0..5 {
        let seen = pricing().await;
        assert_eq!(seen.status, 200);
        assert_eq!(seen.get("ratelimit-limit"), None, "no limit to report");
    }
    let first = get(&proxy, &[]).await;
    first.assert_limits(3, 2, 1200, "3;w=3600");
    get(&proxy, &[]).await;
    get(&proxy, &[]).await;
    assert_eq!(get(&proxy, &[]).await.status, 429);
    // Past the allowance the metered route is refused, the unmetered one served.
    assert_eq!(pricing().await.status, 200);
}
