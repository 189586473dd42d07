//! BotVisibility, reproduced: the proxy started from `tests/seeds/botvisibility.yaml`
//! in front of a plain upstream (a scanner that knows nothing about auth), and every
//! request BotVisibility's auth.md shows sent to it over real sockets: the no-auth
//! free tier on `GET /api/scan`, the anonymous OAuth 2.0 client-credentials token from
//! `POST /api/agent/token` (JSON body) raising the daily allowance, the `X-API-Key`
//! alternative with a fixed higher limit, the discovery documents, the `RateLimit-*`
//! and `X-RateLimit-*` headers, HTTP 402 with x402 payment requirements over the
//! allowance (and a payment, verified and settled by a local facilitator that follows
//! the x402 protocol), rotation and expiry of tokens, the operator revoking a key,
//! the JSON error envelope, and the generated `/auth.md` against the original's sets.
//!
//! Every assertion names the line of the seed document it checks. The facts copied
//! from the seed (with their lines) are the constants below; nothing here reads the
//! seed file.

use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::common::{
    Seed, Seen, Upstream, decode_jwt, get, header, here, json_response, ok_json, post_form,
    post_json, scope_table,
};
use crate::support::{TestProxy, assert_envelope, client, json, www};

/// The configuration under test.
const CONFIG: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/seeds/botvisibility.yaml"
));

/// The seed document. Lines 78-79 describe the error envelope, which OAuth and x402
/// answers extend.
const SEED: Seed = Seed::new("BotVisibility").with_envelope(
    &[
        (
            78,
            r#"All error responses are JSON ... { "error", "code", "message", "docs" }"#,
        ),
        (79, "docs"),
    ],
    &["error_description", "x402Version", "accepts"],
);

/// The test keys declared (by hash) in the configuration.
const PARTNER_KEY: &str = "bv_live_LxcS45Jxryeh58KrdfsmuvewHyBmYCKvH1BTUfs";
const BULK_KEY: &str = "bv_live_DM8r2Cgwu81UN7EZkoxskdNUhEseimhT11eGwxq";

/// What the scanner behind the proxy answers to every scan.
const REPORT: &str = r#"{"url":"example.com","score":87,"checks":[]}"#;

/// seed 9, 54: the scan request as the document writes it (path and query).
const SCAN: &str = "/api/scan?url=example.com&format=json";
/// seed 20, 47: the token endpoint.
const TOKEN: &str = "/api/agent/token";
/// seed 49: the token request body, byte for byte.
const TOKEN_BODY: &str = r#"{"grant_type":"client_credentials","scope":"scan:read"}"#;

/// The allowances of the configuration (seed 10, 31: daily).
const FREE_PER_DAY: u64 = 20;
const TOKEN_PER_DAY: u64 = 200;
const PARTNER_PER_DAY: u64 = 2000;
const BULK_PER_DAY: u64 = 10_000;

// ---- The original document's sets (for the /auth.md comparison) -----------------

/// seed 8-12, 28-32: the methods, each with a phrase the generated document must use
/// for it.
const METHODS: &[(u32, &str, &str)] = &[
    (30, "No auth — just call the endpoint", "| Anonymous |"),
    (
        31,
        "OAuth 2.0 client-credentials token (`scan:read`)",
        "| Anonymous access token |",
    ),
    (59, "`X-API-Key: <key>`", "`X-API-Key: <key>`"),
    (
        53,
        "Authorization: Bearer <access_token>",
        "`Authorization: Bearer <token>`",
    ),
];
/// seed 9, 18-20, 79: the endpoints (paths on the one origin).
const ENDPOINTS: &[(u32, &str)] = &[
    (9, "/api/scan"),
    (18, "/.well-known/oauth-authorization-server"),
    (19, "/.well-known/oauth-protected-resource"),
    (20, "/api/agent/token"),
    (79, "/openapi.json"),
];
/// seed 11, 23: every scope the original names.
const SCOPES: &[(u32, &str)] = &[(23, "scan:read")];
/// seed 10, 63-66: the limits: a daily allowance, the header families, the 402.
const LIMITS: &[(u32, &str)] = &[
    (10, "per UTC day"),
    (63, "`X-RateLimit-Limit`"),
    (63, "`X-RateLimit-Remaining`"),
    (63, "`X-RateLimit-Reset`"),
    (64, "`RateLimit-Limit`"),
    (64, "`RateLimit-Remaining`"),
    (64, "`RateLimit-Reset`"),
    (64, "`RateLimit-Policy`"),
    (65, "`402 PAYMENT_REQUIRED`"),
    (65, "[x402]"),
];
/// seed 65, 78-79: the errors: the 402 and the envelope every error has.
const ERRORS: &[(u32, &str)] = &[
    (65, "| 402 | `PAYMENT_REQUIRED` |"),
    (78, r#"`{"error", "code", "message", "docs"}`"#),
];
/// seed 36-41, 73-74: no registration, no claim, keys from (and revoked by) the
/// operator through the contact page.
const LIFECYCLE: &[(u32, &str)] = &[
    (
        39,
        "API keys are issued by the operator of this API (https://botvisibility.com/contact)",
    ),
    (36, "This server offers no self-service registration."),
    (36, "There is no claim step"),
    (
        74,
        "If a key leaks, ask the operator to revoke it (https://botvisibility.com/contact)",
    ),
];

// ---- Helpers -------------------------------------------------------------------

/// The proxy from `config` (the seed's, or one derived from its text) in front of a
/// fresh scanner: an upstream that answers every request with its JSON report and
/// records what it received.
async fn start(config: &str) -> (TestProxy, Upstream) {
    let scanner = Upstream::answering(REPORT).await;
    (scanner.proxy(config).await, scanner)
}

/// `GET /api/scan?url=example.com&format=json` with `headers`.
async fn scan(proxy: &TestProxy, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(proxy.url(SCAN));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// seed 47-49: the token request exactly as the document shows it.
async fn request_token(proxy: &TestProxy) -> reqwest::Response {
    post_json(proxy, TOKEN, TOKEN_BODY).await
}

/// seed 50: asserts the token answer and returns the access token.
async fn token_from(response: reqwest::Response) -> String {
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(50, r#"-> { "access_token": "...", ... }"#)
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{}",
        SEED.at(50, "a JSON answer")
    );
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "{}",
        SEED.at(70, "short-lived bearer tokens (never cached)")
    );
    let body = json(response).await;
    assert_eq!(
        body["token_type"],
        "Bearer",
        "{}: {body}",
        SEED.at(50, r#""token_type": "Bearer""#)
    );
    assert_eq!(
        body["scope"],
        "scan:read",
        "{}: {body}",
        SEED.at(50, r#""scope": "scan:read""#)
    );
    assert_eq!(
        body["expires_in"],
        3600,
        "{}: {body}",
        SEED.at(70, "Tokens are short-lived")
    );
    let token = body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: {body}", SEED.at(50, r#""access_token": "...""#)));
    assert_eq!(
        token.split('.').count(),
        3,
        "{}: {token}",
        SEED.at(50, "access_token (a signed JWT)")
    );
    token.to_owned()
}

async fn new_token(proxy: &TestProxy) -> String {
    token_from(request_token(proxy).await).await
}

fn number(headers: &reqwest::header::HeaderMap, name: &str, line: u32) -> u64 {
    header(headers, name)
        .unwrap_or_else(|| panic!("{}: no {name} in {headers:?}", SEED.at(line, name)))
        .parse()
        .unwrap_or_else(|_| panic!("{}: {name} is not a number", SEED.at(line, name)))
}

/// seed 63-64: both header families, for a daily allowance of `limit` with
/// `remaining` left. The reset of a daily allowance is the next UTC midnight (a
/// request may straddle a second, so one second of tolerance).
fn assert_daily_headers(headers: &reqwest::header::HeaderMap, limit: u64, remaining: u64) {
    let now = u64::try_from(authmd_proxy::clock::unix_now()).unwrap();
    let midnight = 86_400 - now % 86_400;
    assert_eq!(
        number(headers, "ratelimit-limit", 64),
        limit,
        "{}",
        SEED.at(64, "RateLimit-Limit")
    );
    assert_eq!(
        number(headers, "ratelimit-remaining", 64),
        remaining,
        "{}",
        SEED.at(64, "RateLimit-Remaining")
    );
    let reset = number(headers, "ratelimit-reset", 64);
    assert!(
        (midnight.saturating_sub(2)..=midnight + 1).contains(&reset),
        "{}: {reset}, expected about {midnight} (the next UTC midnight)",
        SEED.at(64, "RateLimit-Reset")
    );
    assert_eq!(
        header(headers, "ratelimit-policy"),
        Some(format!("{limit};w=86400").as_str()),
        "{}",
        SEED.at(64, "RateLimit-Policy")
    );
    assert_eq!(
        number(headers, "x-ratelimit-limit", 63),
        limit,
        "{}",
        SEED.at(63, "X-RateLimit-Limit")
    );
    assert_eq!(
        number(headers, "x-ratelimit-remaining", 63),
        remaining,
        "{}",
        SEED.at(63, "X-RateLimit-Remaining")
    );
    let at = number(headers, "x-ratelimit-reset", 63);
    assert!(
        (now + reset - 2..=now + reset + 2).contains(&at),
        "{}: {at} is not now ({now}) + {reset} as a unix time",
        SEED.at(63, "X-RateLimit-Reset")
    );
}

/// seed 78-79: an error answer in the envelope (the extras an OAuth or x402 answer
/// adds, no others), with `status` and `code` as seed line `line` says; returns the
/// body.
async fn assert_error(response: reqwest::Response, status: u16, code: &str, line: u32) -> Value {
    let at = SEED.at(line, &format!("{status} {code}"));
    SEED.envelope(response, status, code, &at).await.body
}

/// Sends the free allowance's requests without a credential, checking each counts
/// down, then returns the answer to one more.
async fn use_up_the_free_allowance(proxy: &TestProxy) -> reqwest::Response {
    for used in 1..=FREE_PER_DAY {
        let response = scan(proxy, &[]).await;
        assert_eq!(
            response.status(),
            200,
            "{}",
            SEED.at(8, "No auth required for the free tier")
        );
        assert_daily_headers(response.headers(), FREE_PER_DAY, FREE_PER_DAY - used);
    }
    scan(proxy, &[]).await
}

/// seed 65-66: the x402 requirement the configuration offers, as v2 states it.
fn requirement() -> Value {
    json!({
        "scheme": "exact",
        "network": "eip155:8453",
        "amount": "10000",
        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USD Coin", "version": "2"},
    })
}

/// seed 65-66: asserts a 402 with x402 payment requirements for `path`.
async fn assert_payment_required(proxy: &TestProxy, response: reqwest::Response, limit: u64) {
    let line = 65;
    let what = "HTTP 402 with x402 payment requirements";
    assert_eq!(response.status(), 402, "{}", SEED.at(line, what));
    assert_eq!(
        number(response.headers(), "ratelimit-remaining", 64),
        0,
        "{}",
        SEED.at(64, "RateLimit-Remaining on the 402")
    );
    assert_eq!(
        number(response.headers(), "ratelimit-limit", 64),
        limit,
        "{}",
        SEED.at(64, "RateLimit-Limit on the 402")
    );
    let header = response
        .headers()
        .get("payment-required")
        .unwrap_or_else(|| panic!("{}: no PAYMENT-REQUIRED header", SEED.at(line, what)))
        .to_str()
        .unwrap()
        .to_owned();
    let v2: Value = serde_json::from_slice(&STANDARD.decode(header).unwrap()).unwrap();
    assert_eq!(
        v2["x402Version"],
        2,
        "{}: {v2}",
        SEED.at(line, "x402 (v2 header)")
    );
    assert_eq!(
        v2["accepts"],
        json!([requirement()]),
        "{}: {v2}",
        SEED.at(line, "x402 payment requirements")
    );
    assert_eq!(
        v2["resource"]["url"],
        proxy.url("/api/scan"),
        "{}: {v2}",
        SEED.at(9, "the resource paid for is /api/scan")
    );
    assert!(
        v2["resource"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("https://botvisibility.com/pricing.md")),
        "{}: {v2}",
        SEED.at(66, "see https://botvisibility.com/pricing.md")
    );
    let body = assert_error(response, 402, "PAYMENT_REQUIRED", line).await;
    assert_eq!(body["error"], "payment_required", "{}", SEED.at(line, what));
    assert_eq!(
        body["x402Version"],
        1,
        "{}: {body}",
        SEED.at(line, "x402 (v1 body)")
    );
    let v1 = &body["accepts"][0];
    assert_eq!(
        v1["network"],
        "base",
        "{}: {body}",
        SEED.at(line, "x402 v1 network")
    );
    assert_eq!(
        v1["maxAmountRequired"],
        "10000",
        "{}: {body}",
        SEED.at(line, what)
    );
    assert_eq!(
        v1["resource"],
        proxy.url("/api/scan"),
        "{}: {body}",
        SEED.at(line, what)
    );
    assert_eq!(
        v1["payTo"],
        "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "{}: {body}",
        SEED.at(line, what)
    );
    assert!(
        body["docs"]
            .as_str()
            .unwrap()
            .ends_with("/auth.md#rate-limits"),
        "{}: {body}",
        SEED.at(61, "Rate limits")
    );
}

/// Asserts an admitted scan reached the upstream as `principal` of `tier`, with the
/// query intact and no credential.
fn assert_forwarded(request: &Seen, principal: &str, tier: &str, line: u32) {
    let what = format!("the scan reaches the API as {principal}");
    assert_eq!(request.method, "GET", "{}", SEED.at(line, &what));
    assert_eq!(request.path, "/api/scan", "{}", SEED.at(9, "GET /api/scan"));
    assert_eq!(
        request.query,
        "url=example.com&format=json",
        "{}",
        SEED.at(9, "?url=<site>&format=json")
    );
    assert_eq!(
        request.header("x-authmd-principal"),
        Some(principal),
        "{}",
        SEED.at(line, &what)
    );
    assert_eq!(
        request.header("x-authmd-tier"),
        Some(tier),
        "{}",
        SEED.at(line, &what)
    );
    assert_eq!(
        request.header("x-authmd-scopes"),
        Some("scan:read"),
        "{}",
        SEED.at(11, "scan:read")
    );
    for consumed in ["authorization", "x-api-key"] {
        assert!(
            request.header(consumed).is_none(),
            "{}: {consumed} reached the upstream",
            SEED.at(line, "the credential stays at the proxy")
        );
    }
}

// ---- The free tier ---------------------------------------------------------------

#[tokio::test]
async fn the_free_tier_needs_no_auth_and_carries_both_rate_limit_header_families() {
    let (proxy, scanner) = start(CONFIG).await;
    let response = scan(&proxy, &[]).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(8, "No auth required for the free tier")
    );
    assert_daily_headers(response.headers(), FREE_PER_DAY, FREE_PER_DAY - 1);
    assert!(
        response.headers().get("www-authenticate").is_none(),
        "{}",
        SEED.at(3, "The public API is open")
    );
    let body = json(response).await;
    assert_eq!(
        body["score"],
        87,
        "{}",
        SEED.at(9, "the scanner's JSON answer")
    );
    let seen = scanner.seen().await;
    assert_eq!(seen.len(), 1, "{}", SEED.at(9, "the scan reached the API"));
    assert_forwarded(&seen[0], "anonymous", "anonymous", 8);

    // seed 63: a second request counts down on both families.
    let response = scan(&proxy, &[]).await;
    assert_eq!(response.status(), 200, "{}", SEED.at(8, "No auth required"));
    assert_daily_headers(response.headers(), FREE_PER_DAY, FREE_PER_DAY - 2);
}

#[tokio::test]
async fn over_the_free_allowance_is_402_with_x402_requirements_and_the_api_is_not_reached() {
    let (proxy, scanner) = start(CONFIG).await;
    let refused = use_up_the_free_allowance(&proxy).await;
    assert_payment_required(&proxy, refused, FREE_PER_DAY).await;
    assert_eq!(
        scanner.count() as u64,
        FREE_PER_DAY,
        "{}",
        SEED.at(65, "over the free allowance nothing is scanned")
    );
    // Still 402 on the next request: the allowance is per day.
    let again = scan(&proxy, &[]).await;
    assert_eq!(again.status(), 402, "{}", SEED.at(10, "daily allowance"));
}

// ---- The anonymous client-credentials token ---------------------------------------

#[tokio::test]
async fn an_anonymous_token_from_the_json_body_raises_the_daily_allowance() {
    let (proxy, scanner) = start(CONFIG).await;
    // seed 47-50, exactly as shown: no client_id, no secret, a JSON body.
    let token = new_token(&proxy).await;
    let (_, claims) = decode_jwt(&token);
    assert!(
        claims["sub"]
            .as_str()
            .is_some_and(|s| s.starts_with("anonymous:")),
        "{}: {claims}",
        SEED.at(37, "anonymous: any client may request a scan:read token")
    );
    assert!(
        claims.get("client_id").is_none(),
        "{}: {claims}",
        SEED.at(38, "no client_id/secret provisioning step")
    );
    assert_eq!(
        claims["scope"],
        "scan:read",
        "{}",
        SEED.at(37, "a scan:read token")
    );
    assert_eq!(
        claims["tier"],
        "agent",
        "{}",
        SEED.at(31, "a higher daily allowance")
    );
    assert_eq!(
        claims["iss"],
        proxy.url.as_str(),
        "{}",
        SEED.at(18, "the authorization server")
    );

    // The free allowance is used up...
    let refused = use_up_the_free_allowance(&proxy).await;
    assert_eq!(refused.status(), 402, "{}", SEED.at(65, "HTTP 402"));
    // ...and the token (seed 53-54) scans on, with the higher allowance.
    let bearer = format!("Bearer {token}");
    let response = scan(&proxy, &[("authorization", &bearer)]).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(10, "To raise your daily allowance, obtain a token")
    );
    assert_daily_headers(response.headers(), TOKEN_PER_DAY, TOKEN_PER_DAY - 1);
    let seen = scanner.seen().await;
    assert_eq!(
        seen.len() as u64,
        FREE_PER_DAY + 1,
        "{}",
        SEED.at(53, "scan with the token")
    );
    let principal = claims["sub"].as_str().unwrap();
    assert_forwarded(seen.last().unwrap(), principal, "agent", 53);

    // The raised allowance is a daily allowance too: over it, 402 again.
    for used in 2..=TOKEN_PER_DAY {
        let response = scan(&proxy, &[("authorization", &bearer)]).await;
        assert_eq!(
            response.status(),
            200,
            "{}",
            SEED.at(31, "the raised allowance")
        );
        assert_eq!(
            number(response.headers(), "ratelimit-remaining", 64),
            TOKEN_PER_DAY - used,
            "{}",
            SEED.at(64, "RateLimit-Remaining")
        );
    }
    let refused = scan(&proxy, &[("authorization", &bearer)]).await;
    assert_payment_required(&proxy, refused, TOKEN_PER_DAY).await;
    assert_eq!(
        scanner.count() as u64,
        FREE_PER_DAY + TOKEN_PER_DAY,
        "{}",
        SEED.at(65, "over the allowance nothing is scanned")
    );
}

#[tokio::test]
async fn the_token_endpoint_offers_scan_read_only_and_answers_errors_in_the_envelope() {
    let (proxy, _) = start(CONFIG).await;
    // The form encoding of the same request works too (RFC 6749).
    let response = client()
        .post(proxy.url(TOKEN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=scan:read")
        .send()
        .await
        .unwrap();
    token_from(response).await;
    // Without `scope`: scan:read, the only scope there is.
    let response = post_json(&proxy, TOKEN, r#"{"grant_type":"client_credentials"}"#).await;
    token_from(response).await;

    // seed 72: scoped to scan:read; nothing more can be asked for.
    let response = post_json(
        &proxy,
        TOKEN,
        r#"{"grant_type":"client_credentials","scope":"scan:read scan:write"}"#,
    )
    .await;
    let body = assert_error(response, 400, "INVALID_SCOPE", 72).await;
    assert_eq!(
        body["error"],
        "invalid_scope",
        "{}",
        SEED.at(72, "scoped to scan:read")
    );
    // seed 22: client_credentials is the grant.
    let response = post_json(
        &proxy,
        TOKEN,
        r#"{"grant_type":"password","username":"a","password":"b"}"#,
    )
    .await;
    let body = assert_error(response, 400, "UNSUPPORTED_GRANT_TYPE", 22).await;
    assert_eq!(
        body["error"],
        "unsupported_grant_type",
        "{}",
        SEED.at(22, "grant_types_supported: client_credentials")
    );
    // seed 38: there are no client secrets to present.
    let response = client()
        .post(proxy.url(TOKEN))
        .basic_auth("example-integration", Some(PARTNER_KEY))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 400, "UNAUTHORIZED_CLIENT", 38).await;
    assert_eq!(
        body["error"],
        "unauthorized_client",
        "{}",
        SEED.at(38, "no client_id/secret provisioning step")
    );
}

#[tokio::test]
async fn rotating_is_asking_again_and_each_token_is_bounded_by_the_tokens_per_hour() {
    let (proxy, scanner) = start(CONFIG).await;
    // seed 70-71: "To rotate, simply request a new one from the token endpoint".
    let first = new_token(&proxy).await;
    let second = new_token(&proxy).await;
    assert_ne!(first, second, "{}", SEED.at(70, "request a new one"));
    let (_, one) = decode_jwt(&first);
    let (_, two) = decode_jwt(&second);
    assert_ne!(
        one["sub"],
        two["sub"],
        "{}",
        SEED.at(71, "there is no long-lived secret: each token stands alone")
    );
    // Both work; each counts against its own allowance (seed 73: "at the raised
    // allowance", no more).
    for token in [&first, &second] {
        let response = scan(&proxy, &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(
            response.status(),
            200,
            "{}",
            SEED.at(70, "the new token works")
        );
        assert_daily_headers(response.headers(), TOKEN_PER_DAY, TOKEN_PER_DAY - 1);
    }
    assert_eq!(
        scanner.count(),
        2,
        "{}",
        SEED.at(53, "both scans reached the API")
    );

    // The configuration bounds the self-service: 10 tokens per address per hour
    // (two are issued above), then 429 with Retry-After.
    for _ in 2..10 {
        new_token(&proxy).await;
    }
    let response = request_token(&proxy).await;
    let retry_after = number(response.headers(), "retry-after", 36);
    assert!(
        (1..=3600).contains(&retry_after),
        "{}: {retry_after}",
        SEED.at(36, "any client may request a token (per_hour bounds it)")
    );
    assert_error(response, 429, "RATE_LIMITED", 36).await;
}

#[tokio::test]
async fn a_token_expires_on_its_own_and_a_tampered_one_is_refused() {
    // The proxy signs with a key the test holds, so the test can show what the
    // proxy does with the same token once it has expired.
    let dir = tempfile::tempdir().unwrap();
    let (_, pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let path = dir.path().join("signing.pem");
    std::fs::write(&path, &pem).unwrap();
    let from = "  algorithm: EdDSA\n";
    assert!(CONFIG.contains(from), "the seed config changed");
    let config = CONFIG.replace(
        from,
        &format!("{from}  signing_keys: [\"{}\"]\n", path.display()),
    );
    let (proxy, scanner) = start(&config).await;

    let token = new_token(&proxy).await;
    let (header, claims) = decode_jwt(&token);
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(
        exp - iat,
        3600,
        "{}: {claims}",
        SEED.at(70, "short-lived bearer tokens")
    );
    let response = scan(&proxy, &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(53, "Authorization: Bearer")
    );

    // The same token, an hour and ten minutes later: signed by the same key, expired.
    let sign = |claims: &Value| {
        let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        jwt_header.typ = header["typ"].as_str().map(str::to_owned);
        jwt_header.kid = header["kid"].as_str().map(str::to_owned);
        let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&jwt_header, claims, &key).unwrap()
    };
    let mut expired = claims.clone();
    expired["iat"] = json!(iat - 4200);
    expired["exp"] = json!(exp - 4200);
    let response = scan(
        &proxy,
        &[("authorization", &format!("Bearer {}", sign(&expired)))],
    )
    .await;
    let challenge = www(&response);
    assert_eq!(
        challenge,
        format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource\", error=\"invalid_token\"",
            proxy.url
        ),
        "{}",
        SEED.at(73, "expires on its own")
    );
    assert_envelope(response, 401, "invalid_token", "TOKEN_EXPIRED").await;
    // The same claims re-signed by the test's key pass (the check above is expiry,
    // not the signature)...
    let response = scan(
        &proxy,
        &[("authorization", &format!("Bearer {}", sign(&claims)))],
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(53, "Authorization: Bearer")
    );
    // ...and a token asking for more than scan:read, or a higher tier, is not the
    // proxy's own: its signature does not verify.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut raised = claims.clone();
    raised["tier"] = json!("partner");
    parts[1] = URL_SAFE_NO_PAD.encode(raised.to_string());
    let forged = parts.join(".");
    let response = scan(&proxy, &[("authorization", &format!("Bearer {forged}"))]).await;
    assert_envelope(response, 401, "invalid_token", "INVALID_TOKEN_SIGNATURE").await;
    assert_eq!(
        scanner.count(),
        2,
        "{}",
        SEED.at(72, "a leaked token grants nothing beyond scanning")
    );
}

// ---- X-API-Key --------------------------------------------------------------------

#[tokio::test]
async fn an_x_api_key_gets_a_fixed_higher_limit_past_the_free_allowance() {
    let (proxy, scanner) = start(CONFIG).await;
    let refused = use_up_the_free_allowance(&proxy).await;
    assert_eq!(refused.status(), 402, "{}", SEED.at(65, "HTTP 402"));

    // seed 59: "Send an `X-API-Key: <key>` header on any request for a higher rate limit".
    let response = scan(&proxy, &[("x-api-key", PARTNER_KEY)]).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(59, "X-API-Key: <key>")
    );
    assert_daily_headers(response.headers(), PARTNER_PER_DAY, PARTNER_PER_DAY - 1);
    let seen = scanner.seen().await;
    assert_eq!(
        seen.len() as u64,
        FREE_PER_DAY + 1,
        "{}",
        SEED.at(59, "the keyed scan")
    );
    assert_forwarded(
        seen.last().unwrap(),
        "key:example-integration",
        "partner",
        59,
    );
    assert!(
        !format!("{:?}", seen.last().unwrap().headers).contains(PARTNER_KEY),
        "{}",
        SEED.at(59, "the key stays at the proxy")
    );

    // seed 32: "A fixed higher limit for a known integration": a key may have its own.
    let response = scan(&proxy, &[("x-api-key", BULK_KEY)]).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(32, "a fixed higher limit")
    );
    assert_daily_headers(response.headers(), BULK_PER_DAY, BULK_PER_DAY - 1);
    assert_forwarded(&scanner.last().await, "key:example-bulk", "partner", 32);
}

#[tokio::test]
async fn a_wrong_key_is_refused_in_the_envelope_never_served_as_free_tier() {
    let (proxy, scanner) = start(CONFIG).await;
    let mut broken = PARTNER_KEY.to_owned();
    let last = broken.pop().unwrap();
    broken.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = "bv_live_5Vg3cpW8qz7L1fuuNexzQ7ZtHSYs6uQ2gWcFv1B";
    for value in [broken.as_str(), "not-a-key", unknown] {
        let response = scan(&proxy, &[("x-api-key", value)]).await;
        assert_eq!(
            www(&response),
            format!(
                "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource\", error=\"invalid_token\"",
                proxy.url
            ),
            "{}",
            SEED.at(19, "the protected resource metadata")
        );
        assert_error(response, 401, "INVALID_API_KEY", 59).await;
    }
    // A key and a token at once: which allowance would it be? Refused.
    let token = new_token(&proxy).await;
    let response = scan(
        &proxy,
        &[
            ("x-api-key", PARTNER_KEY),
            ("authorization", &format!("Bearer {token}")),
        ],
    )
    .await;
    assert_error(response, 400, "INVALID_REQUEST", 11).await;
    assert!(
        scanner.count() == 0,
        "{}",
        SEED.at(78, "errors never reach the API")
    );
}

#[tokio::test]
async fn the_operator_revokes_a_key_by_removing_it() {
    let (proxy, scanner) = start(CONFIG).await;
    let response = scan(&proxy, &[("x-api-key", PARTNER_KEY)]).await;
    assert_eq!(response.status(), 200, "{}", SEED.at(59, "X-API-Key"));
    // seed 73-74: "To revoke an `X-API-Key`, contact us": the operator deletes the
    // key from the configuration and the proxy reloads it.
    let entry = "  - id: example-integration\n    name: Example integration (the test key; never use it in production)\n    # secret: bv_live_LxcS45Jxryeh58KrdfsmuvewHyBmYCKvH1BTUfs\n    hash: blake3:eca37f4618352a7789341a499e2aed45caf3bf8fce5cd8d21a634cde71c42325\n    scopes: [scan:read]\n    tier: partner\n";
    assert!(CONFIG.contains(entry), "the seed config changed");
    proxy.reload(&here(&CONFIG.replace(entry, ""))).await;
    let response = scan(&proxy, &[("x-api-key", PARTNER_KEY)]).await;
    assert_error(response, 401, "INVALID_API_KEY", 73).await;
    // The other key, and the free tier, are untouched.
    let response = scan(&proxy, &[("x-api-key", BULK_KEY)]).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(73, "only that key is revoked")
    );
    let response = scan(&proxy, &[]).await;
    assert_eq!(response.status(), 200, "{}", SEED.at(8, "No auth required"));
    assert_eq!(
        scanner.count(),
        3,
        "{}",
        SEED.at(73, "the revoked key scans nothing")
    );
    // Keys declared by the operator cannot be revoked by whoever holds them.
    let response = post_form(&proxy, "/oauth2/revoke", &[("token", BULK_KEY)]).await;
    assert_error(response, 400, "UNSUPPORTED_TOKEN_TYPE", 73).await;
}

// ---- x402: paying past the allowance ---------------------------------------------

/// A facilitator following the x402 protocol (`POST /verify`, `POST /settle`) that
/// finds every payment valid and settles it, recording what it was asked (each body
/// JSON).
async fn facilitator() -> Upstream {
    Upstream::with(|asked: Seen| async move {
        // The protocol's calls carry JSON (a panic here fails the payment, and the test).
        asked.json();
        let answer = match asked.path.as_str() {
            "/verify" => json!({"isValid": true, "payer": "0xpayer"}),
            "/settle" => json!({"success": true, "payer": "0xpayer",
                "transaction": "0xtx1", "network": "eip155:8453"}),
            _ => json!({}),
        };
        json_response(200, answer.to_string())
    })
    .await
}

#[tokio::test]
async fn a_payment_past_the_free_allowance_buys_the_configured_requests() {
    let facilitator = facilitator().await;
    let from = "facilitator: https://x402.org/facilitator";
    assert!(CONFIG.contains(from), "the seed config changed");
    let config = CONFIG.replace(from, &format!("facilitator: http://{}", facilitator.addr));
    let (proxy, scanner) = start(&config).await;
    let refused = use_up_the_free_allowance(&proxy).await;
    assert_payment_required(&proxy, refused, FREE_PER_DAY).await;

    // An x402 client pays what the 402 asked for (v2, PAYMENT-SIGNATURE).
    let payment = STANDARD.encode(
        json!({"x402Version": 2, "accepted": requirement(),
            "payload": {"signature": "0xsigned", "authorization": {"nonce": 1}}})
        .to_string(),
    );
    let response = scan(&proxy, &[("payment-signature", &payment)]).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(65, "x402 payment requirements")
    );
    let settled: Value = serde_json::from_slice(
        &STANDARD
            .decode(response.headers()["payment-response"].to_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(settled["success"], true, "{}", SEED.at(65, "x402: settled"));
    let asked = facilitator.seen().await;
    let endpoints: Vec<(&str, &str)> = asked
        .iter()
        .map(|a| (a.method.as_str(), a.path.as_str()))
        .collect();
    assert_eq!(
        endpoints,
        [("POST", "/verify"), ("POST", "/settle")],
        "{}",
        SEED.at(65, "x402")
    );
    assert_eq!(
        asked[0].json()["paymentRequirements"],
        requirement(),
        "{}",
        SEED.at(65, "x402 payment requirements")
    );
    let seen = scanner.seen().await;
    assert_eq!(
        seen.len() as u64,
        FREE_PER_DAY + 1,
        "{}",
        SEED.at(65, "the paid scan")
    );
    assert!(
        seen.last().unwrap().header("payment-signature").is_none(),
        "{}",
        SEED.at(65, "the payment stays at the proxy")
    );
    // One payment buys 100 requests: this one and 99 more, then 402 again.
    for _ in 1..100 {
        let response = scan(&proxy, &[]).await;
        assert_eq!(
            response.status(),
            200,
            "{}",
            SEED.at(65, "the paid requests")
        );
    }
    let refused = scan(&proxy, &[]).await;
    assert_payment_required(&proxy, refused, FREE_PER_DAY).await;
    // A replayed payment is refused before the facilitator is asked.
    let replay = scan(&proxy, &[("payment-signature", &payment)]).await;
    assert_error(replay, 402, "PAYMENT_REJECTED", 65).await;
    assert_eq!(
        facilitator.count(),
        2,
        "{}",
        SEED.at(65, "x402: a payment works once")
    );
}

// ---- Discovery ---------------------------------------------------------------------

async fn document(proxy: &TestProxy, path: &str, line: u32) -> Value {
    let at = SEED.at(line, path);
    let response = get(proxy, path, None).await;
    assert_eq!(
        header(response.headers(), "content-type"),
        Some("application/json"),
        "{at}"
    );
    ok_json(response, &at).await
}

#[tokio::test]
async fn the_discovery_documents_name_the_token_endpoint_grant_scope_and_bearer_method() {
    let (proxy, _) = start(CONFIG).await;
    let origin = proxy.url.as_str();
    let server = document(&proxy, "/.well-known/oauth-authorization-server", 18).await;
    assert_eq!(
        server["issuer"],
        origin,
        "{}",
        SEED.at(18, "Authorization Server")
    );
    assert_eq!(
        server["token_endpoint"],
        proxy.url(TOKEN),
        "{}",
        SEED.at(20, "Token endpoint /api/agent/token")
    );
    assert_eq!(
        server["grant_types_supported"],
        json!(["client_credentials"]),
        "{}",
        SEED.at(22, "grant_types_supported: client_credentials")
    );
    assert_eq!(
        server["scopes_supported"],
        json!(["scan:read"]),
        "{}",
        SEED.at(23, "scopes_supported: scan:read")
    );
    assert_eq!(
        server["token_endpoint_auth_methods_supported"],
        json!(["none"]),
        "{}",
        SEED.at(38, "no client_id/secret provisioning step")
    );
    let agent_auth = &server["agent_auth"];
    for absent in ["register_uri", "claim_uri", "revocation_uri"] {
        assert!(
            agent_auth.get(absent).is_none(),
            "{}: {agent_auth}",
            SEED.at(36, "No registration is required")
        );
    }
    assert_eq!(
        agent_auth["limits"]["over_quota"],
        "402",
        "{}",
        SEED.at(65, "HTTP 402")
    );
    assert_eq!(
        agent_auth["limits"]["payment"]["protocol"],
        "x402",
        "{}",
        SEED.at(65, "x402 payment requirements")
    );
    assert_eq!(
        agent_auth["limits"]["headers"],
        json!(["draft-06", "x-ratelimit"]),
        "{}",
        SEED.at(63, "both legacy X-RateLimit-* and IETF RateLimit-*")
    );
    assert_eq!(
        agent_auth["limits"]["tiers"],
        json!([
            {"tier": "anonymous", "rate_limits": [], "quota": {"requests": FREE_PER_DAY, "period": "day"}},
            {"tier": "agent", "rate_limits": [], "quota": {"requests": TOKEN_PER_DAY, "period": "day"}},
            {"tier": "partner", "rate_limits": [], "quota": {"requests": PARTNER_PER_DAY, "period": "day"}},
        ]),
        "{}",
        SEED.at(10, "daily allowance")
    );

    let resource = document(&proxy, "/.well-known/oauth-protected-resource", 19).await;
    assert_eq!(
        resource["resource"],
        origin,
        "{}",
        SEED.at(19, "Protected Resource")
    );
    assert_eq!(
        resource["authorization_servers"],
        json!([origin]),
        "{}",
        SEED.at(18, "Authorization Server")
    );
    assert_eq!(
        resource["scopes_supported"],
        json!(["scan:read"]),
        "{}",
        SEED.at(23, "scopes_supported: scan:read")
    );
    assert_eq!(
        resource["bearer_methods_supported"],
        json!(["header"]),
        "{}",
        SEED.at(24, "bearer_methods_supported: header")
    );
    assert_eq!(
        resource["resource_name"],
        "BotVisibility",
        "{}",
        SEED.at(1, "BotVisibility")
    );

    // seed 79: the OpenAPI description is the api-catalog's service-desc.
    let response = get(&proxy, "/.well-known/api-catalog", None).await;
    let catalog = ok_json(response, &SEED.at(79, "openapi.json")).await;
    assert_eq!(
        catalog["linkset"][0]["service-desc"][0]["href"],
        "https://botvisibility.com/openapi.json",
        "{}",
        SEED.at(79, "See https://botvisibility.com/openapi.json")
    );

    // seed 36-38: no registration endpoint; the only token endpoint is the seed's.
    for path in ["/agent/auth/register", "/oauth2/token"] {
        let body = json!({"type": "anonymous", "grant_type": "client_credentials"});
        let response = post_json(&proxy, path, &body.to_string()).await;
        assert_error(response, 404, "NOT_FOUND", 36).await;
    }
}

#[tokio::test]
async fn the_documents_the_seed_links_are_served_by_the_api_without_a_credential() {
    let (proxy, scanner) = start(CONFIG).await;
    for (path, line) in [("/openapi.json", 79), ("/pricing.md", 66), ("/contact", 41)] {
        let response = get(&proxy, path, None).await;
        assert_eq!(response.status(), 200, "{}", SEED.at(line, path));
        assert!(
            response.headers().get("ratelimit-remaining").is_none(),
            "{}: reading it is not a scan",
            SEED.at(line, path)
        );
        let last = scanner.last().await;
        assert_eq!(last.path, path, "{}", SEED.at(line, path));
        assert!(
            last.header("x-authmd-principal").is_none(),
            "{}: a public document carries no identity",
            SEED.at(line, path)
        );
    }
    // Reading them took nothing from the free allowance, and past it they are still
    // served: the pricing page is where a 402 sends the agent.
    let first = use_up_the_free_allowance(&proxy).await;
    assert_eq!(
        first.status(),
        402,
        "{}",
        SEED.at(65, "Over the free allowance")
    );
    let response = get(&proxy, "/pricing.md", None).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(66, "see https://botvisibility.com/pricing.md")
    );
}

// ---- Errors ------------------------------------------------------------------------

#[tokio::test]
async fn every_error_is_the_typed_json_envelope() {
    let (proxy, scanner) = start(CONFIG).await;
    // Unknown path, wrong method, a bad credential, two credentials, a bad token
    // request, a payment that is not one: all {error, code, message, docs}.
    let response = get(&proxy, "/api/unknown", None).await;
    assert_error(response, 404, "NOT_FOUND", 78).await;
    let response = client().post(proxy.url(SCAN)).send().await.unwrap();
    assert_eq!(
        response.headers()["allow"],
        "GET, HEAD",
        "{}",
        SEED.at(9, "GET /api/scan")
    );
    assert_error(response, 405, "METHOD_NOT_ALLOWED", 9).await;
    let response = scan(&proxy, &[("authorization", "Bearer not-a-token")]).await;
    assert_error(response, 401, "INVALID_API_KEY", 78).await;
    let response = scan(
        &proxy,
        &[("x-api-key", PARTNER_KEY), ("x-api-key", BULK_KEY)],
    )
    .await;
    assert_error(response, 400, "INVALID_REQUEST", 78).await;
    let response = post_json(&proxy, TOKEN, r#"{"scope":"scan:read"}"#).await;
    assert_error(response, 400, "INVALID_REQUEST", 78).await;
    let response = get(&proxy, "/api/scan?url=a%2Fb&format=json", None).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(9, "an encoded query is the API's business")
    );
    let response = get(&proxy, "/api%2Fscan", None).await;
    assert_error(response, 400, "INVALID_PATH", 78).await;
    assert_eq!(
        scanner.count(),
        1,
        "{}",
        SEED.at(78, "refused requests never reach the API")
    );
}

// ---- The generated auth.md against the original -----------------------------------

#[tokio::test]
async fn the_generated_auth_md_describes_the_same_methods_endpoints_scopes_limits_and_errors() {
    let (proxy, _) = start(CONFIG).await;
    let response = get(&proxy, "/auth.md", None).await;
    assert_eq!(response.status(), 200, "{}", SEED.at(1, "auth.md"));
    let md = response.text().await.unwrap();

    for (line, original, generated) in METHODS {
        assert!(
            md.contains(generated),
            "{}: the generated auth.md lacks {generated:?}:\n{md}",
            SEED.at(*line, original)
        );
    }
    for (line, path) in ENDPOINTS {
        assert!(
            md.contains(&format!("{}{path}", proxy.url))
                || md.contains(&format!("`{path}`"))
                || md.contains(&format!("https://botvisibility.com{path}")),
            "{}: the generated auth.md does not name {path}:\n{md}",
            SEED.at(*line, path)
        );
    }
    for (line, text) in LIMITS.iter().chain(ERRORS).chain(LIFECYCLE) {
        assert!(
            md.contains(text),
            "{}: the generated auth.md lacks {text:?}:\n{md}",
            SEED.at(*line, text)
        );
    }
    // The daily allowances of each method, in the rate-limits table.
    for (tier, per_day) in [
        ("anonymous", FREE_PER_DAY),
        ("agent", TOKEN_PER_DAY),
        ("partner", PARTNER_PER_DAY),
    ] {
        let row = format!("| `{tier}` | none | {per_day} per UTC day |");
        assert!(
            md.contains(&row),
            "{}: the generated auth.md lacks {row:?}:\n{md}",
            SEED.at(31, "A higher daily allowance")
        );
    }

    // Scopes: the same set, and none the original lacks.
    let generated = scope_table(&md, &SEED.at(23, "scopes"));
    let original: Vec<&str> = SCOPES.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        generated,
        original,
        "{}: the generated auth.md's scopes",
        SEED.at(23, "scopes_supported: scan:read")
    );
    for line in md.lines().filter(|l| l.contains("scopes `")) {
        for scope in line.split("scopes `").skip(1) {
            let scope = scope.split('`').next().unwrap();
            assert!(
                original.contains(&scope),
                "{}: the generated auth.md names the scope {scope:?}: {line}",
                SEED.at(23, "scopes_supported: scan:read")
            );
        }
    }
}
