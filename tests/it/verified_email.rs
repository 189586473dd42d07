//! `verified_email` identity assertions: an OpenID Connect `id_token` from a trusted
//! issuer (`trusted_issuers[].verified_email`), played by a local server publishing
//! its JWKS, registers an agent and claims an anonymous registration; every way an
//! `id_token` can be wrong (unverified address, another domain, another audience,
//! expired, too old, a bad signature, HMAC, an ID-JAG in its place, a replay) is
//! refused with its own code and issues nothing; an `id_token` never redeems at the
//! token endpoint; the metadata and auth.md advertise the type only when an issuer
//! is configured for it; `check` names each bad field.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use authmd_proxy::body::Body;
use hyper::Response;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support;
use crate::support::{IssuerKey as Key, TestProxy, assert_envelope, client};

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");
const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"));
const ISSUER: &str = "https://accounts.test";
const CLIENT_ID: &str = "authmd-api";
const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// The OpenID provider: one Ed25519 key, its JWKS served over HTTP.
struct Provider {
    key: Key,
    jwks_uri: String,
}

impl Provider {
    async fn start() -> Provider {
        let key = Key::new("op-1");
        let body = json!({ "keys": [key.jwk.clone()] }).to_string();
        let addr = support::upstream(move |_| {
            let body = body.clone();
            async move {
                let mut response = Response::new(Body::full(body));
                response
                    .headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                response
            }
        })
        .await;
        Provider {
            key,
            jwks_uri: format!("http://{addr}/jwks"),
        }
    }

    /// An `id_token` for `jane@example.com` (verified) issued now to this API's
    /// client, with `edit` applied to its claims, signed with the provider's key.
    fn id_token(&self, edit: impl FnOnce(&mut Value)) -> String {
        self.signed(&self.key, Some("JWT"), edit)
    }

    fn signed(&self, key: &Key, typ: Option<&str>, edit: impl FnOnce(&mut Value)) -> String {
        let now = authmd_proxy::clock::unix_now();
        let mut claims = json!({
            "iss": ISSUER, "sub": "248289761001", "aud": CLIENT_ID,
            "email": "jane@example.com", "email_verified": true, "name": "Jane Doe",
            "iat": now, "exp": now + 600, "jti": unique(),
        });
        edit(&mut claims);
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = typ.map(str::to_owned);
        header.kid = Some(self.key.kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ed_pem(key.pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// The example config trusting the provider: `trust` is the issuer entry's body
    /// after `issuer` and `jwks_uri`.
    fn config(&self, trust: &str) -> String {
        format!(
            "{EXAMPLE}\ntrusted_issuers:\n  - issuer: {ISSUER}\n    jwks_uri: {}\n{trust}",
            self.jwks_uri
        )
    }

    /// The example config trusting the provider for `verified_email` only, addresses
    /// at example.com.
    fn email_only(&self) -> String {
        self.config(&format!(
            "    verified_email:\n      client_id: {CLIENT_ID}\n      email_domains: [Example.COM]\n"
        ))
    }
}

fn unique() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("jti-{nanos}-{}", COUNTER.fetch_add(1, Ordering::SeqCst))
}

async fn post(proxy: &TestProxy, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(proxy.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn status(proxy: &TestProxy, method: &str, path: &str, key: &str) -> u16 {
    client()
        .request(method.parse().unwrap(), proxy.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn agent_auth(proxy: &TestProxy) -> Value {
    let metadata: Value = client()
        .get(proxy.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    metadata["agent_auth"].clone()
}

#[tokio::test]
async fn a_verified_email_registers_an_agent_at_the_claimed_tier() {
    let op = Provider::start().await;
    let proxy = TestProxy::start(&op.email_only(), None).await;

    let block = agent_auth(&proxy).await;
    assert_eq!(
        block["identity_assertion"]["assertion_types_supported"],
        json!(["verified_email"]),
        "an issuer trusted only for id_tokens is not trusted for ID-JAGs: {block}"
    );
    assert!(
        block["identity_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("identity_assertion")),
        "{block}"
    );
    let md = client()
        .get(proxy.url("/auth.md"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        md.contains("\"assertion_type\": \"verified_email\""),
        "{md}"
    );
    assert!(md.contains("`email_verified: true`"), "{md}");
    assert!(md.contains(&format!("`aud` = `{CLIENT_ID}`")), "{md}");
    assert!(md.contains("`example.com`"), "{md}");

    let response = post(
        &proxy,
        "/agent/auth/register",
        &json!({
            "type": "identity_assertion",
            "assertion_type": "verified_email",
            "assertion": op.id_token(|_| {}),
            "client_name": "jane's agent",
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let issued = support::json(response).await;
    assert_eq!(issued["registration_type"], "agent-provider", "{issued}");
    assert_eq!(issued["tier"], "verified", "{issued}");
    let key = issued["credential"].as_str().unwrap();
    assert_eq!(status(&proxy, "DELETE", "/api/v1/offers/1", key).await, 200);

    // The identity type may name the assertion type itself; the address's domain is
    // compared without regard to case; a token without `jti` is remembered by digest.
    let token = op.id_token(|c| {
        c["email"] = json!("Ops@EXAMPLE.com");
        c.as_object_mut().unwrap().remove("jti");
    });
    let body = json!({"identity_type": "verified_email", "identity_assertion": token});
    let response = post(&proxy, "/agent/auth/register", &body).await;
    assert_eq!(response.status(), 200);
    let replay = post(&proxy, "/agent/auth/register", &body).await;
    assert_envelope(replay, 401, "invalid_grant", "REPLAY_DETECTED").await;

    // `type: verified_email` with another `assertion_type` names both.
    let body = json!({
        "type": "verified_email", "assertion_type": ID_JAG, "assertion": op.id_token(|_| {}),
    });
    let refused = post(&proxy, "/agent/auth/register", &body).await;
    let body = assert_envelope(refused, 400, "invalid_request", "INVALID_REQUEST").await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("verified_email") && message.contains(ID_JAG),
        "{body}"
    );

    // An ID-JAG type is not accepted from an issuer trusted only for id_tokens.
    let body = json!({
        "type": "identity_assertion", "assertion_type": ID_JAG, "assertion": op.id_token(|_| {}),
    });
    let refused = post(&proxy, "/agent/auth/register", &body).await;
    let body = assert_envelope(
        refused,
        400,
        "invalid_request",
        "UNSUPPORTED_ASSERTION_TYPE",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("`verified_email`"),
        "{body}"
    );
}

#[tokio::test]
async fn a_verified_email_claims_an_anonymous_registration() {
    let op = Provider::start().await;
    let proxy = TestProxy::start(&op.email_only(), None).await;
    let response = post(
        &proxy,
        "/agent/auth/register",
        &json!({"type": "anonymous", "client_name": "bot"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let registered = support::json(response).await;
    let key = registered["credential"].as_str().unwrap();
    let registration_id = registered["registration_id"].as_str().unwrap();
    assert!(registered.get("claim_url").is_some(), "{registered}");
    assert_eq!(status(&proxy, "DELETE", "/api/v1/offers/1", key).await, 403);

    // No `assertion_type`: the id_token is told from an ID-JAG by its `typ`.
    let token = op.id_token(|_| {});
    let claim = json!({"registration_id": registration_id, "identity_assertion": token});
    let response = post(&proxy, "/agent/auth/claim", &claim).await;
    assert_eq!(response.status(), 200);
    let claimed = support::json(response).await;
    assert_eq!(claimed["status"], "claimed", "{claimed}");
    assert_eq!(claimed["tier"], "verified", "{claimed}");
    assert_eq!(status(&proxy, "DELETE", "/api/v1/offers/1", key).await, 200);

    // The same id_token cannot claim another registration.
    let other = post(
        &proxy,
        "/agent/auth/register",
        &json!({"type": "anonymous"}),
    )
    .await;
    let other = support::json(other).await;
    let claim = json!({
        "registration_id": other["registration_id"],
        "assertion_type": "verified_email",
        "identity_assertion": token,
    });
    let replay = post(&proxy, "/agent/auth/claim", &claim).await;
    assert_envelope(replay, 401, "invalid_grant", "REPLAY_DETECTED").await;
}

#[tokio::test]
async fn every_bad_id_token_is_refused_with_its_own_code_and_registers_nothing() {
    let op = Provider::start().await;
    let proxy = TestProxy::start(&op.email_only(), None).await;
    let now = authmd_proxy::clock::unix_now();
    let impostor = Key::new("op-1");
    let hmac = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("op-1".into());
        jsonwebtoken::encode(
            &header,
            &json!({"iss": ISSUER, "sub": "x", "aud": CLIENT_ID, "iat": now, "exp": now + 60,
                    "email": "jane@example.com", "email_verified": true}),
            &EncodingKey::from_secret(b"guessable"),
        )
        .unwrap()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "email_verified false",
            op.id_token(|c| c["email_verified"] = json!(false)),
            "EMAIL_NOT_VERIFIED",
        ),
        (
            "email_verified missing",
            op.id_token(|c| {
                c.as_object_mut().unwrap().remove("email_verified");
            }),
            "EMAIL_NOT_VERIFIED",
        ),
        (
            "another domain",
            op.id_token(|c| c["email"] = json!("mallory@example.org")),
            "EMAIL_DOMAIN_NOT_ALLOWED",
        ),
        (
            "a subdomain is another domain",
            op.id_token(|c| c["email"] = json!("x@mail.example.com")),
            "EMAIL_DOMAIN_NOT_ALLOWED",
        ),
        (
            "no e-mail",
            op.id_token(|c| {
                c.as_object_mut().unwrap().remove("email");
            }),
            "INVALID_ASSERTION",
        ),
        (
            "another client's id_token",
            op.id_token(|c| c["aud"] = json!("another-app")),
            "ASSERTION_AUDIENCE_MISMATCH",
        ),
        (
            "this API among several audiences, no azp",
            op.id_token(|c| c["aud"] = json!([CLIENT_ID, "another-app"])),
            "ASSERTION_AUDIENCE_MISMATCH",
        ),
        (
            "issued to another client (azp)",
            op.id_token(|c| c["azp"] = json!("another-app")),
            "ASSERTION_AUDIENCE_MISMATCH",
        ),
        (
            "expired",
            op.id_token(|c| {
                c["iat"] = json!(now - 900);
                c["exp"] = json!(now - 300);
            }),
            "ASSERTION_EXPIRED",
        ),
        (
            "issued longer ago than max_age (1h)",
            op.id_token(|c| {
                c["iat"] = json!(now - 7200);
                c["exp"] = json!(now + 3600);
            }),
            "ASSERTION_TOO_OLD",
        ),
        (
            "issued in the future",
            op.id_token(|c| c["iat"] = json!(now + 600)),
            "ASSERTION_NOT_YET_VALID",
        ),
        (
            "signed by a key the provider does not publish",
            op.signed(&impostor, Some("JWT"), |_| {}),
            "INVALID_ASSERTION_SIGNATURE",
        ),
        ("HMAC", hmac, "UNSUPPORTED_ASSERTION_ALGORITHM"),
        (
            "an ID-JAG in an id_token's place",
            op.signed(&op.key, Some("oauth-id-jag+jwt"), |_| {}),
            "INVALID_ASSERTION_TYPE",
        ),
        (
            "an access token in an id_token's place",
            op.signed(&op.key, Some("at+jwt"), |_| {}),
            "INVALID_ASSERTION_TYPE",
        ),
        (
            "an untrusted issuer",
            op.id_token(|c| c["iss"] = json!("https://evil.test")),
            "UNTRUSTED_ISSUER",
        ),
    ];
    for (what, token, code) in cases {
        let body = json!({
            "type": "identity_assertion", "assertion_type": "verified_email", "assertion": token,
        });
        let response = post(&proxy, "/agent/auth/register", &body).await;
        let refused = assert_envelope(response, 401, "invalid_grant", code).await;
        let message = refused["message"].as_str().unwrap();
        assert!(!message.contains("jane"), "{what}: {refused}");
        assert!(!message.is_empty(), "{what}: {refused}");
    }
    // Each refused token was refused before its use was recorded: a good one with
    // the `jti` of a refused one still registers.
    let jti = "shared-jti";
    let bad = op.id_token(|c| {
        c["jti"] = json!(jti);
        c["email_verified"] = json!(false);
    });
    let body = json!({"type": "verified_email", "assertion": bad});
    let response = post(&proxy, "/agent/auth/register", &body).await;
    assert_envelope(response, 401, "invalid_grant", "EMAIL_NOT_VERIFIED").await;
    let good = op.id_token(|c| c["jti"] = json!(jti));
    let body = json!({"type": "verified_email", "assertion": good});
    let response = post(&proxy, "/agent/auth/register", &body).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_id_token_never_redeems_at_the_token_endpoint() {
    let op = Provider::start().await;
    let yaml = op.config(&format!(
        "    identity_assertions: true\n    verified_email:\n      client_id: {CLIENT_ID}\n"
    ));
    let proxy = TestProxy::start(&yaml, None).await;
    let block = agent_auth(&proxy).await;
    assert_eq!(
        block["identity_assertion"]["assertion_types_supported"],
        json!([ID_JAG, "verified_email"]),
        "{block}"
    );
    let token = op.id_token(|c| c["aud"] = json!([CLIENT_ID]));
    let response = client()
        .post(proxy.url("/oauth2/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");
    // Still good for a registration: it was not used up.
    let body = json!({"type": "identity_assertion", "assertion_type": "verified_email", "assertion": token});
    let response = post(&proxy, "/agent/auth/register", &body).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn without_a_verified_email_issuer_the_type_is_neither_advertised_nor_accepted() {
    let op = Provider::start().await;
    let proxy = TestProxy::start(&op.config("    identity_assertions: true\n"), None).await;
    let block = agent_auth(&proxy).await;
    assert_eq!(
        block["identity_assertion"]["assertion_types_supported"],
        json!([ID_JAG]),
        "{block}"
    );
    let body = json!({
        "type": "identity_assertion", "assertion_type": "verified_email",
        "assertion": op.id_token(|_| {}),
    });
    let response = post(&proxy, "/agent/auth/register", &body).await;
    let refused = assert_envelope(
        response,
        400,
        "invalid_request",
        "UNSUPPORTED_ASSERTION_TYPE",
    )
    .await;
    assert!(
        refused["message"].as_str().unwrap().contains(ID_JAG),
        "{refused}"
    );
    // Without `assertion_type`, an id_token is taken for an ID-JAG, and refused as one.
    let body = json!({"type": "identity_assertion", "assertion": op.id_token(|_| {})});
    let response = post(&proxy, "/agent/auth/register", &body).await;
    assert_envelope(response, 401, "invalid_grant", "INVALID_ASSERTION_TYPE").await;
}

#[test]
fn check_names_each_bad_verified_email_field() {
    let yaml = format!(
        "{EXAMPLE}\ntrusted_issuers:\n  - issuer: {ISSUER}\n    jwks_uri: http://127.0.0.1:1/jwks\n    verified_email:\n      client_id: \"  \"\n      email_domains: [example.com, \"@example.org\", \"*.example.net\"]\n      max_age: 2d\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace(path.to_str().unwrap(), "FILE");
    assert_eq!(out.status.code(), Some(64), "{text}");
    // The appended block is last, so its lines are found from the end: the example's
    // comments may name the same fields.
    let line = |needle: &str| {
        yaml.lines()
            .collect::<Vec<_>>()
            .iter()
            .rposition(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    for expected in [
        format!("FILE:{}:", line("client_id: \"  \"")),
        "trusted_issuers[0].verified_email.client_id: must name the client id".to_owned(),
        format!("FILE:{}:", line("email_domains:")),
        "trusted_issuers[0].verified_email.email_domains[1]: `@example.org` is not a domain name"
            .to_owned(),
        "trusted_issuers[0].verified_email.email_domains[2]: `*.example.net` is not a domain name"
            .to_owned(),
        format!("FILE:{}:", line("max_age: 2d")),
        "trusted_issuers[0].verified_email.max_age".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
    }
    // An issuer listed for nothing says what it can be trusted for.
    let yaml = format!(
        "{EXAMPLE}\ntrusted_issuers:\n  - issuer: {ISSUER}\n    jwks_uri: http://127.0.0.1:1/jwks\n    identity_assertions: false\n"
    );
    std::fs::write(&path, &yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("`verified_email:`"), "{text}");
}

/// `registration.issue_credential: at_claim` where the claim token alone claims: the
/// registration answer holds no credential, the claim page's form claims and shows
/// the key once, and it works from then on; `check` refuses `at_claim` where no
/// claim can be completed.
#[tokio::test]
async fn at_claim_the_key_comes_with_the_claim() {
    // Without the example's sign-in, where the claim page's form would need one.
    let example = support::example_without("login");
    let from = "require_identity_to_claim: true";
    assert!(example.contains(from));
    let yaml = example.replace(
        from,
        "require_identity_to_claim: false\n  issue_credential: at_claim",
    );
    let proxy = TestProxy::start(&yaml, None).await;
    let response = post(
        &proxy,
        "/agent/auth/register",
        &json!({"type": "anonymous", "client_name": "bot"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let registered = support::json(response).await;
    assert!(registered.get("credential").is_none(), "{registered}");
    assert!(registered.get("access_token").is_none(), "{registered}");
    assert_eq!(registered["credential_issued"], "at_claim", "{registered}");
    let token = registered["claim_token"].as_str().unwrap();
    // A password is ignored, and the message says the key comes with the claim.
    let with_password = post(
        &proxy,
        "/agent/auth/register",
        &json!({"type": "anonymous", "client_name": "bot", "password": "hunter2"}),
    )
    .await;
    let with_password = support::json(with_password).await;
    let message = with_password["message"].as_str().unwrap();
    assert!(
        message.contains("the claim answer's `credential`"),
        "{message}"
    );
    assert!(message.contains("keeps no passwords"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    let page = client()
        .post(proxy.url("/agent/auth/claim"))
        .form(&[("claim_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["cache-control"].to_str().unwrap(),
        "no-store"
    );
    let html = page.text().await.unwrap();
    let start = html.find("<code>ak_live_").unwrap() + "<code>".len();
    let key = &html[start..start + html[start..].find("</code>").unwrap()];
    assert_eq!(status(&proxy, "DELETE", "/api/v1/offers/1", key).await, 200);

    // No claim can be completed in the example without its sign-in (it trusts no
    // issuer): `at_claim` would leave every anonymous registration without a key.
    let yaml = example.replace(from, &format!("{from}\n  issue_credential: at_claim"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(
        text.contains("registration.issue_credential: `at_claim` hands the key out at the claim"),
        "{text}"
    );
}
