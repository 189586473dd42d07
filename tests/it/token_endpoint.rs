//! The proxy as an OAuth authorization server, over real sockets: its metadata and
//! JWKS, the token endpoint (`client_credentials` with `client_secret_basic`,
//! `client_secret_post` and anonymously; `scope`; RFC 8707 `resource`; malformed
//! requests), the anonymous grant's rate limit, revocation (RFC 7009), and every
//! refusal of a token claiming to be the proxy's own (forged with a signing key the
//! test writes and configures), including a rotated-out key that still verifies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use std::path::PathBuf;

use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support;
use crate::support::{READER_KEY, TestProxy, WRITER_KEY, assert_envelope, client};

const TOKEN: &str = "/oauth2/token";
const REVOKE: &str = "/oauth2/revoke";
const FORM: &str = "application/x-www-form-urlencoded";

/// The example without its demo sign-in: these tests are about agents' grants.
fn example_text() -> String {
    crate::support::example_without("login")
}

/// `text` with `from` replaced by `to`, which must have been there.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the example config no longer has {from:?}"
    );
    text.replace(from, to)
}

fn now() -> i64 {
    authmd_proxy::clock::unix_now()
}

/// `Authorization: Basic` with the id and secret form-urlencoded (RFC 6749 2.3.1).
fn basic(id: &str, secret: &str) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    basic_raw(&format!("{}:{}", encode(id), encode(secret)))
}

/// `Authorization: Basic` of exactly `raw`.
fn basic_raw(raw: &str) -> String {
    format!("Basic {}", STANDARD.encode(raw))
}

/// A form POST to the token endpoint, with an optional `Authorization` value.
async fn token_request(
    proxy: &TestProxy,
    authorization: Option<&str>,
    form: &str,
) -> reqwest::Response {
    let mut request = client()
        .post(proxy.url(TOKEN))
        .header("content-type", FORM)
        .body(form.to_owned());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

/// Asserts a successful token response (RFC 6749 5.1) and returns its body.
async fn issued(response: reqwest::Response, scope: &str) -> Value {
    assert_eq!(response.status(), 200, "token response status");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = support::json(response).await;
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 3600, "{body}");
    assert_eq!(body["scope"], scope, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(body.as_object().unwrap().len(), 4, "{body}");
    body
}

/// A token for `example-writer` with `scope` (all its scopes when empty).
async fn writer_token(proxy: &TestProxy, scope: &str) -> String {
    let form = if scope.is_empty() {
        "grant_type=client_credentials".to_owned()
    } else {
        format!("grant_type=client_credentials&scope={scope}")
    };
    let response = token_request(proxy, Some(&basic("example-writer", WRITER_KEY)), &form).await;
    let expected = if scope.is_empty() {
        "offers:read offers:write"
    } else {
        scope
    };
    issued(response, expected).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `POST /api/v1/offers` (needs offers:write) with a bearer token.
async fn create_offer(proxy: &TestProxy, token: &str) -> reqwest::Response {
    client()
        .post(proxy.url("/api/v1/offers"))
        .header("authorization", format!("Bearer {token}"))
        .body("{\"title\":\"x\"}")
        .send()
        .await
        .unwrap()
}

/// Asserts the request was forwarded as `principal`, without the credential.
async fn assert_forwarded(response: reqwest::Response, principal: &str) {
    assert_eq!(response.status(), 200, "forwarded");
    let echo = support::json(response).await;
    let seen = &echo["headers"];
    assert_eq!(seen["x-authmd-principal"], principal, "{echo}");
    assert!(
        seen.get("authorization").is_none(),
        "the token reached the upstream: {echo}"
    );
}

/// The decoded header and claims of a JWT (not verified).
fn decode_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || {
        let part = parts.next().unwrap();
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    let header = next();
    let claims = next();
    (header, claims)
}

async fn metadata(proxy: &TestProxy) -> Value {
    let response = client()
        .get(proxy.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    support::json(response).await
}

/// The kids of the JWKS the proxy serves.
async fn jwks_kids(proxy: &TestProxy) -> Vec<String> {
    let response = client()
        .get(proxy.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/jwk-set+json"
    );
    let jwks = support::json(response).await;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert!(k.get("d").is_none(), "a private key is published: {k}");
            k["kid"].as_str().unwrap().to_owned()
        })
        .collect()
}

// ---- Signing keys the test owns -----------------------------------------------

/// A signing key the test generated, with its PEM text and file.
struct OwnKey {
    key: SigningKey,
    pem: String,
    path: PathBuf,
}

fn own_key(dir: &tempfile::TempDir, name: &str) -> OwnKey {
    let (key, pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, &pem).unwrap();
    OwnKey { key, pem, path }
}

/// The example config with `tokens.signing_keys` naming `keys` (the first signs).
async fn proxy_with_keys(keys: &[&OwnKey]) -> TestProxy {
    let list: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{}\"", k.path.display()))
        .collect();
    let text = replaced(
        &example_text(),
        "\ntokens:\n",
        &format!("\ntokens:\n  signing_keys: [{}]\n", list.join(", ")),
    );
    TestProxy::start(&text, None).await
}

/// Claims as the proxy would sign them, for `example-writer`'s offers:write.
fn claims(proxy: &TestProxy) -> Value {
    json!({
        "iss": proxy.url,
        "sub": "key:forged-writer",
        "aud": proxy.url,
        "scope": "offers:read offers:write",
        "exp": now() + 600,
        "iat": now(),
        "jti": format!("at_test_{}", std::process::id()),
        "tier": "free",
    })
}

fn at_header(kid: &str) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.into());
    header
}

fn sign(header: &Header, claims: &Value, pem: &str) -> String {
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::encode(header, claims, &key).unwrap()
}

/// Asserts a 401 refusal of a bearer token with `code`.
async fn assert_token_refused(proxy: &TestProxy, token: &str, code: &str) {
    let response = create_offer(proxy, token).await;
    let www = support::www(&response);
    assert!(www.starts_with("Bearer "), "{code}: {www}");
    assert!(www.contains("error=\"invalid_token\""), "{code}: {www}");
    assert_envelope(response, 401, "invalid_token", code).await;
}

// ---- Metadata and keys ----------------------------------------------------------

#[tokio::test]
async fn metadata_names_the_grants_auth_methods_and_a_jwks_whose_kid_signs_tokens() {
    let proxy = TestProxy::example(None).await;
    let doc = metadata(&proxy).await;
    assert_eq!(doc["issuer"], proxy.url.as_str());
    assert_eq!(doc["token_endpoint"], proxy.url(TOKEN));
    assert_eq!(doc["revocation_endpoint"], proxy.url(REVOKE));
    // The example signs its demo person in: the code grants come first.
    assert_eq!(
        doc["grant_types_supported"],
        json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(doc["jwks_uri"], proxy.url("/.well-known/jwks.json"));

    let kids = jwks_kids(&proxy).await;
    assert_eq!(kids.len(), 1, "{kids:?}");
    let token = writer_token(&proxy, "").await;
    let (header, claims) = decode_parts(&token);
    assert_eq!(header["kid"], kids[0].as_str(), "{header}");
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert_eq!(claims["iss"], proxy.url.as_str(), "{claims}");
    assert_eq!(claims["aud"], proxy.url.as_str(), "{claims}");
    assert_eq!(claims["sub"], "key:example-writer", "{claims}");
    assert_eq!(claims["client_id"], "example-writer", "{claims}");
    assert_eq!(claims["scope"], "offers:read offers:write", "{claims}");
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(exp - iat, 3600, "{claims}");
    assert!((iat - now()).abs() < 60, "{claims}");
}

#[tokio::test]
async fn jwt_bearer_is_listed_only_with_an_identity_assertion_issuer() {
    // An issuer trusted for its access tokens only: no jwt-bearer grant.
    let access_only = format!(
        "{}\ntrusted_issuers:\n  - issuer: https://idp.test\n    jwks_uri: http://127.0.0.1:9/jwks\n    access_tokens: true\n    identity_assertions: false\n",
        example_text()
    );
    let proxy = TestProxy::start(&access_only, None).await;
    let doc = metadata(&proxy).await;
    assert_eq!(doc["grant_types_supported"], json!(["client_credentials"]));
    proxy.shutdown().await;

    let identity = format!(
        "{}\ntrusted_issuers:\n  - issuer: https://idp.test\n    jwks_uri: http://127.0.0.1:9/jwks\n",
        example_text()
    );
    let proxy = TestProxy::start(&identity, None).await;
    let doc = metadata(&proxy).await;
    assert_eq!(
        doc["grant_types_supported"],
        json!([
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        ])
    );
}

// ---- client_credentials with an API key ------------------------------------------

#[tokio::test]
async fn client_secret_basic_issues_a_token_that_admits_the_key_principal() {
    let proxy = TestProxy::example(None).await;
    let token = writer_token(&proxy, "").await;
    assert_forwarded(create_offer(&proxy, &token).await, "key:example-writer").await;

    // The id and secret are form-urlencoded inside Basic: `%2D` is `-`.
    let response = token_request(
        &proxy,
        Some(&basic_raw(&format!("example%2Dwriter:{WRITER_KEY}"))),
        "grant_type=client_credentials",
    )
    .await;
    let body = issued(response, "offers:read offers:write").await;
    let token = body["access_token"].as_str().unwrap();
    let (_, claims) = decode_parts(token);
    assert_eq!(claims["client_id"], "example-writer", "{claims}");
    assert_forwarded(create_offer(&proxy, token).await, "key:example-writer").await;
}

#[tokio::test]
async fn client_secret_post_works_and_both_methods_at_once_are_refused() {
    let proxy = TestProxy::example(None).await;
    let response = token_request(
        &proxy,
        None,
        &format!(
            "grant_type=client_credentials&client_id=example-writer&client_secret={WRITER_KEY}"
        ),
    )
    .await;
    let body = issued(response, "offers:read offers:write").await;
    let token = body["access_token"].as_str().unwrap();
    assert_forwarded(create_offer(&proxy, token).await, "key:example-writer").await;

    // Basic and client_secret in the body.
    let response = token_request(
        &proxy,
        Some(&basic("example-writer", WRITER_KEY)),
        &format!("grant_type=client_credentials&client_secret={WRITER_KEY}"),
    )
    .await;
    support::oauth_error(response, 400, "invalid_request", "INVALID_REQUEST").await;
}

#[tokio::test]
async fn a_wrong_secret_or_client_id_is_invalid_client_with_basic_challenge_only_for_basic() {
    let proxy = TestProxy::example(None).await;
    // A key-shaped secret whose checksum is wrong.
    let mut broken = WRITER_KEY.to_owned();
    let last = broken.pop().unwrap();
    broken.push(if last == 'A' { 'B' } else { 'A' });
    let basic_cases = [
        basic("example-writer", &broken),
        basic("example-writer", "not-a-key"),
        // Another key's secret: the id must be the key's.
        basic("example-writer", READER_KEY),
        basic("example-reader", WRITER_KEY),
        basic("nobody", WRITER_KEY),
    ];
    for authorization in &basic_cases {
        let response =
            token_request(&proxy, Some(authorization), "grant_type=client_credentials").await;
        let headers = support::oauth_error(response, 401, "invalid_client", "INVALID_CLIENT").await;
        let www = headers["www-authenticate"].to_str().unwrap();
        assert!(www.starts_with("Basic realm="), "{www}");
    }

    for (id, secret) in [
        ("example-writer", broken.as_str()),
        ("example-reader", WRITER_KEY),
        ("example-writer", "not-a-key"),
    ] {
        let response = token_request(
            &proxy,
            None,
            &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"),
        )
        .await;
        let headers = support::oauth_error(response, 401, "invalid_client", "INVALID_CLIENT").await;
        assert!(
            headers
                .get_all("www-authenticate")
                .iter()
                .all(|v| !v.to_str().unwrap().starts_with("Basic")),
            "client_secret_post got a Basic challenge: {headers:?}"
        );
    }
}

#[tokio::test]
async fn scope_narrows_the_token_and_beyond_the_key_is_invalid_scope() {
    let proxy = TestProxy::example(None).await;
    let token = writer_token(&proxy, "offers:read").await;
    let (_, claims) = decode_parts(&token);
    assert_eq!(claims["scope"], "offers:read", "{claims}");

    // The narrowed token reads but cannot write.
    let response = client()
        .get(proxy.url("/api/v1/offers"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_forwarded(response, "key:example-writer").await;
    let response = create_offer(&proxy, &token).await;
    let www = support::www(&response);
    assert!(www.contains("error=\"insufficient_scope\""), "{www}");
    assert_envelope(response, 403, "insufficient_scope", "FORBIDDEN").await;

    for scope in [
        "offers:delete",
        "offers:read%20offers:delete",
        "offers:fly",
        "contacts:reveal",
    ] {
        let response = token_request(
            &proxy,
            Some(&basic("example-writer", WRITER_KEY)),
            &format!("grant_type=client_credentials&scope={scope}"),
        )
        .await;
        support::oauth_error(response, 400, "invalid_scope", "INVALID_SCOPE").await;
    }
    // The reader key cannot get offers:write either.
    let response = token_request(
        &proxy,
        Some(&basic("example-reader", READER_KEY)),
        "grant_type=client_credentials&scope=offers:write",
    )
    .await;
    support::oauth_error(response, 400, "invalid_scope", "INVALID_SCOPE").await;
}

// ---- Anonymous client_credentials ----------------------------------------------

#[tokio::test]
async fn anonymous_client_credentials_gets_the_anonymous_scopes_only() {
    let proxy = TestProxy::example(None).await;
    let response = token_request(
        &proxy,
        None,
        "grant_type=client_credentials&scope=offers:read",
    )
    .await;
    let body = issued(response, "offers:read").await;
    let form_token = body["access_token"].as_str().unwrap().to_owned();
    let (_, claims) = decode_parts(&form_token);
    assert!(
        claims["sub"]
            .as_str()
            .is_some_and(|s| s.starts_with("anonymous:")),
        "{claims}"
    );
    assert!(claims.get("client_id").is_none(), "{claims}");
    assert_eq!(claims["tier"], "anonymous", "{claims}");

    let response = client()
        .post(proxy.url(TOKEN))
        .json(&json!({"grant_type": "client_credentials", "scope": "offers:read"}))
        .send()
        .await
        .unwrap();
    issued(response, "offers:read").await;

    // No scope: the anonymous grant's scopes.
    let response = token_request(&proxy, None, "grant_type=client_credentials").await;
    issued(response, "offers:read").await;

    let response = token_request(
        &proxy,
        None,
        "grant_type=client_credentials&scope=offers:write",
    )
    .await;
    support::oauth_error(response, 400, "invalid_scope", "INVALID_SCOPE").await;

    // The anonymous token reads, and cannot write.
    let response = client()
        .get(proxy.url("/api/v1/offers"))
        .header("authorization", format!("Bearer {form_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = create_offer(&proxy, &form_token).await;
    assert_envelope(response, 403, "insufficient_scope", "FORBIDDEN").await;
}

#[tokio::test]
async fn anonymous_tokens_are_rate_limited_per_address() {
    let text = replaced(
        &example_text(),
        "per_hour: 60             # anonymous tokens",
        "per_hour: 2             # anonymous tokens",
    );
    let proxy = TestProxy::start(&text, None).await;
    for _ in 0..2 {
        let response = token_request(&proxy, None, "grant_type=client_credentials").await;
        issued(response, "offers:read").await;
    }
    let response = token_request(&proxy, None, "grant_type=client_credentials").await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 3600, "{retry_after}");
    let body = support::json(response).await;
    assert_eq!(body["code"], "RATE_LIMITED", "{body}");

    // Clients that authenticate are not counted against the anonymous budget.
    writer_token(&proxy, "").await;
}

#[tokio::test]
async fn without_the_anonymous_grant_no_client_authentication_is_invalid_client() {
    let text = replaced(
        &example_text(),
        "  anonymous:                 # client_credentials with no client authentication (BotVisibility-style)\n    tier: anonymous\n    scopes: [offers:read]\n    per_hour: 60             # anonymous tokens per client address per hour\n",
        "",
    );
    let proxy = TestProxy::start(&text, None).await;
    let doc = metadata(&proxy).await;
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    let response = token_request(&proxy, None, "grant_type=client_credentials").await;
    let headers = support::oauth_error(response, 401, "invalid_client", "INVALID_CLIENT").await;
    assert!(headers.get("www-authenticate").is_none(), "{headers:?}");
    // API keys still get tokens.
    writer_token(&proxy, "").await;
}

// ---- resource (RFC 8707) -----------------------------------------------------

#[tokio::test]
async fn resource_sets_the_audience_and_must_be_this_api() {
    let proxy = TestProxy::example(None).await;
    let auth = basic("example-writer", WRITER_KEY);
    for resource in [proxy.url.clone(), proxy.url("/mcp")] {
        let encoded: String = form_urlencoded::byte_serialize(resource.as_bytes()).collect();
        let response = token_request(
            &proxy,
            Some(&auth),
            &format!("grant_type=client_credentials&resource={encoded}"),
        )
        .await;
        let body = issued(response, "offers:read offers:write").await;
        let (_, claims) = decode_parts(body["access_token"].as_str().unwrap());
        assert_eq!(claims["aud"], resource.as_str(), "{claims}");
    }
    // A token for the API as a whole is accepted on its routes.
    let response = token_request(
        &proxy,
        Some(&auth),
        &format!(
            "grant_type=client_credentials&resource={}",
            form_urlencoded::byte_serialize(proxy.url.as_bytes()).collect::<String>()
        ),
    )
    .await;
    let body = issued(response, "offers:read offers:write").await;
    assert_forwarded(
        create_offer(&proxy, body["access_token"].as_str().unwrap()).await,
        "key:example-writer",
    )
    .await;

    for form in [
        "grant_type=client_credentials&resource=https%3A%2F%2Felsewhere.example".to_owned(),
        format!(
            "grant_type=client_credentials&resource={0}&resource={0}%2Fmcp",
            form_urlencoded::byte_serialize(proxy.url.as_bytes()).collect::<String>()
        ),
    ] {
        let response = token_request(&proxy, Some(&auth), &form).await;
        support::oauth_error(response, 400, "invalid_target", "INVALID_TARGET").await;
    }
}

// ---- Malformed requests ---------------------------------------------------------

#[tokio::test]
async fn malformed_token_requests_are_refused_as_rfc_6749_says() {
    let proxy = TestProxy::example(None).await;
    let auth = basic("example-writer", WRITER_KEY);
    let response = token_request(&proxy, Some(&auth), "grant_type=password&username=a").await;
    support::oauth_error(
        response,
        400,
        "unsupported_grant_type",
        "UNSUPPORTED_GRANT_TYPE",
    )
    .await;
    let response = token_request(&proxy, Some(&auth), "scope=offers:read").await;
    support::oauth_error(response, 400, "invalid_request", "INVALID_REQUEST").await;
    let response = token_request(
        &proxy,
        Some(&auth),
        "grant_type=client_credentials&scope=offers:read&scope=offers:write",
    )
    .await;
    support::oauth_error(response, 400, "invalid_request", "INVALID_REQUEST").await;
    let response = token_request(
        &proxy,
        Some(&auth),
        "grant_type=client_credentials&grant_type=client_credentials",
    )
    .await;
    support::oauth_error(response, 400, "invalid_request", "INVALID_REQUEST").await;

    let response = client().get(proxy.url(TOKEN)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

// ---- Revocation ---------------------------------------------------------------

#[tokio::test]
async fn a_revoked_token_is_refused_at_once_and_other_tokens_still_work() {
    let proxy = TestProxy::example(None).await;
    let revoked = writer_token(&proxy, "").await;
    let kept = writer_token(&proxy, "").await;
    assert_ne!(revoked, kept);
    // Both work (and the first is now in the verification cache).
    assert_forwarded(create_offer(&proxy, &revoked).await, "key:example-writer").await;
    assert_forwarded(create_offer(&proxy, &kept).await, "key:example-writer").await;

    let response = client()
        .post(proxy.url(REVOKE))
        .header("content-type", FORM)
        .body(format!("token={revoked}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");

    assert_token_refused(&proxy, &revoked, "TOKEN_REVOKED").await;
    assert_forwarded(create_offer(&proxy, &kept).await, "key:example-writer").await;

    // Revoking again, garbage, or a JWT this server never issued: 200.
    let foreign = own_token_for_nobody();
    for token in [revoked.as_str(), "garbage", foreign.as_str()] {
        let response = client()
            .post(proxy.url(REVOKE))
            .header("content-type", FORM)
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{token}");
    }
    assert_forwarded(create_offer(&proxy, &kept).await, "key:example-writer").await;
}

/// A well-formed EdDSA access token signed by a key no proxy knows.
fn own_token_for_nobody() -> String {
    let (key, pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let claims = json!({
        "iss": "http://127.0.0.1:1", "sub": "key:x", "aud": "http://127.0.0.1:1",
        "scope": "offers:read", "exp": now() + 600, "iat": now(), "jti": "at_x", "tier": "free",
    });
    sign(&at_header(key.kid()), &claims, &pem)
}

// ---- Verification of own tokens ---------------------------------------------------

#[tokio::test]
async fn own_tokens_are_verified_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let key = own_key(&dir, "signing.pem");
    let proxy = proxy_with_keys(&[&key]).await;
    let kid = key.key.kid().to_owned();

    // The configured key is the one published and the one that signs.
    assert_eq!(jwks_kids(&proxy).await, vec![kid.clone()]);
    let (header, _) = decode_parts(&writer_token(&proxy, "").await);
    assert_eq!(header["kid"], kid.as_str());

    // A token signed with the configured key, as the proxy would: accepted.
    let good = sign(&at_header(&kid), &claims(&proxy), &key.pem);
    assert_forwarded(create_offer(&proxy, &good).await, "key:forged-writer").await;

    let mut expired = claims(&proxy);
    expired["iat"] = json!(now() - 700);
    expired["exp"] = json!(now() - 10);
    let token = sign(&at_header(&kid), &expired, &key.pem);
    assert_token_refused(&proxy, &token, "TOKEN_EXPIRED").await;

    let mut elsewhere = claims(&proxy);
    elsewhere["aud"] = json!("https://elsewhere.example");
    let token = sign(&at_header(&kid), &elsewhere, &key.pem);
    assert_token_refused(&proxy, &token, "TOKEN_AUDIENCE_MISMATCH").await;

    let mut other_issuer = claims(&proxy);
    other_issuer["iss"] = json!("https://issuer.elsewhere.example");
    let token = sign(&at_header(&kid), &other_issuer, &key.pem);
    assert_token_refused(&proxy, &token, "UNTRUSTED_TOKEN_ISSUER").await;

    let mut plain_jwt = at_header(&kid);
    plain_jwt.typ = Some("JWT".into());
    let token = sign(&plain_jwt, &claims(&proxy), &key.pem);
    assert_token_refused(&proxy, &token, "INVALID_TOKEN_TYPE").await;

    let token = sign(&at_header("no-such-kid"), &claims(&proxy), &key.pem);
    assert_token_refused(&proxy, &token, "UNKNOWN_TOKEN_KEY").await;

    // Another Ed25519 key, claiming the configured key's kid.
    let (_, other_pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let token = sign(&at_header(&kid), &claims(&proxy), &other_pem);
    assert_token_refused(&proxy, &token, "INVALID_TOKEN_SIGNATURE").await;

    // HS256 keyed with the public key (the classic algorithm confusion).
    let jwks: Value = support::json(
        client()
            .get(proxy.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let public = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some(kid.clone());
    let token =
        jsonwebtoken::encode(&hs, &claims(&proxy), &EncodingKey::from_secret(&public)).unwrap();
    assert_token_refused(&proxy, &token, "TOKEN_ALGORITHM_REFUSED").await;

    // `alg: none`, no signature.
    let none_header = json!({"alg": "none", "typ": "at+jwt", "kid": kid});
    let token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(none_header.to_string()),
        URL_SAFE_NO_PAD.encode(claims(&proxy).to_string())
    );
    assert_token_refused(&proxy, &token, "TOKEN_ALGORITHM_REFUSED").await;

    // The good token's signature over claims that grant more; and a cut-off one.
    let mut richer = claims(&proxy);
    richer["scope"] = json!("offers:read offers:write offers:delete");
    let parts: Vec<&str> = good.split('.').collect();
    let token = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(richer.to_string()),
        parts[2]
    );
    assert_token_refused(&proxy, &token, "INVALID_TOKEN_SIGNATURE").await;
    assert_token_refused(&proxy, &format!("{good}x"), "INVALID_TOKEN").await;

    let mut from_the_future = claims(&proxy);
    from_the_future["iat"] = json!(now() + 3600);
    let token = sign(&at_header(&kid), &from_the_future, &key.pem);
    assert_token_refused(&proxy, &token, "TOKEN_NOT_YET_VALID").await;

    // The good token is still good after all that.
    assert_forwarded(create_offer(&proxy, &good).await, "key:forged-writer").await;
}

#[tokio::test]
async fn a_rotated_out_key_still_verifies_and_the_new_one_signs() {
    let dir = tempfile::tempdir().unwrap();
    let old = own_key(&dir, "old.pem");
    let new = own_key(&dir, "new.pem");
    let proxy = proxy_with_keys(&[&new, &old]).await;

    let mut kids = jwks_kids(&proxy).await;
    let mut expected = vec![new.key.kid().to_owned(), old.key.kid().to_owned()];
    assert_eq!(kids[0], expected[0], "the signing key is listed first");
    kids.sort();
    expected.sort();
    assert_eq!(kids, expected);

    let (header, _) = decode_parts(&writer_token(&proxy, "").await);
    assert_eq!(header["kid"], new.key.kid());

    let by_old = sign(&at_header(old.key.kid()), &claims(&proxy), &old.pem);
    assert_forwarded(create_offer(&proxy, &by_old).await, "key:forged-writer").await;
    let by_new = sign(&at_header(new.key.kid()), &claims(&proxy), &new.pem);
    assert_forwarded(create_offer(&proxy, &by_new).await, "key:forged-writer").await;
    // The old key's kid with the new key's signature does not verify.
    let mixed = sign(&at_header(old.key.kid()), &claims(&proxy), &new.pem);
    assert_token_refused(&proxy, &mixed, "INVALID_TOKEN_SIGNATURE").await;
}

#[tokio::test]
async fn revoking_a_key_ends_the_tokens_minted_from_it() {
    let proxy = TestProxy::example(None).await;
    let created = client()
        .post(proxy.url("/api/v1/auth/keys"))
        .bearer_auth(WRITER_KEY)
        .json(&json!({"name": "minting", "scopes": ["offers:write"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = support::json(created).await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let response = token_request(
        &proxy,
        Some(&basic(id, key)),
        "grant_type=client_credentials",
    )
    .await;
    let token = issued(response, "offers:write").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_forwarded(create_offer(&proxy, &token).await, &format!("key:{id}")).await;

    let revoked = client()
        .delete(proxy.url(&format!("/api/v1/auth/keys/{id}")))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_token_refused(&proxy, &token, "TOKEN_REVOKED").await;
    // Tokens of other keys are untouched.
    let other = writer_token(&proxy, "").await;
    assert_forwarded(create_offer(&proxy, &other).await, "key:example-writer").await;
}
