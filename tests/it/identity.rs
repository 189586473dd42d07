//! Registration and claims with identity assertions (ID-JAG), against an identity
//! provider played by a local server publishing its JWKS.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authmd_proxy::body::Body;
use hyper::Response;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support;
use crate::support::{TestProxy, assert_envelope, client};

const ISSUER: &str = "https://idp.test";

/// Test fixtures (not secrets): the identity provider's Ed25519 signing key, its
/// public half as a JWK `x`, and an unrelated key for forged signatures.
const IDP_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEX4mBjZKBX5SyKTWMqiYPJfGgRbKK6avJ5Qe82X3rcc\n-----END PRIVATE KEY-----\n";
const IDP_X: &str = "7A5EZa5NRLAsOykP0AFOcJgb-dz9rKA5IpC93xRVnYo";
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEICSP0U7tn9V7b4lxQA1lZFS0lwYL+CbHccImC8dIT6br\n-----END PRIVATE KEY-----\n";

struct Idp {
    jwks_uri: String,
    fetches: Arc<AtomicUsize>,
}

/// The identity provider: serves its JWKS and counts the fetches.
async fn idp() -> Idp {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let addr = support::upstream(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": IDP_X, "kid": "k1", "use": "sig", "alg": "EdDSA"}]});
            let mut response = Response::new(Body::full(jwks.to_string()));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        }
    })
    .await;
    Idp {
        jwks_uri: format!("http://{addr}/jwks"),
        fetches,
    }
}

async fn proxy(jwks_uri: &str, extra: &str) -> TestProxy {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    let text = format!(
        "{text}\ntrusted_issuers:\n  - issuer: {ISSUER}\n    jwks_uri: {jwks_uri}\n{extra}"
    );
    TestProxy::start(&text, None).await
}

fn now() -> i64 {
    authmd_proxy::clock::unix_now()
}

/// An ID-JAG for `aud`, with `edit` applied to the claims and the header.
fn assertion(aud: &str, edit: impl FnOnce(&mut Value, &mut Header), key: &str) -> String {
    let mut claims = json!({
        "iss": ISSUER, "sub": "user-42", "aud": aud, "client_id": "agent-1",
        "jti": format!("jti-{}", now_nanos()), "iat": now(), "exp": now() + 300,
        "email": "ada@example.com",
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("oauth-id-jag+jwt".into());
    header.kid = Some("k1".into());
    edit(&mut claims, &mut header);
    let key = EncodingKey::from_ed_pem(key.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn register(proxy: &TestProxy, body: Value) -> reqwest::Response {
    client()
        .post(proxy.url("/agent/auth/register"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn delete_offer(proxy: &TestProxy, key: &str) -> u16 {
    client()
        .delete(proxy.url("/api/v1/offers/7"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_valid_assertion_registers_at_the_claimed_tier_once() {
    let idp = idp().await;
    let proxy = proxy(&idp.jwks_uri, "").await;
    let jwt = assertion(&proxy.url, |_, _| {}, IDP_KEY);
    let body = json!({
        "type": "identity_assertion",
        "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
        "assertion": jwt,
    });
    let response = register(&proxy, body.clone()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["registration_type"], "agent-provider");
    assert_eq!(answer["tier"], "verified");
    let key = answer["credential"].as_str().unwrap();
    assert_eq!(
        delete_offer(&proxy, key).await,
        200,
        "the claimed tier's scopes"
    );

    // The same assertion again is a replay, and issues nothing.
    let replay = register(&proxy, body).await;
    assert_envelope(replay, 401, "invalid_grant", "REPLAY_DETECTED").await;
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1, "the JWKS is cached");
}

#[tokio::test]
async fn every_bad_assertion_gets_its_own_code() {
    let idp = idp().await;
    let proxy = proxy(&idp.jwks_uri, "").await;
    let aud = proxy.url.clone();
    let cases: Vec<(String, &str)> = vec![
        (
            assertion(&aud, |_, h| h.typ = Some("JWT".into()), IDP_KEY),
            "INVALID_ASSERTION_TYPE",
        ),
        (
            assertion(
                &aud,
                |c, _| {
                    c["exp"] = json!(now() - 600);
                    c["iat"] = json!(now() - 900);
                },
                IDP_KEY,
            ),
            "ASSERTION_EXPIRED",
        ),
        (
            assertion(&aud, |c, _| c["iat"] = json!(now() + 600), IDP_KEY),
            "ASSERTION_NOT_YET_VALID",
        ),
        (
            assertion(&aud, |c, _| c["exp"] = json!(now() + 86_400), IDP_KEY),
            "ASSERTION_LIFETIME_TOO_LONG",
        ),
        (
            assertion("https://someone-else.example", |_, _| {}, IDP_KEY),
            "ASSERTION_AUDIENCE_MISMATCH",
        ),
        (
            assertion(&aud, |_, _| {}, OTHER_KEY),
            "INVALID_ASSERTION_SIGNATURE",
        ),
        (
            assertion(&aud, |_, h| h.kid = Some("k9".into()), IDP_KEY),
            "UNKNOWN_ASSERTION_KEY",
        ),
        (
            assertion(
                &aud,
                |c, _| {
                    c.as_object_mut().unwrap().remove("jti");
                },
                IDP_KEY,
            ),
            "INVALID_ASSERTION",
        ),
        ("not.a.jwt".to_owned(), "INVALID_ASSERTION"),
    ];
    for (jwt, code) in cases {
        let response = register(
            &proxy,
            json!({"type": "identity_assertion", "assertion": jwt}),
        )
        .await;
        let body = assert_envelope(response, 401, "invalid_grant", code).await;
        assert!(
            !body.to_string().contains(&jwt),
            "{code}: the token is echoed"
        );
    }
    // HMAC signed with the issuer's public key as the secret: the classic confusion.
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("oauth-id-jag+jwt".into());
    header.kid = Some("k1".into());
    let claims =
        json!({"iss": ISSUER, "sub": "x", "aud": aud, "jti": "h", "iat": now(), "exp": now() + 60});
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(IDP_X.as_bytes()),
    )
    .unwrap();
    let response = register(
        &proxy,
        json!({"type": "identity_assertion", "assertion": forged}),
    )
    .await;
    assert_envelope(
        response,
        401,
        "invalid_grant",
        "UNSUPPORTED_ASSERTION_ALGORITHM",
    )
    .await;

    // An untrusted issuer is refused before any key is fetched.
    let fetched = idp.fetches.load(Ordering::SeqCst);
    let stranger = assertion(&aud, |c, _| c["iss"] = json!("https://evil.test"), IDP_KEY);
    let response = register(
        &proxy,
        json!({"type": "identity_assertion", "assertion": stranger}),
    )
    .await;
    assert_envelope(response, 401, "invalid_grant", "UNTRUSTED_ISSUER").await;
    assert_eq!(idp.fetches.load(Ordering::SeqCst), fetched);
}

#[tokio::test]
async fn a_claim_with_an_assertion_raises_the_same_key_in_place() {
    let idp = idp().await;
    let proxy = proxy(&idp.jwks_uri, "").await;
    let registered: Value = register(&proxy, json!({"type": "anonymous", "client_name": "bot"}))
        .await
        .json()
        .await
        .unwrap();
    let key = registered["credential"].as_str().unwrap();
    assert_eq!(delete_offer(&proxy, key).await, 403, "not before the claim");

    let claim = |body: Value| {
        client()
            .post(proxy.url("/agent/auth/claim"))
            .json(&body)
            .send()
    };
    let response = claim(json!({"claim_token": registered["claim_token"]}))
        .await
        .unwrap();
    assert_envelope(
        response,
        400,
        "invalid_request",
        "IDENTITY_ASSERTION_REQUIRED",
    )
    .await;

    let jwt = assertion(&proxy.url, |_, _| {}, IDP_KEY);
    let response = claim(json!({
        "registration_id": registered["registration_id"],
        "identity_assertion": jwt,
    }))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let claimed: Value = response.json().await.unwrap();
    assert_eq!(claimed["status"], "claimed");
    assert_eq!(claimed["tier"], "verified");
    assert_eq!(
        delete_offer(&proxy, key).await,
        200,
        "same key, raised in place"
    );

    let again = assertion(&proxy.url, |_, _| {}, IDP_KEY);
    let response =
        claim(json!({"claim_token": registered["claim_token"], "identity_assertion": again}))
            .await
            .unwrap();
    assert_envelope(response, 409, "invalid_grant", "PREVIOUSLY_CLAIMED").await;
}

#[tokio::test]
async fn an_unreachable_jwks_is_a_retryable_503() {
    let proxy = proxy("http://127.0.0.1:1/jwks", "").await;
    let jwt = assertion(&proxy.url, |_, _| {}, IDP_KEY);
    let response = register(
        &proxy,
        json!({"type": "identity_assertion", "assertion": jwt}),
    )
    .await;
    assert!(response.headers().get("retry-after").is_some());
    assert_envelope(
        response,
        503,
        "temporarily_unavailable",
        "ISSUER_JWKS_UNAVAILABLE",
    )
    .await;
    // An issuer trusted for identity assertions alone: auth.md still lists the
    // code the agent just got.
    let md = proxy.auth_md().await;
    assert!(md.contains("| 503 | `ISSUER_JWKS_UNAVAILABLE` |"), "{md}");
}
