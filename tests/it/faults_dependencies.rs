//! Faults of the third parties the proxy depends on, over real sockets: a trusted
//! issuer's JWKS endpoint and an x402 facilitator, each played by a small local
//! server (raw TCP, so it can also hang or reset the connection) that is switched
//! from good to faulty and back while the proxy runs. For each fault the tests show
//! what the client receives (exact status, envelope code, `WWW-Authenticate` or
//! `Retry-After`), that nothing is wrongly granted or lost (no free pass, no forged
//! token admitted, the last good keys kept, an unused payment not consumed), and
//! that the proxy recovers by itself once the fault clears, without a restart.
//!
//! What `tests/it/trusted_issuers.rs` (an IdP answering 503 after a good fetch) and
//! `tests/it/payments.rs` (a facilitator whose port is closed) already show is not
//! repeated. Covered here:
//! - the JWKS answering, in turn, invalid JSON, JSON that is not a key set, an HTML
//!   page with 200, a 500, a reset connection; a JWKS that hangs past the proxy's
//!   fetch timeout (alone, and with several new `kid`s waiting on it); key sets whose
//!   only keys are unusable (an `oct` HMAC key, RSA keys with a bad modulus);
//! - the JWKS unreachable when the proxy starts (nothing ever fetched), then up;
//! - a facilitator that goes down (resets, 503) and comes back: the same payment is
//!   then served exactly once and a replay refused; a facilitator answering garbage
//!   or hanging at `/verify` and at `/settle`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step should fail the test loudly"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use authmd_proxy::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper::Response;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::support;
use crate::support::{
    IssuerKey as Key, TestProxy, WRITER_KEY, assert_envelope, client, eventually,
};

/// The proxy's longest wait for a JWKS answer (`FETCH_TIMEOUT` in
/// `src/tokens/remote.rs`; not configurable).
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Room for a loaded machine on top of a timeout the proxy enforces.
const SLACK: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// A scripted third party over raw TCP
// ---------------------------------------------------------------------------

/// What the scripted server does with one request, once it has read it whole.
#[derive(Clone, Debug)]
enum Answer {
    /// An HTTP/1.1 response, then the connection is closed.
    Http {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// Never answers; the connection stays open (for a minute, far past any timeout
    /// of the proxy under test).
    Hang,
    /// Resets the connection (RST) without a byte of response.
    Reset,
}

impl Answer {
    fn http(status: u16, content_type: &'static str, body: impl Into<String>) -> Answer {
        Answer::Http {
            status,
            content_type,
            body: body.into(),
        }
    }

    fn json(status: u16, body: &Value) -> Answer {
        Answer::http(status, "application/json", body.to_string())
    }
}

/// Decides the answer from the request's path and body.
type Script = dyn Fn(&str, &[u8]) -> Answer + Send + Sync;

/// A server on 127.0.0.1:<random> answering each request as `script` says (one
/// request per connection); returns its address and how many requests it read.
async fn scripted(
    script: impl Fn(&str, &[u8]) -> Answer + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let script: Arc<Script> = Arc::new(script);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (script, counted) = (script.clone(), counted.clone());
            tokio::spawn(async move {
                let _ = answer_one(stream, &*script, &counted).await;
            });
        }
    });
    (addr, requests)
}

async fn answer_one(
    mut stream: TcpStream,
    script: &Script,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        bytes.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
    requests.fetch_add(1, Ordering::SeqCst);
    match script(&path, &bytes[head_end..head_end + length]) {
        Answer::Http {
            status,
            content_type,
            body,
        } => {
            let reason = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Whatever");
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await
        }
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
        Answer::Reset => stream.set_zero_linger(),
    }
}

/// An upstream that counts the requests it receives and answers with the
/// principal the proxy attached.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let addr = support::upstream(move |request| {
        count.fetch_add(1, Ordering::SeqCst);
        let principal = request
            .headers()
            .get("x-authmd-principal")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        async move {
            let mut response = Response::new(Body::full(
                json!({"upstream": true, "principal": principal}).to_string(),
            ));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        }
    })
    .await;
    (addr, served)
}

// ---------------------------------------------------------------------------
// The trusted issuer and its JWKS
// ---------------------------------------------------------------------------

const ISSUER: &str = "https://idp.test";

/// A good JWKS answer publishing exactly `keys`.
fn key_set(keys: &[&Key]) -> Answer {
    Answer::json(
        200,
        &json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}),
    )
}

/// The identity provider: answers every JWKS fetch with whatever it is told now,
/// and counts the fetches.
struct Idp {
    answer: Arc<ArcSwap<Answer>>,
    fetches: Arc<AtomicUsize>,
    jwks_uri: String,
}

impl Idp {
    async fn start(first: Answer) -> Idp {
        let answer = Arc::new(ArcSwap::from_pointee(first));
        let current = answer.clone();
        let (addr, fetches) = scripted(move |_, _| (**current.load()).clone()).await;
        Idp {
            answer,
            fetches,
            jwks_uri: format!("http://{addr}/jwks"),
        }
    }

    /// From now on, answers every fetch with `answer`.
    fn answer(&self, answer: Answer) {
        self.answer.store(Arc::new(answer));
    }

    /// From now on, publishes exactly `keys`.
    fn serve(&self, keys: &[&Key]) {
        self.answer(key_set(keys));
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// The example configuration in front of a counting upstream, trusting the IdP's
/// access tokens (`offers.write` maps to `offers:write`); `refetch_interval` as
/// given, or the default (30 s) when `None`.
async fn issuer_proxy(idp: &Idp, refetch_interval: Option<&str>) -> (TestProxy, Arc<AtomicUsize>) {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap()
            .replace("url: builtin:echo", "url: {upstream}");
    let refetch = refetch_interval
        .map(|i| format!("    refetch_interval: {i}\n"))
        .unwrap_or_default();
    let yaml = format!(
        "{example}
trusted_issuers:
  - issuer: {ISSUER}
    jwks_uri: {}
    access_tokens: true
    scope_map: {{\"offers.write\": [offers:write]}}
    tier: verified
{refetch}",
        idp.jwks_uri
    );
    let (upstream, served) = counting_upstream().await;
    (TestProxy::start(&yaml, Some(upstream)).await, served)
}

/// A value no other call returns, so that no two tokens are alike (the proxy
/// caches verified tokens by their hash).
fn unique() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!("jti-{}", COUNTER.fetch_add(1, Ordering::SeqCst))
}

fn now() -> i64 {
    authmd_proxy::clock::unix_now()
}

/// A fresh `offers.write` access token for this proxy, signed with `pem` (EdDSA)
/// and naming `kid`.
fn signed(proxy: &TestProxy, kid: &str, pem: &str) -> String {
    let claims = json!({
        "iss": ISSUER, "sub": "user-1", "aud": proxy.url, "scope": "offers.write",
        "iat": now(), "exp": now() + 300, "jti": unique(),
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A fresh access token signed with `key` under its own `kid`.
fn token(proxy: &TestProxy, key: &Key) -> String {
    signed(proxy, &key.kid, &key.pem)
}

/// A token whose header and claims are those of an access token for this proxy
/// (`alg` and `kid` as given) and whose signature is 256 bytes of junk.
fn junk_signed(proxy: &TestProxy, alg: &str, kid: &str) -> String {
    let header = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
    let claims = json!({
        "iss": ISSUER, "sub": "user-1", "aud": proxy.url, "scope": "offers.write",
        "iat": now(), "exp": now() + 300, "jti": unique(),
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode([0x5a; 256]),
    )
}

/// `POST /api/v1/offers` (needs `offers:write`) with a bearer token.
async fn create_offer(proxy: &TestProxy, token: &str) -> reqwest::Response {
    post_offer(proxy.url("/api/v1/offers"), token.to_owned()).await
}

async fn post_offer(url: String, token: String) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{\"title\":\"t\"}")
        .send()
        .await
        .unwrap()
}

/// Asserts the token is admitted and forwarded as the IdP's user.
async fn assert_admitted(proxy: &TestProxy, token: &str, context: &str) {
    let response = create_offer(proxy, token).await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{context}: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["upstream"], true, "{context}: {body}");
    assert_eq!(body["principal"], "idp.test:user-1", "{context}: {body}");
}

/// Sends fresh tokens of `key` until one is admitted (the proxy's start-up fetch
/// may still be running when the first arrives); at most 10 s.
async fn admitted_eventually(proxy: &TestProxy, key: &Key) {
    eventually(Duration::from_secs(10), || async {
        create_offer(proxy, &token(proxy, key)).await.status() == 200
    })
    .await;
}

/// Asserts a 401 `invalid_token` with `code`, its `WWW-Authenticate` challenge
/// naming the error and where discovery starts.
async fn assert_invalid_token(response: reqwest::Response, code: &str, context: &str) {
    assert_eq!(response.status().as_u16(), 401, "{context}: {code}");
    let www = support::www(&response);
    assert!(www.starts_with("Bearer "), "{context}: {www}");
    assert!(www.contains("error=\"invalid_token\""), "{context}: {www}");
    assert!(
        www.contains("resource_metadata=\"http://127.0.0.1:"),
        "{context}: {www}"
    );
    assert_envelope(response, 401, "invalid_token", code).await;
}

/// The refusal of a trusted issuer's token while none of its keys was ever fetched:
/// a retryable 503 `ISSUER_JWKS_UNAVAILABLE` (the token may be fine), never a 401
/// "get a new token", a 500 or a grant.
async fn assert_refused_for_want_of_keys(response: reqwest::Response, context: &str) {
    assert!(
        response.headers().contains_key("retry-after"),
        "{context}: {} without Retry-After",
        response.status()
    );
    assert_envelope(
        response,
        503,
        "temporarily_unavailable",
        "ISSUER_JWKS_UNAVAILABLE",
    )
    .await;
}

/// Ways a JWKS endpoint answers garbage at the transport or document level.
#[derive(Clone, Copy, Debug)]
enum JwksGarbage {
    InvalidJson,
    NotAKeySet,
    KeysNotAList,
    HtmlWith200,
    Error500,
    ConnectionReset,
}

impl JwksGarbage {
    const ALL: [JwksGarbage; 6] = [
        JwksGarbage::InvalidJson,
        JwksGarbage::NotAKeySet,
        JwksGarbage::KeysNotAList,
        JwksGarbage::HtmlWith200,
        JwksGarbage::Error500,
        JwksGarbage::ConnectionReset,
    ];

    /// The answer, given the good key set the IdP would otherwise publish (a 500
    /// carries it: only a 200 counts).
    fn answer(self, good: &[&Key]) -> Answer {
        let keys: Vec<Value> = good.iter().map(|k| k.jwk.clone()).collect();
        match self {
            JwksGarbage::InvalidJson => {
                Answer::http(200, "application/json", format!("{{\"keys\": [{}", keys[0]))
            }
            JwksGarbage::NotAKeySet => Answer::json(
                200,
                &json!({"issuer": ISSUER, "authorization_endpoint": "https://idp.test/auth"}),
            ),
            JwksGarbage::KeysNotAList => Answer::json(200, &json!({"keys": {"k1": keys[0]}})),
            JwksGarbage::HtmlWith200 => Answer::http(
                200,
                "text/html",
                "<!DOCTYPE html><html><body><h1>Bad gateway</h1><p>Try later.</p></body></html>",
            ),
            JwksGarbage::Error500 => Answer::json(500, &json!({"keys": keys})),
            JwksGarbage::ConnectionReset => Answer::Reset,
        }
    }
}

#[tokio::test]
async fn a_jwks_answering_garbage_keeps_the_last_good_keys_and_the_next_good_answer_is_used() {
    let k1 = Key::new("k1");
    let forger = Key::new("k1");
    let idp = Idp::start(key_set(&[&k1])).await;
    let (proxy, served) = issuer_proxy(&idp, Some("0s")).await;
    admitted_eventually(&proxy, &k1).await;

    for (i, garbage) in JwksGarbage::ALL.into_iter().enumerate() {
        let context = format!("{garbage:?}");
        let k_new = Key::new(&format!("k-new-{i}"));
        idp.answer(garbage.answer(&[&k1, &k_new]));
        let (asked, forwarded) = (idp.fetches(), served.load(Ordering::SeqCst));

        // A token naming the IdP's new key: the proxy asks, gets garbage, refuses.
        let response = create_offer(&proxy, &token(&proxy, &k_new)).await;
        assert_invalid_token(response, "UNKNOWN_TOKEN_KEY", &context).await;
        assert!(
            idp.fetches() > asked,
            "{context}: the new kid made the proxy fetch the JWKS"
        );
        // The garbage changed nothing: a token of the last good key (never seen, so
        // not cached) is admitted, a forgery under its kid is not.
        assert_admitted(&proxy, &token(&proxy, &k1), &context).await;
        let response = create_offer(&proxy, &token(&proxy, &forger)).await;
        assert_invalid_token(response, "INVALID_TOKEN_SIGNATURE", &context).await;
        assert_eq!(
            served.load(Ordering::SeqCst),
            forwarded + 1,
            "{context}: only the admitted request reached the upstream"
        );

        // The IdP answers properly again: the new key is picked up by the very next
        // token that names it.
        idp.serve(&[&k1, &k_new]);
        assert_admitted(
            &proxy,
            &token(&proxy, &k_new),
            &format!("{context}, then good"),
        )
        .await;
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_jwks_that_hangs_costs_a_new_kid_one_fetch_timeout_and_holds_up_no_one_else() {
    let k1 = Key::new("k1");
    let k2 = Key::new("k2");
    let idp = Idp::start(key_set(&[&k1])).await;
    let (proxy, _) = issuer_proxy(&idp, Some("0s")).await;
    admitted_eventually(&proxy, &k1).await;

    idp.answer(Answer::Hang);
    let asked = idp.fetches();
    let started = Instant::now();
    let pending = tokio::spawn(post_offer(proxy.url("/api/v1/offers"), token(&proxy, &k2)));
    // The new kid's fetch reaches the IdP, which holds it.
    eventually(JWKS_FETCH_TIMEOUT, || async { idp.fetches() > asked }).await;

    // Meanwhile, tokens of known keys and API keys are answered at once.
    let meanwhile = Instant::now();
    assert_admitted(&proxy, &token(&proxy, &k1), "during the hang").await;
    let response = client()
        .post(proxy.url("/api/v1/offers"))
        .header("x-agent-key", WRITER_KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "an API key during the hang");
    assert!(
        meanwhile.elapsed() < Duration::from_secs(2),
        "known credentials took {:?} during the hang",
        meanwhile.elapsed()
    );
    assert!(
        !pending.is_finished(),
        "the new kid's request is still waiting for the JWKS"
    );

    // The new kid's request ends at the proxy's fetch timeout, with a 401.
    let response = pending.await.unwrap();
    let waited = started.elapsed();
    assert_invalid_token(response, "UNKNOWN_TOKEN_KEY", "after the hang").await;
    assert!(
        waited < JWKS_FETCH_TIMEOUT + SLACK,
        "the request waited {waited:?} for a hanging JWKS"
    );

    // The IdP answers again: the new key is admitted, no restart.
    idp.serve(&[&k1, &k2]);
    assert_admitted(&proxy, &token(&proxy, &k2), "after recovery").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn new_kids_arriving_together_during_a_hanging_jwks_wait_for_one_fetch() {
    let k1 = Key::new("k1");
    let idp = Idp::start(key_set(&[&k1])).await;
    let (proxy, _) = issuer_proxy(&idp, Some("0s")).await;
    admitted_eventually(&proxy, &k1).await;

    idp.answer(Answer::Hang);
    let asked = idp.fetches();
    let started = Instant::now();
    let pending: Vec<_> = (0..3)
        .map(|i| {
            let key = Key::new(&format!("k-new-{i}"));
            tokio::spawn(post_offer(proxy.url("/api/v1/offers"), token(&proxy, &key)))
        })
        .collect();
    for request in pending {
        let response = request.await.unwrap();
        let waited = started.elapsed();
        assert_invalid_token(response, "UNKNOWN_TOKEN_KEY", "a new kid").await;
        // `refetch`: "Concurrent callers wait for one fetch."
        assert!(
            waited < JWKS_FETCH_TIMEOUT + SLACK,
            "a new-kid request waited {waited:?} for a hanging JWKS"
        );
    }
    assert_eq!(
        idp.fetches(),
        asked + 1,
        "requests arriving together were served by one fetch"
    );
    proxy.shutdown().await;
}

/// A key set whose only keys are unusable replaces nothing: tokens of the last
/// good key are admitted, the unusable keys verify nothing, and a proper key set
/// is picked up afterwards.
async fn unusable_keys_keep_the_last_good_ones(
    unusable: Vec<Value>,
    forged: impl Fn(&TestProxy) -> String,
    forged_codes: &[&str],
) {
    let k1 = Key::new("k1");
    let k2 = Key::new("k2");
    let idp = Idp::start(key_set(&[&k1])).await;
    let (proxy, served) = issuer_proxy(&idp, Some("0s")).await;
    admitted_eventually(&proxy, &k1).await;
    let forwarded = served.load(Ordering::SeqCst);

    idp.answer(Answer::json(200, &json!({ "keys": unusable })));
    let asked = idp.fetches();
    let response = create_offer(&proxy, &token(&proxy, &k2)).await;
    assert_invalid_token(response, "UNKNOWN_TOKEN_KEY", "a new kid").await;
    assert!(idp.fetches() > asked, "the proxy fetched the unusable set");

    // A token made for the unusable key: a 401 with the token's code, never a grant
    // and never a 500.
    let response = create_offer(&proxy, &forged(&proxy)).await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 401, "a token for the unusable key: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "invalid_token", "{body}");
    assert!(
        forged_codes.iter().any(|c| body["code"] == *c),
        "{forged_codes:?}: {body}"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        forwarded,
        "nothing forwarded"
    );

    // The last good key still verifies.
    assert_admitted(&proxy, &token(&proxy, &k1), "the last good key").await;

    idp.serve(&[&k1, &k2]);
    assert_admitted(&proxy, &token(&proxy, &k2), "after recovery").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_jwks_of_only_an_hmac_key_keeps_the_last_good_keys() {
    let secret = b"the-idp-published-its-hmac-secret";
    unusable_keys_keep_the_last_good_ones(
        vec![
            json!({"kty": "oct", "kid": "k-hmac", "alg": "HS256", "use": "sig",
            "k": URL_SAFE_NO_PAD.encode(secret)}),
        ],
        |proxy| {
            let mut header = Header::new(Algorithm::HS256);
            header.typ = Some("at+jwt".into());
            header.kid = Some("k-hmac".into());
            let claims = json!({
                "iss": ISSUER, "sub": "user-1", "aud": proxy.url, "scope": "offers.write",
                "iat": now(), "exp": now() + 300, "jti": unique(),
            });
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
        },
        // HMAC is refused from the token's header, whatever the key set holds.
        &["TOKEN_ALGORITHM_REFUSED"],
    )
    .await;
}

#[tokio::test]
async fn a_jwks_of_only_rsa_keys_with_a_bad_modulus_keeps_the_last_good_keys() {
    unusable_keys_keep_the_last_good_ones(
        vec![
            // Decodes, but is no modulus (three zero bytes).
            json!({"kty": "RSA", "kid": "k-bad-rsa", "alg": "RS256", "use": "sig",
                "n": "AAAA", "e": "AQAB"}),
            // Not even base64url.
            json!({"kty": "RSA", "kid": "k-bad-b64", "alg": "RS256", "use": "sig",
                "n": "%%%not base64%%%", "e": "AQAB"}),
        ],
        |proxy| junk_signed(proxy, "RS256", "k-bad-rsa"),
        // Today the junk key is kept and fails the signature; a key filtered on
        // arrival would be unknown.
        &["INVALID_TOKEN_SIGNATURE", "UNKNOWN_TOKEN_KEY"],
    )
    .await;
}

#[tokio::test]
async fn with_the_jwks_down_at_start_tokens_are_refused_then_admitted_once_it_is_up() {
    let k1 = Key::new("k1");
    let forger = Key::new("k1");
    let idp = Idp::start(Answer::http(503, "text/plain", "down for maintenance")).await;
    let (proxy, served) = issuer_proxy(&idp, Some("0s")).await;
    // The start-up fetch has been tried (and failed).
    eventually(Duration::from_secs(5), || async { idp.fetches() >= 1 }).await;

    for (down, answer) in [
        (
            "503",
            Answer::http(503, "text/plain", "down for maintenance"),
        ),
        ("reset", Answer::Reset),
        (
            "an HTML page with 200",
            Answer::http(200, "text/html", "<html><h1>Starting up</h1></html>"),
        ),
    ] {
        idp.answer(answer);
        let started = Instant::now();
        let response = create_offer(&proxy, &token(&proxy, &k1)).await;
        assert_refused_for_want_of_keys(response, down).await;
        assert!(
            started.elapsed() < JWKS_FETCH_TIMEOUT + SLACK,
            "{down}: answered after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(served.load(Ordering::SeqCst), 0, "nothing was forwarded");
    // Other credentials work all along.
    let response = client()
        .post(proxy.url("/api/v1/offers"))
        .header("x-agent-key", WRITER_KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "an API key while the IdP is down");

    // The IdP comes up: the next token is admitted, no restart; forgeries are not.
    idp.serve(&[&k1]);
    assert_admitted(&proxy, &token(&proxy, &k1), "once the IdP is up").await;
    let response = create_offer(&proxy, &token(&proxy, &forger)).await;
    assert_invalid_token(response, "INVALID_TOKEN_SIGNATURE", "a forgery").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_no_key_ever_fetched_a_token_is_a_retryable_503_not_a_bad_token() {
    let k1 = Key::new("k1");
    let idp = Idp::start(Answer::Reset).await;
    let (proxy, served) = issuer_proxy(&idp, Some("0s")).await;
    eventually(Duration::from_secs(5), || async { idp.fetches() >= 1 }).await;
    let response = create_offer(&proxy, &token(&proxy, &k1)).await;
    assert_refused_for_want_of_keys(response, "no key ever fetched").await;
    assert_eq!(served.load(Ordering::SeqCst), 0);
    // The agent can look the code up: auth.md documents it wherever an issuer is
    // trusted (and only there: see
    // `discovery::auth_md_is_complete_and_its_examples_are_true`).
    let md = proxy.auth_md().await;
    assert!(md.contains("| 503 | `ISSUER_JWKS_UNAVAILABLE` |"), "{md}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_the_jwks_down_at_start_the_background_retry_picks_the_keys_up() {
    let k1 = Key::new("k1");
    let idp = Idp::start(Answer::http(503, "text/plain", "starting")).await;
    // The default refetch_interval (30 s).
    let (proxy, _) = issuer_proxy(&idp, None).await;
    eventually(Duration::from_secs(5), || async { idp.fetches() >= 1 }).await;
    idp.serve(&[&k1]);
    // `refresh_forever`: "until a fetch succeeds, retries sooner (5 s, doubling)".
    let asked = idp.fetches();
    let retried = tokio::time::timeout(Duration::from_secs(5) + SLACK, async {
        while idp.fetches() == asked {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        retried.is_ok(),
        "the IdP was not asked again within {:?} of a failed start-up fetch",
        Duration::from_secs(5) + SLACK
    );
    assert_admitted(&proxy, &token(&proxy, &k1), "after the retry").await;
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------
// The x402 facilitator
// ---------------------------------------------------------------------------

/// The proxy's longest wait for the facilitator, as configured below.
const FACILITATOR_TIMEOUT: Duration = Duration::from_secs(1);

const PAYMENTS_CONFIG: &str = concat!(
    support::metered_api!(),
    r#"payments:
  facilitator: {facilitator}
  requests_per_payment: 1
  description: Offer search
  timeout: 1s
  accepts:
    - scheme: exact
      network: eip155:84532
      amount: "10000"
      asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
      pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
      extra: {name: USDC, version: "2"}
"#
);

/// A facilitator that follows the x402 protocol (`/verify`: valid unless the
/// signature is `0xbad`; `/settle`: success), unless told to answer an endpoint
/// otherwise; counts the calls to each endpoint.
struct Facilitator {
    url: String,
    verify: Arc<ArcSwap<Option<Answer>>>,
    settle: Arc<ArcSwap<Option<Answer>>>,
    verifies: Arc<AtomicUsize>,
    settles: Arc<AtomicUsize>,
}

impl Facilitator {
    async fn start() -> Facilitator {
        let verify: Arc<ArcSwap<Option<Answer>>> = Arc::default();
        let settle: Arc<ArcSwap<Option<Answer>>> = Arc::default();
        let verifies = Arc::new(AtomicUsize::new(0));
        let settles = Arc::new(AtomicUsize::new(0));
        let (v, s, vs, ss) = (
            verify.clone(),
            settle.clone(),
            verifies.clone(),
            settles.clone(),
        );
        let (addr, _) = scripted(move |path, body| {
            let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let signature = body["paymentPayload"]["payload"]["signature"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match path {
                "/verify" => {
                    vs.fetch_add(1, Ordering::SeqCst);
                    match &**v.load() {
                        Some(answer) => answer.clone(),
                        None if signature == "0xbad" => Answer::json(
                            400,
                            &json!({"isValid": false, "invalidReason": "insufficient_funds"}),
                        ),
                        None => Answer::json(200, &json!({"isValid": true, "payer": "0xpayer"})),
                    }
                }
                "/settle" => {
                    ss.fetch_add(1, Ordering::SeqCst);
                    match &**s.load() {
                        Some(answer) => answer.clone(),
                        None => Answer::json(
                            200,
                            &json!({"success": true, "payer": "0xpayer",
                                "transaction": "0xtx1", "network": "eip155:84532"}),
                        ),
                    }
                }
                _ => Answer::http(404, "text/plain", "not found"),
            }
        })
        .await;
        Facilitator {
            url: format!("http://{addr}"),
            verify,
            settle,
            verifies,
            settles,
        }
    }

    /// `/verify` answers `answer` from now on (`None`: the protocol again).
    fn verify_answers(&self, answer: Option<Answer>) {
        self.verify.store(Arc::new(answer));
    }

    /// `/settle` answers `answer` from now on (`None`: the protocol again).
    fn settle_answers(&self, answer: Option<Answer>) {
        self.settle.store(Arc::new(answer));
    }

    /// (verify calls, settle calls) so far.
    fn calls(&self) -> (usize, usize) {
        (
            self.verifies.load(Ordering::SeqCst),
            self.settles.load(Ordering::SeqCst),
        )
    }
}

/// The paid API in front of a counting upstream, its one request of the day
/// already used (so the upstream has seen 1 request).
async fn paid_proxy(facilitator: &Facilitator) -> (TestProxy, Arc<AtomicUsize>) {
    let (upstream, served) = counting_upstream().await;
    let config = PAYMENTS_CONFIG.replace("{facilitator}", &facilitator.url);
    let proxy = TestProxy::start(&config, Some(upstream)).await;
    assert_eq!(get_offers(&proxy, None).await.status(), 200);
    assert_eq!(
        get_offers(&proxy, None).await.status(),
        402,
        "quota used up"
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);
    (proxy, served)
}

/// `GET /offers` with the writer key, and a v2 payment when given.
async fn get_offers(proxy: &TestProxy, payment: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .get(proxy.url("/offers"))
        .header("x-agent-key", WRITER_KEY);
    if let Some(payment) = payment {
        request = request.header("payment-signature", payment);
    }
    request.send().await.unwrap()
}

/// A v2 payment (base64 JSON) for the configured requirements.
fn payment(signature: &str, nonce: u32) -> String {
    let payload = json!({"x402Version": 2,
        "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": "10000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "maxTimeoutSeconds": 60, "extra": {"name": "USDC", "version": "2"}},
        "payload": {"signature": signature, "authorization": {"nonce": nonce}}});
    STANDARD.encode(payload.to_string())
}

/// Sends the paid request while the facilitator is at `fault`, and asserts 503
/// `PAYMENT_UNAVAILABLE` within the facilitator timeout, with `Retry-After: 5`, no
/// settlement header and nothing of the upstream's answer.
async fn assert_payment_unavailable(proxy: &TestProxy, payment: &str, context: &str) {
    let started = Instant::now();
    let response = get_offers(proxy, Some(payment)).await;
    let took = started.elapsed();
    assert!(
        took < FACILITATOR_TIMEOUT + SLACK,
        "{context}: answered after {took:?}"
    );
    assert_eq!(response.status().as_u16(), 503, "{context}");
    let headers = response.headers().clone();
    assert_eq!(headers["retry-after"], "5", "{context}");
    assert!(
        headers.get("payment-response").is_none() && headers.get("x-payment-response").is_none(),
        "{context}: a settlement header on a refusal"
    );
    let body = assert_envelope(response, 503, "payment_unavailable", "PAYMENT_UNAVAILABLE").await;
    assert!(body.get("upstream").is_none(), "{context}: {body}");
}

/// With the facilitator following the protocol again: `payment` is served
/// exactly once (verified, forwarded, settled), a replay is refused without
/// asking the facilitator, and the next request needs a new payment.
async fn assert_paid_exactly_once(
    proxy: &TestProxy,
    facilitator: &Facilitator,
    served: &AtomicUsize,
    payment: &str,
) {
    let (verified, settled) = facilitator.calls();
    let forwarded = served.load(Ordering::SeqCst);
    let response = get_offers(proxy, Some(payment)).await;
    assert_eq!(
        response.status(),
        200,
        "the same payment, once it can be checked"
    );
    let receipt = response.headers()["payment-response"].to_str().unwrap();
    let receipt: Value = serde_json::from_slice(&STANDARD.decode(receipt).unwrap()).unwrap();
    assert_eq!(receipt["success"], true, "{receipt}");
    assert_eq!(receipt["transaction"], "0xtx1", "{receipt}");
    let body = support::json(response).await;
    assert_eq!(body["upstream"], true, "{body}");
    assert_eq!(body["principal"], "key:writer", "{body}");
    assert_eq!(served.load(Ordering::SeqCst), forwarded + 1, "served once");
    assert_eq!(facilitator.calls(), (verified + 1, settled + 1));

    let replay = get_offers(proxy, Some(payment)).await;
    assert!(replay.headers().contains_key("payment-required"));
    let body = assert_envelope_with_offer(replay, "PAYMENT_REJECTED").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("payment_already_used"),
        "{body}"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        forwarded + 1,
        "a replay is not served"
    );
    assert_eq!(
        facilitator.calls(),
        (verified + 1, settled + 1),
        "a replay is refused without asking the facilitator"
    );

    let response = get_offers(proxy, None).await;
    assert_envelope_with_offer(response, "PAYMENT_REQUIRED").await;
}

/// Asserts a 402 envelope that also carries the v1 requirements (`x402Version`,
/// `accepts`).
async fn assert_envelope_with_offer(response: reqwest::Response, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), 402, "{code}");
    assert!(
        response.headers().contains_key("payment-required"),
        "{code}"
    );
    let body = support::json(response).await;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["x402Version"], 1, "{body}");
    assert!(body["accepts"].is_array(), "{body}");
    for field in ["error", "message", "docs"] {
        assert!(body[field].is_string(), "{field}: {body}");
    }
    body
}

#[tokio::test]
async fn a_facilitator_that_goes_down_and_comes_back_serves_the_same_payment_exactly_once() {
    let facilitator = Facilitator::start().await;
    let (proxy, served) = paid_proxy(&facilitator).await;
    let paid = payment("0xgood", 1);

    for (down, answer) in [
        ("resetting every connection", Answer::Reset),
        (
            "503 for maintenance",
            Answer::http(503, "text/html", "<html><h1>Maintenance</h1></html>"),
        ),
    ] {
        facilitator.verify_answers(Some(answer.clone()));
        facilitator.settle_answers(Some(answer));
        let (verified, _) = facilitator.calls();
        assert_payment_unavailable(&proxy, &paid, down).await;
        assert_eq!(
            facilitator.calls(),
            (verified + 1, 0),
            "{down}: asked to verify, never to settle"
        );
        assert_eq!(
            served.load(Ordering::SeqCst),
            1,
            "{down}: the upstream never saw the paid request"
        );
    }
    // Without a payment it is still 402, outage or not.
    assert_envelope_with_offer(get_offers(&proxy, None).await, "PAYMENT_REQUIRED").await;

    // Back up: the payment presented during the outage was not consumed.
    facilitator.verify_answers(None);
    facilitator.settle_answers(None);
    assert_paid_exactly_once(&proxy, &facilitator, &served, &paid).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_facilitator_answering_garbage_to_verify_is_503_never_a_free_pass() {
    let facilitator = Facilitator::start().await;
    let (proxy, served) = paid_proxy(&facilitator).await;
    let paid = payment("0xgood", 2);

    for (garbage, answer) in [
        (
            "non-JSON with 200",
            Answer::http(200, "text/html", "<html>isValid: true</html>"),
        ),
        (
            "JSON that is no verify answer",
            Answer::json(200, &json!({"status": "ok", "valid": "yes"})),
        ),
        (
            "a 500 whose body says valid",
            Answer::json(500, &json!({"isValid": true, "payer": "0xpayer"})),
        ),
        (
            "a 400 that is not JSON",
            Answer::http(400, "text/plain", "bad request"),
        ),
        ("a hang past the timeout", Answer::Hang),
    ] {
        facilitator.verify_answers(Some(answer));
        let (verified, settled) = facilitator.calls();
        assert_payment_unavailable(&proxy, &paid, garbage).await;
        assert_eq!(facilitator.calls(), (verified + 1, settled), "{garbage}");
        assert_eq!(
            served.load(Ordering::SeqCst),
            1,
            "{garbage}: the upstream never saw the paid request"
        );
    }

    // The facilitator makes sense again: the same payment goes through, once.
    facilitator.verify_answers(None);
    assert_paid_exactly_once(&proxy, &facilitator, &served, &paid).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_facilitator_failing_at_settlement_charges_nothing_delivers_nothing_then_recovers() {
    let facilitator = Facilitator::start().await;
    let (proxy, served) = paid_proxy(&facilitator).await;
    let paid = payment("0xgood", 3);

    for (garbage, answer) in [
        ("a reset", Answer::Reset),
        (
            "a 500 whose body says settled",
            Answer::json(
                500,
                &json!({"success": true, "transaction": "0xtx1", "network": "eip155:84532"}),
            ),
        ),
        (
            "non-JSON with 200",
            Answer::http(200, "text/plain", "success"),
        ),
        ("a hang past the timeout", Answer::Hang),
    ] {
        facilitator.settle_answers(Some(answer));
        let (verified, settled) = facilitator.calls();
        let forwarded = served.load(Ordering::SeqCst);
        // Verified, forwarded, not settled: the upstream's answer is dropped.
        assert_payment_unavailable(&proxy, &paid, garbage).await;
        assert_eq!(
            facilitator.calls(),
            (verified + 1, settled + 1),
            "{garbage}"
        );
        assert_eq!(
            served.load(Ordering::SeqCst),
            forwarded + 1,
            "{garbage}: forwarded once, its answer withheld"
        );
    }

    // Settlement works again: the same payment is charged and served exactly once.
    facilitator.settle_answers(None);
    assert_paid_exactly_once(&proxy, &facilitator, &served, &paid).await;
    proxy.shutdown().await;
}
