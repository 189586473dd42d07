//! A trusted issuer (`trusted_issuers:` with `access_tokens` and
//! `identity_assertions`), against an identity provider played by a local server
//! that publishes its JWKS, can switch the keys it serves, can go down, and counts
//! how often it is asked: its access tokens on API routes (mapped scopes, tier,
//! principal, and one refusal code per way a token can be wrong), key rotation
//! picked up on demand, forged `kid`s throttled, the last good keys kept while the
//! IdP is down, and the jwt-bearer grant (RFC 7523) redeeming ID-JAGs once each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use authmd_proxy::body::Body;
use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::Response;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support;
use crate::support::{IssuerKey as Key, TestProxy, assert_envelope, client};

const ISSUER: &str = "https://idp.test";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The identity provider: serves whichever keys it holds now, answers 503 while
/// `down`, and counts every fetch.
struct Idp {
    /// Every answer waits for a permit (plenty, unless started gated).
    gate: Arc<tokio::sync::Semaphore>,
    keys: Arc<ArcSwap<Vec<Value>>>,
    down: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    jwks_uri: String,
}

impl Idp {
    async fn start(keys: &[&Key]) -> Idp {
        Idp::start_gated(keys, false).await
    }

    /// With `gated`, every fetch hangs until [`Idp::open`].
    async fn start_gated(keys: &[&Key], gated: bool) -> Idp {
        let permits = if gated { 0 } else { 1 << 20 };
        let gate = Arc::new(tokio::sync::Semaphore::new(permits));
        let g = gate.clone();
        let served = Arc::new(ArcSwap::from_pointee(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        ));
        let down = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (s, d, f) = (served.clone(), down.clone(), fetches.clone());
        let addr = support::upstream(move |_| {
            f.fetch_add(1, Ordering::SeqCst);
            let body = json!({ "keys": **s.load() }).to_string();
            let down = d.load(Ordering::SeqCst);
            let g = g.clone();
            async move {
                let _permit = g.acquire().await.unwrap();
                if down {
                    let mut response = Response::new(Body::full("down for maintenance"));
                    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    return response;
                }
                let mut response = Response::new(Body::full(body));
                response
                    .headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                response
            }
        })
        .await;
        Idp {
            gate,
            keys: served,
            down,
            fetches,
            jwks_uri: format!("http://{addr}/jwks"),
        }
    }

    /// From now on, publishes exactly `keys`.
    fn serve(&self, keys: &[&Key]) {
        self.keys
            .store(Arc::new(keys.iter().map(|k| k.jwk.clone()).collect()));
    }

    /// Lets the held fetches (and all later ones) answer.
    fn open(&self) {
        self.gate.add_permits(1 << 20);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// The example configuration trusting the IdP for access tokens and ID-JAGs.
async fn proxy(idp: &Idp, refetch_interval: &str) -> TestProxy {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap();
    let yaml = format!(
        "{example}
trusted_issuers:
  - issuer: {ISSUER}
    jwks_uri: {}
    access_tokens: true
    identity_assertions: true
    scope_map: {{\"offers.read\": [offers:read], \"offers.write\": [offers:write]}}
    tier: verified
    refetch_interval: {refetch_interval}
",
        idp.jwks_uri
    );
    TestProxy::start(&yaml, None).await
}

fn now() -> i64 {
    authmd_proxy::clock::unix_now()
}

/// A value no other call returns (token texts must differ, or the proxy's cache of
/// verified tokens would answer instead of the verification under test).
fn unique() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos}-{}", COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Claims of an access token of the IdP for this proxy.
fn access_claims(proxy: &TestProxy, scope: &str) -> Value {
    json!({
        "iss": ISSUER, "sub": "user-1", "aud": proxy.url, "scope": scope,
        "iat": now(), "exp": now() + 300, "jti": unique(),
    })
}

/// Signs `claims` with `pem` (EdDSA), the header naming `kid` and `typ`.
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

/// An access token signed with `key`, `typ: at+jwt`.
fn access_token(key: &Key, claims: &Value) -> String {
    sign(&key.kid, Some("at+jwt"), claims, &key.pem)
}

/// An `offers.write` access token for this proxy, signed with `key`.
fn write_token(proxy: &TestProxy, key: &Key) -> String {
    access_token(key, &access_claims(proxy, "offers.write"))
}

/// `POST /api/v1/offers` (route needs `offers:write`) with a bearer token.
async fn create_offer(proxy: &TestProxy, token: &str) -> reqwest::Response {
    client()
        .post(proxy.url("/api/v1/offers"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{\"title\":\"t\"}")
        .send()
        .await
        .unwrap()
}

/// The request the echo upstream received, after asserting a 200.
async fn forwarded(response: reqwest::Response) -> Value {
    let status = response.status().as_u16();
    let body = support::json(response).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Asserts a 401 `invalid_token` with `code`, challenge included.
async fn assert_refused(proxy: &TestProxy, token: &str, code: &str) {
    let response = create_offer(proxy, token).await;
    assert_eq!(response.status().as_u16(), 401, "{code}");
    let www = support::www(&response);
    assert!(www.contains("error=\"invalid_token\""), "{code}: {www}");
    let body = assert_envelope(response, 401, "invalid_token", code).await;
    assert!(!body.to_string().contains(token), "{code}: token echoed");
}

/// Sends `token` until the proxy admits it (the background JWKS fetch may be
/// running when the first request arrives); at most 10 s.
async fn admitted_eventually(proxy: &TestProxy, token: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = create_offer(proxy, token).await;
        if response.status() == 200 || tokio::time::Instant::now() > deadline {
            return forwarded(response).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header_of(echo: &Value, name: &str) -> String {
    echo["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {echo}"))
        .to_owned()
}

// ---------------------------------------------------------------------------
// Access tokens of the trusted issuer
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_issuers_access_token_is_admitted_with_mapped_scopes_tier_and_principal() {
    let k1 = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;
    for typ in [
        Some("at+jwt"),
        Some("JWT"),
        Some("application/at+jwt"),
        None,
    ] {
        let claims = access_claims(&proxy, "offers.read offers.write");
        let echo = forwarded(create_offer(&proxy, &sign("k1", typ, &claims, &k1.pem)).await).await;
        assert_eq!(header_of(&echo, "x-authmd-principal"), "idp.test:user-1");
        assert_eq!(header_of(&echo, "x-authmd-tier"), "verified");
        let scopes = header_of(&echo, "x-authmd-scopes");
        let scopes: Vec<&str> = scopes.split_whitespace().collect();
        assert!(scopes.contains(&"offers:write"), "{typ:?}: {scopes:?}");
        assert!(scopes.contains(&"offers:read"), "{typ:?}: {scopes:?}");
        assert!(
            !scopes.contains(&"offers:delete"),
            "only mapped scopes, not the tier's: {scopes:?}"
        );
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/api/v1/offers");
    }

    // A token whose scopes map only to offers:read may read, not write.
    let reader = access_token(&k1, &access_claims(&proxy, "offers.read"));
    let response = create_offer(&proxy, &reader).await;
    assert_envelope(response, 403, "insufficient_scope", "FORBIDDEN").await;
    let response = client()
        .get(proxy.url("/api/v1/offers"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let echo = forwarded(response).await;
    assert_eq!(header_of(&echo, "x-authmd-principal"), "idp.test:user-1");

    // Scopes the map does not name grant nothing, even when they name this API's
    // scopes verbatim.
    let verbatim = access_token(&k1, &access_claims(&proxy, "offers:write"));
    let response = create_offer(&proxy, &verbatim).await;
    assert_envelope(response, 403, "insufficient_scope", "FORBIDDEN").await;

    // The `scope` claim may also be an array.
    let mut claims = access_claims(&proxy, "");
    claims["scope"] = json!(["offers.write"]);
    let echo = forwarded(create_offer(&proxy, &access_token(&k1, &claims)).await).await;
    assert!(header_of(&echo, "x-authmd-scopes").contains("offers:write"));

    // The `/mcp` resource identifier is an accepted audience too, for the routes of
    // `/mcp` only (RFC 8707).
    let mut claims = access_claims(&proxy, "offers.read offers.write");
    claims["aud"] = json!(format!("{}/mcp", proxy.url));
    let for_mcp = access_token(&k1, &claims);
    let mcp = client().get(proxy.url("/mcp")).bearer_auth(&for_mcp);
    forwarded(mcp.send().await.unwrap()).await;
    assert_refused(&proxy, &for_mcp, "TOKEN_WRONG_RESOURCE").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_bad_access_token_is_refused_with_its_own_code() {
    let k1 = Key::new("k1");
    let forger = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;
    // The keys are there: a good token is admitted.
    admitted_eventually(&proxy, &write_token(&proxy, &k1)).await;

    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut claims = access_claims(&proxy, "offers.read offers.write");
        edit(&mut claims);
        claims
    };

    let wrong_aud = access_token(&k1, &edited(&|c| c["aud"] = json!("https://other.example")));
    assert_refused(&proxy, &wrong_aud, "TOKEN_AUDIENCE_MISMATCH").await;

    let no_aud = access_token(
        &k1,
        &edited(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
    );
    let response = create_offer(&proxy, &no_aud).await;
    assert_eq!(response.status(), 401, "a token without aud is refused");

    let expired = access_token(
        &k1,
        &edited(&|c| {
            c["exp"] = json!(now() - 600);
            c["iat"] = json!(now() - 900);
        }),
    );
    assert_refused(&proxy, &expired, "TOKEN_EXPIRED").await;

    let early = access_token(&k1, &edited(&|c| c["nbf"] = json!(now() + 600)));
    assert_refused(&proxy, &early, "TOKEN_NOT_YET_VALID").await;

    let stranger = access_token(&k1, &edited(&|c| c["iss"] = json!("https://evil.test")));
    assert_refused(&proxy, &stranger, "UNTRUSTED_TOKEN_ISSUER").await;

    // An ID-JAG is not an access token, even from the same issuer and key.
    let id_jag = sign("k1", Some("oauth-id-jag+jwt"), &edited(&|_| {}), &k1.pem);
    assert_refused(&proxy, &id_jag, "INVALID_TOKEN_TYPE").await;

    // HMAC keyed with the issuer's public key: the classic confusion.
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("k1".into());
    for secret in [
        k1.x().as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(k1.x()).unwrap(),
    ] {
        let hmac = jsonwebtoken::encode(
            &header,
            &edited(&|_| {}),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_refused(&proxy, &hmac, "TOKEN_ALGORITHM_REFUSED").await;
    }

    // `alg: none`, no signature.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt", "kid": "k1"}).to_string()),
        URL_SAFE_NO_PAD.encode(edited(&|_| {}).to_string()),
    );
    assert_refused(&proxy, &none, "TOKEN_ALGORITHM_REFUSED").await;

    // A header algorithm other than the key's (the key is Ed25519).
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("k1".into());
    let (_, p256) = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let es256 = jsonwebtoken::encode(
        &header,
        &edited(&|_| {}),
        &EncodingKey::from_ec_pem(p256.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_refused(&proxy, &es256, "TOKEN_ALGORITHM_REFUSED").await;

    // Another key under the same kid.
    let forged = access_token(&forger, &edited(&|_| {}));
    assert_refused(&proxy, &forged, "INVALID_TOKEN_SIGNATURE").await;

    // A signature tampered with after signing.
    let good = access_token(&k1, &edited(&|_| {}));
    let (signed, signature) = good.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 1;
    let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert_refused(&proxy, &tampered, "INVALID_TOKEN_SIGNATURE").await;

    // Claims changed after signing.
    let (head, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let raised = format!(
        "{head}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(edited(&|c| c["sub"] = json!("admin")).to_string())
    );
    assert_refused(&proxy, &raised, "INVALID_TOKEN_SIGNATURE").await;

    let unknown = sign("k9", Some("at+jwt"), &edited(&|_| {}), &k1.pem);
    assert_refused(&proxy, &unknown, "UNKNOWN_TOKEN_KEY").await;

    // The good token is still good (nothing above poisoned anything).
    forwarded(create_offer(&proxy, &good).await).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn expiry_allows_a_minute_of_clock_skew_and_no_more() {
    // Other issuers' tokens get 60 s of leeway: 20 s past `exp` is admitted, 120 s
    // past is refused.
    let k1 = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;
    let within = |exp_ago: i64| {
        let mut claims = access_claims(&proxy, "offers.write");
        claims["exp"] = json!(now() - exp_ago);
        claims["iat"] = json!(now() - 600);
        access_token(&k1, &claims)
    };
    admitted_eventually(&proxy, &within(20)).await;
    assert_refused(&proxy, &within(120), "TOKEN_EXPIRED").await;
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// The IdP's keys over time
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_rotated_key_is_picked_up_on_the_first_token_that_names_it() {
    let k1 = Key::new("k1");
    let k2 = Key::new("k2");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;
    admitted_eventually(&proxy, &write_token(&proxy, &k1)).await;

    // Before the IdP publishes k2, a k2 token is unknown.
    let early = write_token(&proxy, &k2);
    assert_refused(&proxy, &early, "UNKNOWN_TOKEN_KEY").await;

    // The IdP rolls over to k1 + k2: the very next k2 token works.
    idp.serve(&[&k1, &k2]);
    let fetched = idp.fetches();
    let echo = forwarded(create_offer(&proxy, &write_token(&proxy, &k2)).await).await;
    assert_eq!(header_of(&echo, "x-authmd-principal"), "idp.test:user-1");
    assert!(idp.fetches() > fetched, "an on-demand refetch happened");
    forwarded(create_offer(&proxy, &write_token(&proxy, &k1)).await).await;

    // The IdP retires k1: once the proxy has fetched that set, new k1 tokens are
    // unknown, and k2 tokens keep working.
    idp.serve(&[&k2]);
    let k3 = Key::new("k3");
    // A token naming a kid nobody has makes the proxy fetch the new set.
    assert_refused(&proxy, &write_token(&proxy, &k3), "UNKNOWN_TOKEN_KEY").await;
    assert_refused(&proxy, &write_token(&proxy, &k1), "UNKNOWN_TOKEN_KEY").await;
    forwarded(create_offer(&proxy, &write_token(&proxy, &k2)).await).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn forged_kids_cannot_make_the_proxy_hammer_the_idp() {
    let k1 = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "1h").await;
    admitted_eventually(&proxy, &write_token(&proxy, &k1)).await;
    let before = idp.fetches();
    assert!(before >= 1);
    for i in 0..20 {
        let token = sign(
            &format!("made-up-{i}"),
            Some("at+jwt"),
            &access_claims(&proxy, "offers.write"),
            &k1.pem,
        );
        assert_refused(&proxy, &token, "UNKNOWN_TOKEN_KEY").await;
    }
    let after = idp.fetches();
    assert!(
        after <= before + 1,
        "20 unknown kids caused {} fetches",
        after - before
    );
    // The known key keeps working throughout.
    forwarded(create_offer(&proxy, &write_token(&proxy, &k1)).await).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_last_good_keys_are_kept_while_the_idp_is_down() {
    let k1 = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;
    admitted_eventually(&proxy, &write_token(&proxy, &k1)).await;

    idp.down.store(true, Ordering::SeqCst);
    let before = idp.fetches();
    // An unknown kid asks the IdP (which answers 503): a clean 401, not a 5xx.
    let unknown = sign(
        "k-new",
        Some("at+jwt"),
        &access_claims(&proxy, "offers.write"),
        &k1.pem,
    );
    let asked = tokio::time::timeout(
        Duration::from_secs(10),
        assert_refused(&proxy, &unknown, "UNKNOWN_TOKEN_KEY"),
    );
    asked
        .await
        .expect("the proxy answers while the IdP is down");
    assert!(idp.fetches() > before, "the proxy did ask the IdP");

    // That failed fetch did not throw the keys away: a new k1 token (never seen,
    // so not cached) is verified against the last good set.
    let fresh = access_token(&k1, &access_claims(&proxy, "offers.read offers.write"));
    let echo = forwarded(create_offer(&proxy, &fresh).await).await;
    assert_eq!(header_of(&echo, "x-authmd-principal"), "idp.test:user-1");

    // Back up, with a new key: picked up on demand.
    let k2 = Key::new("k2");
    idp.serve(&[&k1, &k2]);
    idp.down.store(false, Ordering::SeqCst);
    forwarded(create_offer(&proxy, &write_token(&proxy, &k2)).await).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_token_arriving_during_a_fetch_is_admitted_once_the_keys_arrive() {
    let k1 = Key::new("k1");
    let idp = Idp::start_gated(&[&k1], true).await;
    let proxy = proxy(&idp, "1h").await;
    // The proxy's start-up fetch reaches the IdP, which holds it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while idp.fetches() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no start-up fetch");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A token arrives meanwhile: its kid is not known yet, so it waits for the
    // fetch in progress.
    let token = write_token(&proxy, &k1);
    let url = proxy.url("/api/v1/offers");
    let request = tokio::spawn({
        let token = token.clone();
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .body("{}")
                .send()
                .await
                .unwrap()
        }
    });
    // Not a readiness wait: if the request has not reached the proxy yet, it finds
    // the keys loaded and passes anyway; the pause only lets it hit the window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    idp.open();
    let response = request.await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(idp.fetches(), 1, "one fetch served both");
    assert_eq!(
        status, 200,
        "the fetch it waited for brought its key: {body}"
    );
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// The jwt-bearer grant with ID-JAGs
// ---------------------------------------------------------------------------

/// An ID-JAG for this proxy, with `edit` applied to its claims.
fn id_jag(proxy: &TestProxy, key: &Key, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = json!({
        "iss": ISSUER, "sub": "user-42", "aud": proxy.url, "client_id": "agent-1",
        "jti": format!("jti-{}", unique()), "iat": now(), "exp": now() + 300,
    });
    edit(&mut claims);
    sign(&key.kid, Some("oauth-id-jag+jwt"), &claims, &key.pem)
}

async fn token_request(proxy: &TestProxy, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(proxy.url("/oauth2/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn redeem(proxy: &TestProxy, assertion: &str) -> reqwest::Response {
    token_request(
        proxy,
        &[("grant_type", JWT_BEARER), ("assertion", assertion)],
    )
    .await
}

#[tokio::test]
async fn an_id_jag_redeems_once_for_an_access_token_that_works_on_the_api() {
    let k1 = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;

    let assertion = id_jag(&proxy, &k1, |_| {});
    let response = redeem(&proxy, &assertion).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let issued = support::json(response).await;
    assert_eq!(issued["token_type"], "Bearer", "{issued}");
    assert!(
        issued["expires_in"]
            .as_i64()
            .is_some_and(|s| s > 0 && s <= 3600),
        "{issued}"
    );
    let scope = issued["scope"].as_str().unwrap();
    assert!(
        scope.split_whitespace().any(|s| s == "offers:write"),
        "the verified tier's scopes: {scope}"
    );
    let access = issued["access_token"].as_str().unwrap();
    assert_ne!(access, assertion);

    let echo = forwarded(create_offer(&proxy, access).await).await;
    let principal = header_of(&echo, "x-authmd-principal");
    assert!(principal.starts_with("idp:"), "{principal}");
    assert_eq!(header_of(&echo, "x-authmd-tier"), "verified");
    // The same subject gets the same principal from a second assertion.
    let again = id_jag(&proxy, &k1, |_| {});
    let second = support::json(redeem(&proxy, &again).await).await;
    let echo =
        forwarded(create_offer(&proxy, second["access_token"].as_str().unwrap()).await).await;
    assert_eq!(header_of(&echo, "x-authmd-principal"), principal);

    // Replayed.
    let response = redeem(&proxy, &assertion).await;
    support::oauth_error(response, 400, "invalid_grant", "ASSERTION_REPLAYED").await;

    // The ID-JAG itself is no access token.
    assert_refused(&proxy, &assertion, "INVALID_TOKEN_TYPE").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_assertions_scope_narrows_the_token() {
    let k1 = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;
    let assertion = id_jag(&proxy, &k1, |c| c["scope"] = json!("offers:read"));
    let response = redeem(&proxy, &assertion).await;
    assert_eq!(response.status(), 200);
    let issued = support::json(response).await;
    assert_eq!(issued["scope"], "offers:read", "{issued}");
    let access = issued["access_token"].as_str().unwrap();
    let response = create_offer(&proxy, access).await;
    assert_envelope(response, 403, "insufficient_scope", "FORBIDDEN").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_bad_id_jag_is_invalid_grant_with_its_own_code() {
    let k1 = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;

    let cases: Vec<(String, &str)> = vec![
        (
            sign(
                "k1",
                Some("at+jwt"),
                &json!({"iss": ISSUER, "sub": "s", "aud": proxy.url, "client_id": "agent-1",
                        "jti": unique(), "iat": now(), "exp": now() + 300}),
                &k1.pem,
            ),
            "INVALID_ASSERTION_TYPE",
        ),
        (
            id_jag(&proxy, &k1, |c| {
                c["exp"] = json!(now() - 600);
                c["iat"] = json!(now() - 900);
            }),
            "ASSERTION_EXPIRED",
        ),
        (
            id_jag(&proxy, &k1, |c| {
                c["aud"] = json!("https://someone-else.example")
            }),
            "ASSERTION_AUDIENCE_MISMATCH",
        ),
        (
            id_jag(&proxy, &k1, |c| c["iss"] = json!("https://evil.test")),
            "UNTRUSTED_ISSUER",
        ),
        (
            id_jag(&proxy, &k1, |c| c["exp"] = json!(now() + 86_400)),
            "ASSERTION_LIFETIME_TOO_LONG",
        ),
        (
            id_jag(&proxy, &Key::new("k1"), |_| {}),
            "INVALID_ASSERTION_SIGNATURE",
        ),
        (
            id_jag(&proxy, &Key::new("k7"), |_| {}),
            "UNKNOWN_ASSERTION_KEY",
        ),
    ];
    for (assertion, code) in &cases {
        let response = redeem(&proxy, assertion).await;
        support::oauth_error(response, 400, "invalid_grant", code).await;
    }

    // A public client naming itself must be the assertion's client.
    let assertion = id_jag(&proxy, &k1, |_| {});
    let response = token_request(
        &proxy,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", &assertion),
            ("client_id", "other"),
        ],
    )
    .await;
    support::oauth_error(response, 400, "invalid_grant", "ASSERTION_CLIENT_MISMATCH").await;
    // The refusal did not use up the assertion: its own client redeems it.
    let response = token_request(
        &proxy,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", &assertion),
            ("client_id", "agent-1"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);

    let response = token_request(&proxy, &[("grant_type", JWT_BEARER)]).await;
    support::oauth_error(response, 400, "invalid_request", "INVALID_REQUEST").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_metadata_offers_jwt_bearer_with_the_id_jag_profile() {
    let k1 = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let proxy = proxy(&idp, "0s").await;
    let response = client()
        .get(proxy.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metadata = support::json(response).await;
    let grants = metadata["grant_types_supported"].as_array().unwrap();
    assert!(grants.iter().any(|g| g == JWT_BEARER), "{metadata}");
    assert!(
        grants.iter().any(|g| g == "client_credentials"),
        "{metadata}"
    );
    let profiles = metadata["authorization_grant_profiles_supported"]
        .as_array()
        .unwrap_or_else(|| panic!("{metadata}"));
    assert!(
        profiles
            .iter()
            .any(|p| p == "urn:ietf:params:oauth:grant-profile:id-jag"),
        "{metadata}"
    );
    assert_eq!(metadata["issuer"], proxy.url);
    proxy.shutdown().await;
}

#[tokio::test]
async fn access_tokens_only_issuer_does_not_redeem_id_jags() {
    let k1 = Key::new("k1");
    let idp = Idp::start(&[&k1]).await;
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap();
    let yaml = format!(
        "{example}\ntrusted_issuers:\n  - issuer: {ISSUER}\n    jwks_uri: {}\n    access_tokens: true\n    \
         scope_map: {{\"offers.write\": [offers:write]}}\n    refetch_interval: 0s\n",
        idp.jwks_uri
    );
    let proxy = TestProxy::start(&yaml, None).await;
    // Its access tokens work...
    let echo = admitted_eventually(&proxy, &write_token(&proxy, &k1)).await;
    assert_eq!(header_of(&echo, "x-authmd-principal"), "idp.test:user-1");
    // ...its ID-JAGs do not: the grant is not offered.
    let response = redeem(&proxy, &id_jag(&proxy, &k1, |_| {})).await;
    support::oauth_error(
        response,
        400,
        "unsupported_grant_type",
        "UNSUPPORTED_GRANT_TYPE",
    )
    .await;
    let metadata = support::json(
        client()
            .get(proxy.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        !metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == JWT_BEARER),
        "{metadata}"
    );
    assert!(
        metadata
            .get("authorization_grant_profiles_supported")
            .is_none()
    );
    proxy.shutdown().await;
}
