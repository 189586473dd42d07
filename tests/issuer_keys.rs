//! Trusted issuers, against an identity provider played by a local server that
//! publishes its JWKS and can rotate its keys or go down: its access tokens admitted
//! with mapped scopes, key rotation picked up through a throttled refetch, forged
//! `kid`s that cannot make the proxy hammer the IdP, the last good keys kept while it
//! is down, and the jwt-bearer grant redeeming ID-JAGs once each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use authmd_proxy::body::Body;
use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey};
use hyper::Response;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{TestProxy, client, json};

const ISSUER: &str = "https://idp.test";

/// One IdP signing key: its PEM and its public JWK.
struct IdpKey {
    kid: String,
    pem: String,
    jwk: Value,
}

fn idp_key() -> IdpKey {
    let (key, pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    IdpKey {
        kid: key.kid().to_owned(),
        jwk: jwk_of(&pem),
        pem,
    }
}

/// The public JWK of a PEM key, rendered by the proxy's own JWKS code (an IdP
/// publishes the same RFC 7517 form).
fn jwk_of(pem: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    std::fs::write(&path, pem).unwrap();
    let keys = authmd_proxy::tokens::signing::SigningKeys::from_files(&[path]).unwrap();
    let jwks: Value = serde_json::from_slice(keys.jwks()).unwrap();
    jwks["keys"][0].clone()
}

/// The identity provider: serves the JWKS it currently holds, counts fetches, and
/// answers 503 while `down`.
#[derive(Clone)]
struct Idp {
    keys: Arc<ArcSwap<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    jwks_uri: String,
}

impl Idp {
    async fn start(keys: &[&IdpKey]) -> Idp {
        let state = Arc::new(ArcSwap::from_pointee(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        ));
        let fetches = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (s, f, d) = (state.clone(), fetches.clone(), down.clone());
        let addr = support::upstream(move |_| {
            f.fetch_add(1, Ordering::SeqCst);
            let body = json!({ "keys": **s.load() }).to_string();
            let down = d.load(Ordering::SeqCst);
            async move {
                let mut response = Response::new(Body::full(body));
                if down {
                    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                }
                response
            }
        })
        .await;
        Idp {
            keys: state,
            fetches,
            down,
            jwks_uri: format!("http://{addr}/jwks"),
        }
    }

    fn serve(&self, keys: &[&IdpKey]) {
        self.keys
            .store(Arc::new(keys.iter().map(|k| k.jwk.clone()).collect()));
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn proxy(idp: &Idp, refetch: &str) -> TestProxy {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap();
    let yaml = format!(
        "{example}\ntrusted_issuers:\n  - issuer: {ISSUER}\n    jwks_uri: {}\n    access_tokens: true\n    \
         identity_assertions: true\n    scope_map: {{offers.read: [offers:read], offers.write: [offers:write]}}\n    \
         tier: verified\n    refetch_interval: {refetch}\n",
        idp.jwks_uri
    );
    TestProxy::start(&yaml, None).await
}

/// An IdP serving one key, a proxy trusting it, and claims of a token (signed with
/// that key) the proxy has admitted once: the keys are loaded.
async fn admitted(refetch: &str) -> (IdpKey, Idp, TestProxy, Value) {
    let k1 = idp_key();
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, refetch).await;
    let claims = access_claims(&proxy, "offers.write");
    let (status, body) = write(&proxy, &sign(&k1.kid, None, &claims, &k1.pem)).await;
    assert_eq!(status, 200, "{body}");
    (k1, idp, proxy, claims)
}

fn now() -> i64 {
    authmd_proxy::store::unix_now()
}

fn sign(kid: &str, typ: Option<&str>, claims: &Value, pem: &str) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = typ.map(str::to_owned);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn access_claims(proxy: &TestProxy, scope: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": "user-1", "aud": proxy.url, "scope": scope,
        "iat": now(), "exp": now() + 300,
    })
}

/// `POST /api/v1/offers` (needs offers:write) with a bearer token: status and body.
async fn write(proxy: &TestProxy, token: &str) -> (u16, Value) {
    let response = client()
        .post(proxy.url("/api/v1/offers"))
        .bearer_auth(token)
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 401 {
        let www = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(www.contains("error=\"invalid_token\""), "{www}");
    }
    (status, json(response).await)
}

#[tokio::test]
async fn an_issuers_access_token_is_admitted_with_its_mapped_scopes() {
    let k1 = idp_key();
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;
    for typ in [Some("at+jwt"), Some("JWT"), None] {
        let token = sign(
            &k1.kid,
            typ,
            &access_claims(&proxy, "offers.read offers.write"),
            &k1.pem,
        );
        let (status, echoed) = write(&proxy, &token).await;
        assert_eq!(status, 200, "{typ:?}: {echoed}");
        assert_eq!(echoed["headers"]["x-authmd-principal"], "idp.test:user-1");
        assert_eq!(echoed["headers"]["x-authmd-tier"], "verified");
        assert_eq!(
            echoed["headers"]["x-authmd-scopes"],
            "offers:read offers:write"
        );
    }
    let reader = sign(
        &k1.kid,
        Some("at+jwt"),
        &access_claims(&proxy, "offers.read"),
        &k1.pem,
    );
    assert_eq!(write(&proxy, &reader).await.0, 403);

    let edit = |f: &dyn Fn(&mut Value)| {
        let mut claims = access_claims(&proxy, "offers.read offers.write");
        f(&mut claims);
        sign(&k1.kid, Some("at+jwt"), &claims, &k1.pem)
    };
    let (_, stranger) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let cases = [
        (
            edit(&|c| c["aud"] = json!("https://other.example")),
            "TOKEN_AUDIENCE_MISMATCH",
        ),
        (edit(&|c| c["exp"] = json!(now() - 600)), "TOKEN_EXPIRED"),
        (
            edit(&|c| c["nbf"] = json!(now() + 600)),
            "TOKEN_NOT_YET_VALID",
        ),
        (
            edit(&|c| c["iss"] = json!("https://evil.test")),
            "UNTRUSTED_TOKEN_ISSUER",
        ),
        (
            sign(
                &k1.kid,
                Some("oauth-id-jag+jwt"),
                &access_claims(&proxy, "offers.write"),
                &k1.pem,
            ),
            "INVALID_TOKEN_TYPE",
        ),
        (
            sign(
                &k1.kid,
                Some("at+jwt"),
                &access_claims(&proxy, "offers.write"),
                &stranger,
            ),
            "INVALID_TOKEN_SIGNATURE",
        ),
    ];
    for (token, code) in cases {
        let (status, body) = write(&proxy, &token).await;
        assert_eq!(
            (status, body["code"].as_str().unwrap()),
            (401, code),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_rotated_key_is_fetched_when_a_token_first_names_it() {
    let (k1, idp, proxy, claims) = admitted("0s").await;
    let k2 = idp_key();

    idp.serve(&[&k2]);
    let (status, body) = write(&proxy, &sign(&k2.kid, None, &claims, &k2.pem)).await;
    assert_eq!(status, 200, "the new kid refetched the JWKS: {body}");
    // k1 is gone from the IdP's set; a new k1 token is now refused.
    let mut fresh = claims.clone();
    fresh["jti"] = json!("another");
    let (status, body) = write(&proxy, &sign(&k1.kid, None, &fresh, &k1.pem)).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (401, "UNKNOWN_TOKEN_KEY")
    );
}

#[tokio::test]
async fn forged_kids_cannot_make_the_proxy_hammer_the_idp() {
    let (k1, idp, proxy, claims) = admitted("1h").await;
    let before = idp.fetches();
    for i in 0..20 {
        let (status, body) = write(
            &proxy,
            &sign(&format!("forged-{i}"), None, &claims, &k1.pem),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str().unwrap()),
            (401, "UNKNOWN_TOKEN_KEY")
        );
    }
    assert!(
        idp.fetches() <= before + 1,
        "{} fetches for 20 forged kids",
        idp.fetches() - before
    );
}

#[tokio::test]
async fn the_last_good_keys_stay_in_use_while_the_idp_is_down() {
    let (k1, idp, proxy, claims) = admitted("0s").await;

    idp.down.store(true, Ordering::SeqCst);
    // An unknown kid makes the proxy try (and fail) to refetch: the old set stays.
    let before = idp.fetches();
    let (status, body) = write(&proxy, &sign("rotated-away", None, &claims, &k1.pem)).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (401, "UNKNOWN_TOKEN_KEY")
    );
    assert!(idp.fetches() > before, "the refetch reached the IdP");
    let mut other = claims.clone();
    other["sub"] = json!("user-2");
    let (status, echoed) = write(&proxy, &sign(&k1.kid, None, &other, &k1.pem)).await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(echoed["headers"]["x-authmd-principal"], "idp.test:user-2");
}

fn id_jag(proxy: &TestProxy, key: &IdpKey, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = json!({
        "iss": ISSUER, "sub": "user-42", "aud": proxy.url, "client_id": "agent-1",
        "jti": format!("jti-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()),
        "iat": now(), "exp": now() + 300, "scope": "offers:read offers:write",
    });
    edit(&mut claims);
    sign(&key.kid, Some("oauth-id-jag+jwt"), &claims, &key.pem)
}

async fn redeem(proxy: &TestProxy, assertion: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion),
    ];
    form.extend_from_slice(extra);
    client()
        .post(proxy.url("/oauth2/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn assert_grant_error(response: reqwest::Response, code: &str) {
    assert_eq!(response.status(), 400);
    let body = json(response).await;
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert_eq!(body["code"], code, "{body}");
}

#[tokio::test]
async fn the_jwt_bearer_grant_redeems_an_id_jag_once() {
    let k1 = idp_key();
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;
    let metadata = json(
        client()
            .get(proxy.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:ietf:params:oauth:grant-type:jwt-bearer"))
    );
    assert_eq!(
        metadata["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );

    let assertion = id_jag(&proxy, &k1, |_| {});
    let response = redeem(&proxy, &assertion, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = json(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "offers:read offers:write");
    let token = body["access_token"].as_str().unwrap();
    let (status, echoed) = write(&proxy, token).await;
    assert_eq!(status, 200, "{echoed}");
    assert!(
        echoed["headers"]["x-authmd-principal"]
            .as_str()
            .unwrap()
            .starts_with("idp:")
    );

    assert_grant_error(redeem(&proxy, &assertion, &[]).await, "ASSERTION_REPLAYED").await;
    let cases = [
        (
            sign(&k1.kid, Some("JWT"), &json!({"iss": ISSUER}), &k1.pem),
            "INVALID_ASSERTION_TYPE",
        ),
        (
            id_jag(&proxy, &k1, |c| c["exp"] = json!(now() - 600)),
            "ASSERTION_EXPIRED",
        ),
        (
            id_jag(&proxy, &k1, |c| c["aud"] = json!("https://other.example")),
            "ASSERTION_AUDIENCE_MISMATCH",
        ),
        (
            id_jag(&proxy, &k1, |c| c["iss"] = json!("https://evil.test")),
            "UNTRUSTED_ISSUER",
        ),
    ];
    for (assertion, code) in cases {
        assert_grant_error(redeem(&proxy, &assertion, &[]).await, code).await;
    }
    let mismatch = id_jag(&proxy, &k1, |_| {});
    assert_grant_error(
        redeem(&proxy, &mismatch, &[("client_id", "other")]).await,
        "ASSERTION_CLIENT_MISMATCH",
    )
    .await;
    let missing = client()
        .post(proxy.url("/oauth2/token"))
        .form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")])
        .send()
        .await
        .unwrap();
    assert_eq!(json(missing).await["error"], "invalid_request");
}
