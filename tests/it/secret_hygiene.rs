//! Secret hygiene: the real binary, logging everything at debug (its own lines,
//! hyper's, the access log), is driven through every flow that handles a secret:
//! registration (key and claim token), the key endpoints (created and rotated
//! secrets), the token endpoint (client secrets, access tokens), the claim, token
//! revocation, and refusals of forged and malformed credentials. Then no log line
//! and no metric may contain any of those secrets, or any `Authorization` value that
//! was sent.
//!
//! The scan proves it can see: a canary sent in a request path (which the proxy
//! logs at debug when it refuses the request) must be found by the same scan. The
//! store's files on disk are scanned for the same secrets at the end. The scans are
//! shared with `secret_hygiene_interactive`, which drives the flow for people.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use authmd_proxy::body::Body;
use serde_json::{Value, json};

use crate::support;
use crate::support::{Binary, WRITER_KEY, client};

const CONFIG: &str = r#"
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
upstream: {url: "{upstream}"}
log: {level: debug, format: json, access: info}
credentials:
  headers:
    - {name: X-Agent-Key, anonymous: true}
    - {name: X-API-Key}
  key_prefixes: [ak_live]
scopes:
  offers:read: Read
  offers:write: Write
tiers:
  - {name: anonymous, scopes: [offers:read], rate_limits: [1000/min]}
  - {name: free, scopes: [offers:read, offers:write], rate_limits: [1000/min]}
  - {name: verified, scopes: [offers:read, offers:write]}
registration:
  tier: free
  claimed_tier: verified
  require_identity_to_claim: false
  per_hour: 100
tokens:
  api_keys: true
  anonymous: {tier: anonymous, scopes: [offers:read], per_hour: 100}
key_management:
  anonymous_tier: free
keys:
  - id: example-writer
    hash: blake3:5e3badb54234fb3ed212ad03431ec29d20925e7e39e421d1a4fd63d269624e14
    scopes: [offers:read, offers:write]
    tier: free
routes:
  - {path: /offers, methods: [GET], access: anonymous, scopes: [offers:read]}
  - {path: /offers, methods: [POST], scopes: [offers:write]}
"#;

/// What the scan looks for: every secret, and its random part without the prefix
/// (a log that cut the prefix off would still leak it).
#[derive(Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// Adds `secret`, and what follows its prefix: the text after its first `_`
    /// and after its last (`ak_live_<random>` has two, and a base64url random
    /// part may hold `_` itself), each when long enough to be a secret.
    pub(crate) fn add(&mut self, secret: &str) {
        assert!(secret.len() >= 20, "not a secret: {secret}");
        self.push(secret);
        let cuts = [secret.split_once('_'), secret.rsplit_once('_')];
        for (_, random) in cuts.into_iter().flatten() {
            if random.len() >= 20 {
                self.push(random);
            }
        }
    }

    fn push(&mut self, text: &str) {
        if !self.0.iter().any(|s| s == text) {
            self.0.push(text.to_owned());
        }
    }

    /// How many texts the scan looks for.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The first secret found in `text`, if any.
    pub(crate) fn found_in(&self, text: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|s| text.contains(s.as_str()))
            .map(String::as_str)
    }
}

/// Scrapes the metrics from the admin listener of `proxy`: none may hold a secret.
pub(crate) async fn assert_metrics_clean(
    proxy: &Binary,
    http: &reqwest::Client,
    secrets: &Secrets,
) {
    let admin = proxy
        .admin
        .clone()
        .expect("the admin listener serves the metrics");
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authmd_requests_total"),
        "scraped: {metrics}"
    );
    if let Some(secret) = secrets.found_in(&metrics) {
        panic!("a secret is in the metrics: {secret}");
    }
}

/// Sends the canary (a path the proxy refuses, which its debug line names), stops
/// `proxy`, and scans every line it wrote, from its first startup line to its
/// last: the canary must be found (the scan sees what is logged), and no secret.
/// Returns the lines after the listening line.
pub(crate) async fn assert_log_clean(
    proxy: &mut Binary,
    http: &reqwest::Client,
    secrets: &Secrets,
) -> Vec<String> {
    // Sent last, so that once its line is read every earlier line has been.
    let canary = format!("canary{}", "Q7".repeat(12));
    let response = http
        .get(format!("{}/{canary}", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    proxy.signal("TERM");
    assert!(proxy.wait().await.success());
    let lines = proxy.remaining_log_lines();
    assert!(
        lines.iter().any(|line| line.contains(&canary)),
        "the scan sees what is logged: the canary must be found in {} lines",
        lines.len()
    );
    assert!(
        lines.len() > 40,
        "debug logging was on: {} lines",
        lines.len()
    );
    for line in proxy.startup.iter().chain(&lines) {
        if let Some(secret) = secrets.found_in(line) {
            panic!("a secret is in a log line: {secret}\n{line}");
        }
    }
    lines
}

/// The files of the store in `data` (the database and its write-ahead log) hold
/// hashes, never a secret.
pub(crate) fn assert_not_at_rest(data: &std::path::Path, secrets: &Secrets) {
    let mut stored = 0;
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        stored += bytes.len();
        let text = String::from_utf8_lossy(&bytes);
        if let Some(secret) = secrets.found_in(&text) {
            panic!("a secret is stored in {}: {secret}", path.display());
        }
    }
    assert!(stored > 0, "the store wrote its files");
}

pub(crate) async fn ok(response: reqwest::Response, what: &str) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{what}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_a_metric() {
    let upstream =
        support::upstream(|_request| async { http::Response::new(Body::full("{}")) }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        CONFIG.replace("{upstream}", &format!("http://{upstream}")),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authmd-proxy"));
    command
        .args(["run", "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG");
    let mut proxy = Binary::launch(command).await;
    assert!(
        proxy.admin.is_some(),
        "the admin listener serves the metrics"
    );
    let url = |path: &str| format!("{}{path}", proxy.url);
    let http = client();
    let mut secrets = Secrets::default();
    secrets.add(WRITER_KEY);

    // Registration: a key and a claim token.
    let registered = ok(
        http.post(url("/agent/auth/register"))
            .json(&json!({"type": "anonymous", "client_name": "hygiene"}))
            .send()
            .await
            .unwrap(),
        "register",
    )
    .await;
    let key = registered["credential"].as_str().unwrap().to_owned();
    let key_id = registered["key_id"].as_str().unwrap().to_owned();
    let claim_token = registered["claim_token"].as_str().unwrap().to_owned();
    secrets.add(&key);
    secrets.add(&claim_token);

    // The key in each header that carries one, and the config key.
    for (name, value) in [
        ("authorization", format!("Bearer {key}")),
        ("x-api-key", key.clone()),
        ("x-agent-key", key.clone()),
        ("authorization", format!("Bearer {WRITER_KEY}")),
    ] {
        ok(
            http.post(url("/offers"))
                .header(name, value)
                .send()
                .await
                .unwrap(),
            "a keyed request",
        )
        .await;
    }

    // Key management: a created and a rotated secret.
    let created = ok(
        http.post(url("/api/v1/auth/keys"))
            .bearer_auth(&key)
            .json(&json!({"name": "second", "scopes": ["offers:read"]}))
            .send()
            .await
            .unwrap(),
        "create",
    )
    .await;
    let second = created["key"].as_str().unwrap().to_owned();
    secrets.add(&second);
    let rotated = ok(
        http.post(url(&format!(
            "/api/v1/auth/keys/{}/rotate",
            created["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap(),
        "rotate",
    )
    .await;
    secrets.add(rotated["key"].as_str().unwrap());
    // An anonymous agent's own key, and its identifier (not a secret, but never
    // stored or logged as such either).
    let own = ok(
        http.post(url("/api/v1/auth/keys"))
            .header("x-agent-key", "hygiene-agent-identifier-0001")
            .json(&json!({"name": "own"}))
            .send()
            .await
            .unwrap(),
        "anonymous create",
    )
    .await;
    secrets.add(own["key"].as_str().unwrap());

    // Tokens: the key as a client secret (form and Basic), and anonymous ones.
    let token = ok(
        http.post(url("/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", key_id.as_str()),
                ("client_secret", key.as_str()),
            ])
            .send()
            .await
            .unwrap(),
        "token",
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.add(&token);
    let basic = ok(
        http.post(url("/oauth2/token"))
            .basic_auth(&key_id, Some(&key))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap(),
        "token with Basic",
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.add(&basic);
    let anonymous = ok(
        http.post(url("/oauth2/token"))
            .json(&json!({"grant_type": "client_credentials"}))
            .send()
            .await
            .unwrap(),
        "anonymous token",
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.add(&anonymous);
    for bearer in [&token, &basic, &anonymous] {
        ok(
            http.get(url("/offers"))
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap(),
            "a token request",
        )
        .await;
    }

    // The claim, then revocations.
    ok(
        http.post(url("/agent/auth/claim"))
            .json(&json!({"claim_token": claim_token}))
            .send()
            .await
            .unwrap(),
        "claim",
    )
    .await;
    ok(
        http.post(url("/oauth2/revoke"))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap(),
        "revoke a token",
    )
    .await;
    ok(
        http.post(url("/agent/auth/revoke"))
            .json(&json!({"credential": second}))
            .send()
            .await
            .unwrap(),
        "revoke a key",
    )
    .await;

    // Refusals: a revoked token and key, forged and malformed credentials, a wrong
    // client secret. Each is refused, and none may be logged either.
    // The key with its last character changed (never to itself: keys are random).
    let changed = if key.ends_with('X') { 'Y' } else { 'X' };
    let forged = format!("{}{changed}", &key[..key.len() - 1]);
    let wrong_secret = format!("ak_live_{}", "Z".repeat(35));
    secrets.add(&forged);
    secrets.add(&wrong_secret);
    let garbage_jwt = format!("eyJhbGciOiJIUzI1NiJ9.{}.c2lnbmF0dXJl", "A".repeat(40));
    secrets.add(&garbage_jwt);
    for (name, value) in [
        ("authorization", format!("Bearer {token}")),
        ("authorization", format!("Bearer {second}")),
        ("authorization", format!("Bearer {forged}")),
        ("authorization", format!("Bearer {garbage_jwt}")),
        (
            "authorization",
            format!("Basic {}", "c2VjcmV0LXVzZXI6c2VjcmV0LXBhc3N3b3Jk"),
        ),
        ("x-api-key", wrong_secret.clone()),
    ] {
        let response = http
            .post(url("/offers"))
            .header(name, &value)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{name} was accepted");
        if name == "authorization" {
            secrets.add(value.split_once(' ').unwrap().1);
        }
    }
    let response = http
        .post(url("/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", key_id.as_str()),
            ("client_secret", wrong_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    assert_metrics_clean(&proxy, &http, &secrets).await;
    assert_log_clean(&mut proxy, &http, &secrets).await;
    // At rest: the store's files (the database and its write-ahead log) hold hashes,
    // never a secret.
    assert_not_at_rest(&dir.path().join("data"), &secrets);
}
