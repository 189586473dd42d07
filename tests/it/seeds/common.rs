//! What the seed reproductions share: assertion messages that name the seed line
//! they check, the refusal envelope check, the comparison of a generated `/auth.md`
//! with the original document, an upstream that records what reaches it (answering
//! as a test tells it to), a local identity provider publishing its JWKS and minting
//! ID-JAGs, the decoding of a JWT, and the requests every reproduction sends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authmd_proxy::body::Body;
use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey, SigningKeys};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt as _;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::support::{self, TestProxy, client};

// ---- Seed lines -------------------------------------------------------------------

/// One seed document: its service's name and, when the document describes its error
/// envelope, where it does and which fields beyond the four it lets an error carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seed {
    name: &'static str,
    envelope: &'static [(u32, &'static str)],
    extras: &'static [&'static str],
}

/// A refusal the envelope check passed: its headers and its JSON body.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Seed {
    /// The document of the service `name`: every envelope has exactly the four fields.
    pub(crate) const fn new(name: &'static str) -> Seed {
        Seed {
            name,
            envelope: &[],
            extras: &[],
        }
    }

    /// This document, which describes the error envelope at `lines` (every structural
    /// check of an envelope names them too) and lets an error carry `extras` beyond
    /// `error`, `code`, `message` and `docs`.
    pub(crate) const fn with_envelope(
        self,
        lines: &'static [(u32, &'static str)],
        extras: &'static [&'static str],
    ) -> Seed {
        Seed {
            name: self.name,
            envelope: lines,
            extras,
        }
    }

    /// "AnyGett auth.md line 42 (`...`)": what an assertion message starts with (a
    /// Markdown double-backtick span when `text` quotes the document's own backticks).
    pub(crate) fn at(self, line: u32, text: &str) -> String {
        if text.contains('`') {
            format!("{} auth.md line {line} (`` {text} ``)", self.name)
        } else {
            format!("{} auth.md line {line} (`{text}`)", self.name)
        }
    }

    /// `at`, followed by the lines where the document describes its envelope.
    fn envelope_at(self, at: &str) -> String {
        self.envelope
            .iter()
            .fold(at.to_owned(), |why, (line, text)| {
                format!("{why}; {}", self.at(*line, text))
            })
    }

    /// Asserts a refusal in the JSON envelope, every check naming `at` (the seed line
    /// that documents the refusal): the status, `Content-Type: application/json`, the
    /// fields `error`, `code`, `message` and `docs` (non-empty; no others but the
    /// document's extras), the `code`, and `docs` linking into an auth.md.
    pub(crate) async fn envelope(
        self,
        response: reqwest::Response,
        status: u16,
        code: &str,
        at: &str,
    ) -> Refused {
        let why = self.envelope_at(at);
        let headers = response.headers().clone();
        let seen = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(seen, status, "{at}: status; body {text}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/json"),
            "{why}: a JSON envelope"
        );
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{at}: not JSON ({e}): {text}"));
        for field in ["error", "code", "message", "docs"] {
            assert!(
                body[field].as_str().is_some_and(|v| !v.is_empty()),
                "{why}: `{field}` in {body}"
            );
        }
        assert_eq!(body["code"], code, "{at}: `code` of {body}");
        assert!(
            body["docs"]
                .as_str()
                .and_then(|docs| docs.split_once("/auth.md"))
                .is_some_and(|(_, anchor)| anchor.starts_with('#')),
            "{why}: `docs` links the auth.md in {body}"
        );
        for key in body.as_object().unwrap().keys() {
            assert!(
                ["error", "code", "message", "docs"].contains(&key.as_str())
                    || self.extras.contains(&key.as_str()),
                "{why}: unexpected field {key} in {body}"
            );
        }
        Refused { headers, body }
    }

    /// [`Seed::envelope`], and the envelope's `error` is `error`.
    pub(crate) async fn refusal(
        self,
        response: reqwest::Response,
        status: u16,
        error: &str,
        code: &str,
        at: &str,
    ) -> Refused {
        let refused = self.envelope(response, status, code, at).await;
        assert_eq!(
            refused.body["error"], error,
            "{at}: `error` of {}",
            refused.body
        );
        refused
    }

    /// Asserts that the generated document names everything the original names
    /// (`terms`, each with its line), every scope of the original, and, when the
    /// original lists scopes, no scope it lacks.
    pub(crate) fn same_document<'a>(
        self,
        generated: &str,
        terms: &[(u32, &str)],
        scopes: impl IntoIterator<Item = (u32, &'a str)> + Clone,
    ) {
        for (line, term) in terms {
            assert!(
                generated.contains(term),
                "{}: the generated auth.md does not name it:\n{generated}",
                self.at(*line, term)
            );
        }
        let original: Vec<&str> = scopes.clone().into_iter().map(|(_, s)| s).collect();
        for (line, scope) in scopes {
            assert!(
                generated.contains(&format!("`{scope}`")),
                "{}: scope missing from the generated auth.md:\n{generated}",
                self.at(line, scope)
            );
        }
        // Every `a:b` code span of the generated document that looks like a scope is
        // one of the original's.
        let spans = generated.split('`').skip(1).step_by(2);
        for span in spans.filter(|_| !original.is_empty()) {
            let looks_like_scope = span.contains(':')
                && !span.starts_with(':')
                && !span.contains(' ')
                && !span.contains('/')
                && !span.contains('"')
                && span.split(':').count() == 2
                && span
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:*-".contains(c));
            // A wildcard over one of the original's prefixes is a way to ask for them.
            let wildcard_of_known = span
                .strip_suffix(":*")
                .is_some_and(|prefix| original.iter().any(|s| s.split(':').next() == Some(prefix)));
            if looks_like_scope && !span.ends_with(':') && !wildcard_of_known {
                assert!(
                    original.contains(&span),
                    "{} names no scope `{span}`:\n{generated}",
                    self.name
                );
            }
        }
    }
}

/// The scope names of the generated auth.md's `## Scopes` table, in order; `at` names
/// the seed line its absence would contradict.
pub(crate) fn scope_table<'a>(md: &'a str, at: &str) -> Vec<&'a str> {
    md.split("## Scopes\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("{at}: no Scopes section:\n{md}"))
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .collect()
}

// ---- Requests -----------------------------------------------------------------------

/// `GET path` on the proxy, with `Authorization: Bearer <bearer>` when given.
pub(crate) async fn get(proxy: &TestProxy, path: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut request = client().get(proxy.url(path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.unwrap()
}

/// `POST path` on the proxy with `Content-Type: application/json` and `body` as
/// written.
pub(crate) async fn post_json(proxy: &TestProxy, path: &str, body: &str) -> reqwest::Response {
    client()
        .post(proxy.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// `POST path` on the proxy with the form `fields` (`application/x-www-form-urlencoded`).
pub(crate) async fn post_form(
    proxy: &TestProxy,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(proxy.url(path))
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// The JSON body of a 200 answer; `at` names the seed line.
pub(crate) async fn ok_json(response: reqwest::Response, at: &str) -> Value {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{at}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{at}: not JSON ({e}): {text}"))
}

/// `GET path`, which must answer 200 with JSON; `at` names the seed line.
pub(crate) async fn get_json(proxy: &TestProxy, path: &str, at: &str) -> Value {
    ok_json(get(proxy, path, None).await, &format!("{at}: GET {path}")).await
}

/// A header's value, when it is there (and text).
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The decoded header and claims of a JWT (not verified: the signature is the
/// proxy's to check).
pub(crate) fn decode_jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || {
        let part = parts.next().unwrap();
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    let header = next();
    let claims = next();
    (header, claims)
}

// ---- The upstream -------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    /// The query string (empty when there is none).
    pub(crate) query: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// An upstream that knows nothing about auth: it records every request that reaches
/// it, and answers as it is told (by default 200 with `{"ok": true}`).
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    count: Arc<AtomicUsize>,
}

impl Upstream {
    /// Answers every request 200 with `{"ok": true}`.
    pub(crate) async fn start() -> Upstream {
        Upstream::answering(r#"{"ok":true}"#).await
    }

    /// Answers every request 200 with the JSON `body`.
    pub(crate) async fn answering(body: &'static str) -> Upstream {
        Upstream::with(move |_| async move { json_response(200, body) }).await
    }

    /// Answers each request with what `answer` makes of it (after recording it).
    pub(crate) async fn with<F, Fut>(answer: F) -> Upstream
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let count: Arc<AtomicUsize> = Arc::default();
        let (log, counter, answer) = (seen.clone(), count.clone(), Arc::new(answer));
        let addr = support::upstream(move |request| {
            let (log, counter, answer) = (log.clone(), counter.clone(), answer.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.unwrap().to_bytes().to_vec();
                let request = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    headers: parts.headers,
                    body,
                };
                log.lock().await.push(request.clone());
                counter.fetch_add(1, Ordering::SeqCst);
                answer(request).await
            }
        })
        .await;
        Upstream { addr, seen, count }
    }

    /// The proxy started from `config`, in front of this upstream (in place of the
    /// echo API the seed configs name).
    pub(crate) async fn proxy(&self, config: &str) -> TestProxy {
        TestProxy::start(&here(config), Some(self.addr)).await
    }

    /// How many requests reached it.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Every request that reached it, in order.
    pub(crate) async fn seen(&self) -> Vec<Seen> {
        self.seen.lock().await.clone()
    }

    /// The last request that reached it.
    pub(crate) async fn last(&self) -> Seen {
        self.seen
            .lock()
            .await
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("nothing reached the upstream"))
    }
}

/// Where every seed config names its upstream: the echo API, so that
/// `authmd-proxy run --config tests/seeds/x.yaml` serves as the file is.
pub(crate) const ECHO_UPSTREAM: &str = "url: builtin:echo";

/// `config` with the test's upstream in place of the echo API: its one
/// `url: builtin:echo` becomes `url: "{upstream}"`, which [`TestProxy`] fills in (at
/// start and at each reload).
pub(crate) fn here(config: &str) -> String {
    assert_eq!(
        config.matches(ECHO_UPSTREAM).count(),
        1,
        "a seed config names the echo API as its upstream, once"
    );
    config.replace(ECHO_UPSTREAM, r#"url: "{upstream}""#)
}

/// The proxy from `config` in front of a fresh [`Upstream::start`].
pub(crate) async fn start(config: &str) -> (TestProxy, Upstream) {
    let upstream = Upstream::start().await;
    (upstream.proxy(config).await, upstream)
}

/// A `status` answer with the JSON `body`.
pub(crate) fn json_response(status: u16, body: impl Into<bytes::Bytes>) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::full(body))
        .unwrap()
}

// ---- The identity provider ----------------------------------------------------------

/// The identity provider the seed configs trust, and where they say its JWKS is (the
/// tests serve that JWKS from a local server instead).
const IDP_ISSUER: &str = "https://idp.example.com";
const IDP_JWKS: &str = "https://idp.example.com/.well-known/jwks.json";

/// The identity provider: an Ed25519 key, its JWKS served over HTTP.
#[derive(Debug)]
pub(crate) struct Idp {
    key: SigningKey,
    jwks_uri: String,
}

impl Idp {
    pub(crate) async fn start() -> Idp {
        let (key, _) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
        let jwks = SigningKeys::new(vec![key.clone()]).unwrap().jwks().clone();
        let server = Upstream::with(move |_| {
            let jwks = jwks.clone();
            async move { json_response(200, jwks) }
        })
        .await;
        Idp {
            key,
            jwks_uri: format!("http://{}/.well-known/jwks.json", server.addr),
        }
    }

    /// `config` trusting this identity provider: the JWKS address of its trusted
    /// issuer pointed here. `at` names the seed line the trust reproduces.
    pub(crate) fn trusted_by(&self, config: &str, at: &str) -> String {
        assert!(
            config.contains(IDP_JWKS),
            "{at}: the config names the IdP's JWKS"
        );
        config.replace(IDP_JWKS, &self.jwks_uri)
    }

    /// A fresh ID-JAG (`typ: oauth-id-jag+jwt`) for the authorization server at
    /// `aud`, usable once: `claims` (the subject, the client, what else the agent's
    /// identity carries) with `iss`, `aud`, a unique `jti`, `iat`, and `exp` five
    /// minutes on.
    pub(crate) fn id_jag(&self, aud: &str, claims: &Value) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let now = authmd_proxy::clock::unix_now();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut jag = json!({
            "iss": IDP_ISSUER, "aud": aud,
            "jti": format!("jti-{nanos}-{}", COUNTER.fetch_add(1, Ordering::SeqCst)),
            "iat": now, "exp": now + 300,
        });
        for (name, value) in claims.as_object().unwrap() {
            jag[name] = value.clone();
        }
        self.key.sign("oauth-id-jag+jwt", &jag).unwrap()
    }
}

impl Idp {
    /// `config` trusting this identity provider for `verified_email` too: its trusted
    /// issuer gains `verified_email` with `client_id`, the client id the seed's API
    /// would have at the provider. `at` names the seed line it reproduces.
    pub(crate) fn trusted_for_email_by(&self, config: &str, client_id: &str, at: &str) -> String {
        let entry = format!("  - issuer: {IDP_ISSUER}\n");
        assert!(config.contains(&entry), "{at}: the config names the IdP");
        let config = config.replace(
            &entry,
            &format!("{entry}    verified_email:\n      client_id: {client_id}\n"),
        );
        self.trusted_by(&config, at)
    }

    /// A fresh OpenID Connect `id_token` (`typ: JWT`) for the client `aud`, naming the
    /// verified address `email` of user `sub`, issued now.
    pub(crate) fn id_token(&self, aud: &str, sub: &str, email: &str) -> String {
        let now = authmd_proxy::clock::unix_now();
        let claims = json!({
            "iss": IDP_ISSUER, "aud": aud, "sub": sub, "email": email, "email_verified": true,
            "iat": now, "exp": now + 300,
        });
        self.key.sign("JWT", &claims).unwrap()
    }
}
