//! JobsPipe (a jobs API), reproduced by authmd-proxy with `tests/seeds/jobspipe.yaml`
//! in front of a plain upstream that knows nothing about auth.
//!
//! Every request JobsPipe's auth.md shows is sent to the running proxy, and every
//! answer the document promises is checked: `jp_live_` keys as `Authorization:
//! Bearer`, the 401 with `WWW-Authenticate: Bearer resource_metadata=...`, the
//! protected-resource and authorization-server metadata with the `agent_auth`
//! block, the api-catalog with its OpenAPI link, registration at `/agent/auth` (an
//! ID-JAG from an identity provider played by a local server publishing its JWKS),
//! `RateLimit-*` headers, 429 with `Retry-After` past the per-second limit, 402 past
//! the 5,000-request month, 502 and 504 from a failing upstream, and rotation and
//! revocation taking effect on the next request. Every assertion names the line of
//! the original document it checks.

use super::support::{self, TestProxy, client, www};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authmd_proxy::body::Body;
use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey, SigningKeys};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::Response;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The reproduction's config.
const CONFIG: &str = include_str!("jobspipe.yaml");

/// The example account key the config declares by hash (its secret is published in
/// the config's comment, as `config.example.yaml` does with its own).
const KEY: &str = "jp_live_CBARn5VXXyawoH37e6Q6H6JDid2qzNyFs3vnq5h";

/// The identity provider the config trusts, and where the config says its JWKS is
/// (the tests serve that JWKS from a local server instead).
const ISSUER: &str = "https://idp.example.com";
const ISSUER_JWKS: &str = "https://idp.example.com/.well-known/jwks.json";

const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// The body of seed lines 60-63.
const SEARCH: &str = r#"{"job_title_or":["software engineer"],"limit":5}"#;

/// "JobsPipe auth.md line 47 (`...`)": what every assertion message starts with.
fn seed(service: &str, line: u32, what: &str) -> String {
    format!("{service} auth.md line {line} (`{what}`)")
}

fn jp(line: u32, what: &str) -> String {
    seed("JobsPipe", line, what)
}

// ---------------------------------------------------------------------------------
// The original document's sets, for the comparison with the generated /auth.md.
// ---------------------------------------------------------------------------------

/// The one credential method (seed lines 13-15, 53-56): an API key prefixed
/// `jp_live_`, sent as a Bearer token.
const METHODS: &[(u32, &str)] = &[
    (15, "API key (`jp_live_*`)"),
    (56, "`Authorization: Bearer <key>`"),
];

/// Endpoints the original names (the path part of its URLs on api.jobspipe.dev; the
/// OpenAPI spec lives on the website's own origin, so it stays absolute).
///
/// Not listed: line 36, `claim_uri` `/agent/auth/claim`. Claims raise anonymous
/// registrations, which JobsPipe does not offer, so the Claim section says there is
/// no claim step; the path is checked in the authorization-server metadata.
const ENDPOINTS: &[(u32, &str)] = &[
    (23, "/.well-known/oauth-protected-resource"),
    (24, "/.well-known/oauth-authorization-server"),
    (25, "/api/auth/jwks"),
    (35, "/agent/auth` with an ID-JAG"),
    (27, "/.well-known/api-catalog"),
    (37, "/agent/auth/revoke"),
];

/// The API requests the original shows (seed lines 59-63), as rows of the generated
/// endpoint table: method, path, and that a credential is required.
const ROUTES: &[(u32, &str, &str)] = &[(60, "POST", "/v1/jobs/search")];

/// Absolute URLs the original names that the generated document must repeat.
const URLS: &[(u32, &str)] = &[
    (26, "https://jobspipe.dev/openapi.json"),
    (3, "https://jobspipe.dev/developers"),
    (15, "https://jobspipe.dev/signup"),
];

/// The original names no scope at all.
const SCOPES: &[(u32, &str)] = &[];

/// Limits and the headers that report them (seed lines 15, 70, 75, 76).
const LIMITS: &[(u32, &str)] = &[
    (15, "5000 per calendar month"),
    (76, "10 per second"),
    (70, "`RateLimit-Limit`"),
    (70, "`RateLimit-Remaining`"),
    (70, "`RateLimit-Reset`"),
    (70, "`RateLimit-Policy`"),
    (70, "`Retry-After`"),
];

/// The error statuses of seed lines 74-78, with the code the proxy answers each
/// with.
const ERRORS: &[(u32, u16, &str)] = &[
    (74, 401, "UNAUTHORIZED"),
    (74, 401, "INVALID_API_KEY"),
    (75, 402, "QUOTA_EXCEEDED"),
    (76, 429, "RATE_LIMIT_EXCEEDED"),
    (77, 502, "UPSTREAM_UNAVAILABLE"),
    (78, 504, "UPSTREAM_TIMEOUT"),
];

// ---------------------------------------------------------------------------------
// The API behind the proxy, the identity provider, and the proxy itself.
// ---------------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// The Jobs API: answers every request with `200 {"jobs": []}` and records it. It
/// knows nothing about keys.
struct Api {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Api {
    async fn start() -> Api {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let addr = support::upstream(move |request: hyper::Request<hyper::body::Incoming>| {
            let log = log.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.unwrap().to_bytes().to_vec();
                log.lock().await.push(Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body,
                });
                let mut response = Response::new(Body::full(r#"{"jobs":[]}"#));
                response
                    .headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                response
            }
        })
        .await;
        Api { addr, seen }
    }

    async fn count(&self) -> usize {
        self.seen.lock().await.len()
    }

    async fn last(&self) -> Seen {
        self.seen.lock().await.last().cloned().unwrap()
    }
}

/// The identity provider: an Ed25519 key, its JWKS served by a local server.
struct Idp {
    key: SigningKey,
    jwks_uri: String,
}

impl Idp {
    async fn start() -> Idp {
        let (key, pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
        let published = SigningKey::from_pem(pem.as_bytes(), "idp").unwrap();
        let jwks = SigningKeys::new(vec![published]).unwrap().jwks().clone();
        let addr = support::upstream(move |_| {
            let jwks = jwks.clone();
            async move {
                let mut response = Response::new(Body::full(jwks));
                response
                    .headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                response
            }
        })
        .await;
        Idp {
            key,
            jwks_uri: format!("http://{addr}/.well-known/jwks.json"),
        }
    }

    /// A fresh ID-JAG (`typ: oauth-id-jag+jwt`) for the authorization server at `aud`.
    fn id_jag(&self, aud: &str, subject: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let now = authmd_proxy::store::unix_now();
        let claims = json!({
            "iss": ISSUER, "sub": subject, "aud": aud, "client_id": "jobs-agent",
            "jti": format!("jti-{now}-{}", COUNTER.fetch_add(1, Ordering::SeqCst)),
            "iat": now, "exp": now + 300, "email": "ops@example.com", "email_verified": true,
        });
        self.key.sign("oauth-id-jag+jwt", &claims).unwrap()
    }
}

/// The proxy with `yaml` (the seed config, or one derived from its text) in front of
/// `upstream`, trusting `idp` where the config names its identity provider.
async fn proxy(yaml: &str, upstream: SocketAddr, idp: &Idp) -> TestProxy {
    assert!(
        yaml.contains(ISSUER_JWKS),
        "{}: the config names the IdP's JWKS",
        jp(
            38,
            "`identity_assertion` - assertion types `urn:ietf:params:oauth:token-type:id-jag`"
        )
    );
    let yaml = yaml.replace(ISSUER_JWKS, &idp.jwks_uri);
    TestProxy::start(&yaml, Some(upstream)).await
}

/// The seed config in front of the Jobs API.
async fn jobspipe() -> (TestProxy, Api, Idp) {
    let api = Api::start().await;
    let idp = Idp::start().await;
    let proxy = proxy(CONFIG, api.addr, &idp).await;
    (proxy, api, idp)
}

/// Seed lines 60-63: the search request, with `Authorization: Bearer <key>` when a
/// key is given.
async fn search(proxy: &TestProxy, key: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(proxy.url("/v1/jobs/search"))
        .header("content-type", "application/json")
        .body(SEARCH);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// `GET path`, which must answer 200 with JSON; `what` names the seed line.
async fn get_json(proxy: &TestProxy, path: &str, what: &str) -> Value {
    let response = client().get(proxy.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{what}: GET {path}");
    support::json(response).await
}

async fn post_json(proxy: &TestProxy, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(proxy.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Asserts a refusal of the proxy, every check naming `what` (the seed line): the
/// status, the JSON envelope `{"error","code","message","docs"}` with this `error`
/// and `code`, and `docs` linking into the proxy's auth.md. Returns the body.
async fn refusal(
    response: reqwest::Response,
    status: u16,
    error: &str,
    code: &str,
    what: &str,
) -> Value {
    assert_eq!(response.status().as_u16(), status, "{what}: status");
    assert_eq!(
        header(&response, "content-type"),
        Some("application/json"),
        "{what}: a JSON envelope"
    );
    let body = support::json(response).await;
    assert_eq!(body["error"], error, "{what}: {body}");
    assert_eq!(body["code"], code, "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    assert!(
        body["docs"]
            .as_str()
            .is_some_and(|d| d.contains("/auth.md#")),
        "{what}: {body}"
    );
    assert_eq!(
        body.as_object().map(serde_json::Map::len),
        Some(4),
        "{what}: exactly four fields: {body}"
    );
    body
}

// ---------------------------------------------------------------------------------
// Discover (seed lines 19-29, 33-38)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn one_401_leads_to_the_metadata_the_document_lists() {
    let (proxy, api, _idp) = jobspipe().await;
    let prm_url = format!("{}/.well-known/oauth-protected-resource", proxy.url);

    // Seed line 29: an unauthenticated request to a protected endpoint.
    let response = search(&proxy, None).await;
    assert_eq!(
        www(&response),
        format!("Bearer resource_metadata=\"{prm_url}\""),
        "{}",
        jp(
            29,
            "401 with WWW-Authenticate: Bearer resource_metadata=\"https://api.jobspipe.dev/.well-known/oauth-protected-resource\""
        )
    );
    refusal(
        response,
        401,
        "unauthorized",
        "UNAUTHORIZED",
        &jp(74, "401 - missing ... API key"),
    )
    .await;
    // Seed line 74: an invalid key is a 401 whose challenge points at the same place.
    let response = search(&proxy, Some("jp_live_NotAKeyJobsPipeIssued")).await;
    let challenge = www(&response);
    assert!(
        challenge.starts_with(&format!("Bearer resource_metadata=\"{prm_url}\""))
            && challenge.contains("error=\"invalid_token\""),
        "{}: {challenge}",
        jp(
            74,
            "401 - missing or invalid API key. The WWW-Authenticate header points at the protected-resource metadata"
        )
    );
    refusal(
        response,
        401,
        "invalid_token",
        "INVALID_API_KEY",
        &jp(74, "401 - ... invalid API key"),
    )
    .await;
    assert_eq!(
        api.count().await,
        0,
        "{}",
        jp(
            29,
            "a protected endpoint: nothing reaches the API without a key"
        )
    );

    // Seed line 23: the protected-resource metadata.
    let prm = get_json(
        &proxy,
        "/.well-known/oauth-protected-resource",
        &jp(23, "Protected-resource metadata (RFC 9728)"),
    )
    .await;
    assert_eq!(
        prm["resource"],
        json!(proxy.url),
        "{}",
        jp(23, "Protected-resource metadata (RFC 9728)")
    );
    assert_eq!(
        prm["authorization_servers"],
        json!([proxy.url]),
        "{}",
        jp(24, "Authorization-server metadata (RFC 8414)")
    );
    assert_eq!(
        prm["bearer_methods_supported"],
        json!(["header"]),
        "{}",
        jp(53, "Send the API key as a Bearer token")
    );
    assert_eq!(
        prm["scopes_supported"],
        json!([]),
        "{}",
        jp(15, "one credential type, no scopes named")
    );

    // Seed lines 24, 33-38: the authorization-server metadata and its agent_auth block.
    let asm = get_json(
        &proxy,
        "/.well-known/oauth-authorization-server",
        &jp(24, "Authorization-server metadata (RFC 8414)"),
    )
    .await;
    assert_eq!(
        asm["issuer"],
        json!(proxy.url),
        "{}",
        jp(24, "Authorization-server metadata (RFC 8414)")
    );
    // Seed line 25: the JWKS, where the metadata says it is.
    let at = jp(25, "JWKS: https://api.jobspipe.dev/api/auth/jwks");
    assert_eq!(asm["jwks_uri"], proxy.url("/api/auth/jwks"), "{at}");
    let jwks = get_json(&proxy, "/api/auth/jwks", &at).await;
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty(), "{at}: {jwks}");
    assert!(
        keys.iter()
            .all(|k| k["kid"].is_string() && k.get("d").is_none()),
        "{at}: public keys only: {jwks}"
    );
    let agent_auth = &asm["agent_auth"];
    for (line, field, path) in [
        (35, "register_uri", "/agent/auth"),
        (36, "claim_uri", "/agent/auth/claim"),
        (37, "revocation_uri", "/agent/auth/revoke"),
    ] {
        assert_eq!(
            agent_auth[field],
            json!(proxy.url(path)),
            "{}: {agent_auth}",
            jp(line, &format!("`{field}`: https://api.jobspipe.dev{path}"))
        );
    }
    assert_eq!(
        agent_auth["identity_types_supported"],
        json!(["identity_assertion"]),
        "{}: {agent_auth}",
        jp(38, "`identity_types_supported`: `identity_assertion`")
    );
    let assertion = &agent_auth["identity_assertion"];
    assert!(
        assertion["assertion_types_supported"]
            .as_array()
            .is_some_and(|types| types.contains(&json!(ID_JAG))),
        "{}: {agent_auth}",
        jp(
            38,
            "assertion types `urn:ietf:params:oauth:token-type:id-jag`"
        )
    );
    assert_eq!(
        assertion["credential_types_supported"],
        json!(["api_key"]),
        "{}: {agent_auth}",
        jp(38, "credential type `api_key`")
    );
    assert!(
        agent_auth.get("anonymous").is_none(),
        "{}: {agent_auth}",
        jp(49, "rather than minting anonymous credentials")
    );
    // The limits the document states, in the block's `limits` extension.
    let free = &agent_auth["limits"]["tiers"][0];
    assert_eq!(
        free["tier"],
        "free",
        "{}: {agent_auth}",
        jp(15, "Free tier")
    );
    assert_eq!(
        free["quota"],
        json!({"requests": 5000, "period": "month"}),
        "{}",
        jp(15, "Free tier: 5,000 requests/month")
    );
    assert_eq!(
        free["rate_limits"],
        json!([{"requests": 10, "window_seconds": 1}]),
        "{}",
        jp(76, "per-second rate limit")
    );
    assert_eq!(
        agent_auth["limits"]["over_quota"],
        "402",
        "{}",
        jp(75, "402 - monthly request quota exceeded")
    );

    // Seed lines 26-27: the API catalog and the OpenAPI spec it links.
    let response = client()
        .get(proxy.url("/.well-known/api-catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "{}",
        jp(27, "API catalog (RFC 9727)")
    );
    assert!(
        header(&response, "content-type")
            .is_some_and(|t| t.starts_with("application/linkset+json")),
        "{}",
        jp(27, "API catalog (RFC 9727)")
    );
    let catalog = support::json(response).await;
    let entry = &catalog["linkset"][0];
    assert_eq!(
        entry["anchor"],
        json!(proxy.url),
        "{}",
        jp(27, "API catalog")
    );
    assert_eq!(
        entry["service-desc"][0]["href"],
        "https://jobspipe.dev/openapi.json",
        "{}: {catalog}",
        jp(26, "OpenAPI spec: https://jobspipe.dev/openapi.json")
    );
    let docs: Vec<&str> = entry["service-doc"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["href"].as_str())
        .collect();
    assert!(
        docs.contains(&"https://jobspipe.dev/developers"),
        "{}: {catalog}",
        jp(
            3,
            "Developer resources hub: https://jobspipe.dev/developers"
        )
    );
    assert_eq!(
        entry["service-meta"][0]["href"],
        json!(prm_url),
        "{}",
        jp(23, "Protected-resource metadata")
    );
    let head = client()
        .head(proxy.url("/.well-known/api-catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&head, "link"),
        Some(
            format!(
                "<{}>; rel=\"api-catalog\"",
                proxy.url("/.well-known/api-catalog")
            )
            .as_str()
        ),
        "{}",
        jp(27, "API catalog (RFC 9727)")
    );
}

// ---------------------------------------------------------------------------------
// Use the credential (seed lines 51-66) and rate-limit headers (seed line 70)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_jp_live_bearer_key_reaches_the_api_with_its_identity() {
    let (proxy, api, _idp) = jobspipe().await;
    let response = search(&proxy, Some(KEY)).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        jp(61, "-H \"Authorization: Bearer jp_live_YOUR_KEY\"")
    );
    // Seed line 70: the RFC RateLimit headers, for the tightest window (the second).
    for (name, value) in [
        ("ratelimit-limit", "10"),
        ("ratelimit-remaining", "9"),
        ("ratelimit-reset", "1"),
        ("ratelimit-policy", "10;w=1, 5000;w=2592000"),
    ] {
        assert_eq!(
            header(&response, name),
            Some(value),
            "{}",
            jp(
                70,
                "`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`, `RateLimit-Policy`"
            )
        );
    }
    assert_eq!(
        support::json(response).await,
        json!({"jobs": []}),
        "{}",
        jp(60, "the API's own answer")
    );

    // What the API received: the request as the agent sent it, minus the key, plus
    // who sent it.
    let seen = api.last().await;
    assert_eq!(
        api.count().await,
        1,
        "{}",
        jp(60, "one search, forwarded once")
    );
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/v1/jobs/search"),
        "{}",
        jp(60, "curl -s https://api.jobspipe.dev/v1/jobs/search ... -d")
    );
    assert_eq!(
        seen.body,
        SEARCH.as_bytes(),
        "{}",
        jp(
            63,
            r#"-d '{"job_title_or":["software engineer"],"limit":5}'"#
        )
    );
    assert_eq!(
        seen.header("content-type"),
        Some("application/json"),
        "{}",
        jp(62, "-H \"Content-Type: application/json\"")
    );
    assert!(
        seen.header("authorization").is_none(),
        "{}: the key is consumed by the proxy",
        jp(61, "Authorization: Bearer jp_live_YOUR_KEY")
    );
    assert_eq!(
        seen.header("x-authmd-principal"),
        Some("key:jobspipe-example"),
        "{}",
        jp(15, "API key issued from the dashboard")
    );
    assert_eq!(
        seen.header("x-authmd-tier"),
        Some("free"),
        "{}",
        jp(15, "Free tier")
    );

    // Seed line 56: only `Authorization: Bearer` carries a key here.
    let elsewhere = client()
        .post(proxy.url("/v1/jobs/search"))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(SEARCH)
        .send()
        .await
        .unwrap();
    refusal(
        elsewhere,
        401,
        "unauthorized",
        "UNAUTHORIZED",
        &jp(56, "Authorization: Bearer jp_live_YOUR_KEY"),
    )
    .await;
    // Seed line 15: the `jp_live_` prefix is what makes a value a key; a key of
    // another service's shape is refused.
    let foreign = search(
        &proxy,
        Some("ak_live_ELG2kKEXEd3Ty98ZgEKCTBzmD28tyKbnV2vJrzG"),
    )
    .await;
    assert_eq!(
        foreign.status(),
        401,
        "{}",
        jp(15, "a Bearer token prefixed `jp_live_`")
    );
    assert_eq!(
        api.count().await,
        1,
        "{}",
        jp(74, "missing or invalid API key")
    );
}

// ---------------------------------------------------------------------------------
// Register (seed lines 31-49)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn registration_at_agent_auth_takes_an_identity_assertion() {
    let (proxy, api, idp) = jobspipe().await;

    // Seed lines 43-46, exactly: the body names the identity type and nothing else.
    let response = client()
        .post(proxy.url("/agent/auth"))
        .header("content-type", "application/json")
        .body(r#"{ "identity_type": "identity_assertion" }"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        400,
        "{}",
        jp(46, r#"{ "identity_type": "identity_assertion" }"#)
    );
    let body = refusal(
        response,
        400,
        "invalid_request",
        "INVALID_REQUEST",
        &jp(46, r#"{ "identity_type": "identity_assertion" }"#),
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("assertion"),
        "{}: {body}",
        jp(49, "no key is minted without an identity")
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("get a key at https://jobspipe.dev/signup"),
        "{}: {body}",
        jp(
            49,
            "the response directs you to https://jobspipe.dev/signup"
        )
    );
    let docs = body["docs"].as_str().unwrap().to_owned();
    assert!(
        docs.starts_with(&proxy.url("/auth.md#")),
        "{}: {body}",
        jp(49, "the response directs you")
    );
    let guide = client()
        .get(&docs)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        guide.contains("https://jobspipe.dev/signup"),
        "{}",
        jp(49, "directs you to https://jobspipe.dev/signup")
    );
    // Seed line 49: "rather than minting anonymous credentials".
    let anonymous = post_json(
        &proxy,
        "/agent/auth",
        &json!({"identity_type": "anonymous"}),
    )
    .await;
    assert_eq!(
        anonymous.status(),
        403,
        "{}",
        jp(49, "rather than minting anonymous credentials")
    );
    refusal(
        anonymous,
        403,
        "access_denied",
        "ANONYMOUS_NOT_ENABLED",
        &jp(49, "rather than minting anonymous credentials"),
    )
    .await;

    // Seed line 38: an ID-JAG registers, and the credential is an `api_key`.
    let register = json!({
        "identity_type": "identity_assertion",
        "assertion_type": ID_JAG,
        "identity_assertion": idp.id_jag(&proxy.url, "user-7"),
    });
    let response = post_json(&proxy, "/agent/auth", &register).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        jp(
            38,
            "assertion types `urn:ietf:params:oauth:token-type:id-jag`"
        )
    );
    assert_eq!(
        header(&response, "cache-control"),
        Some("no-store"),
        "{}",
        jp(49, "create or bind a key: the secret is not cached")
    );
    let issued = support::json(response).await;
    assert_eq!(
        issued["credential_type"],
        "api_key",
        "{}: {issued}",
        jp(38, "credential type `api_key`")
    );
    let key = issued["credential"].as_str().unwrap().to_owned();
    let key_id = issued["key_id"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("jp_live_"),
        "{}: {issued}",
        jp(15, "a Bearer token prefixed `jp_live_`")
    );
    assert_eq!(issued["tier"], "free", "{}", jp(15, "Free tier"));
    // Seed line 49: "Once you hold a key, use it as the Bearer credential below."
    let used = search(&proxy, Some(&key)).await;
    assert_eq!(
        used.status(),
        200,
        "{}",
        jp(49, "Once you hold a key, use it as the Bearer credential")
    );
    assert_eq!(
        api.last().await.header("x-authmd-principal"),
        Some(format!("key:{key_id}").as_str()),
        "{}",
        jp(49, "use it as the Bearer credential")
    );
    // The same assertion twice registers nothing.
    let replay = post_json(&proxy, "/agent/auth", &register).await;
    refusal(
        replay,
        401,
        "invalid_grant",
        "REPLAY_DETECTED",
        &jp(38, "an id-jag assertion registers once"),
    )
    .await;

    // Seed line 36: the claim endpoint answers (there is nothing to claim: keys are
    // issued in their final tier).
    let claim = post_json(
        &proxy,
        "/agent/auth/claim",
        &json!({"claim_token": "clm_unknown"}),
    )
    .await;
    assert_eq!(
        claim.status(),
        401,
        "{}",
        jp(36, "`claim_uri`: https://api.jobspipe.dev/agent/auth/claim")
    );
    refusal(
        claim,
        401,
        "invalid_grant",
        "INVALID_CLAIM_TOKEN",
        &jp(36, "`claim_uri`"),
    )
    .await;

    // Seed lines 37, 82: the key gives itself up at revocation_uri, and is refused
    // from the next request on, before the API sees it.
    let revoked = post_json(&proxy, "/agent/auth/revoke", &json!({"credential": key})).await;
    assert_eq!(
        revoked.status(),
        200,
        "{}",
        jp(
            37,
            "`revocation_uri`: https://api.jobspipe.dev/agent/auth/revoke"
        )
    );
    assert_eq!(
        support::json(revoked).await,
        json!({"revoked": 1}),
        "{}",
        jp(37, "`revocation_uri`")
    );
    let before = api.count().await;
    let refused = search(&proxy, Some(&key)).await;
    assert_eq!(
        refused.status(),
        401,
        "{}",
        jp(82, "Revoked keys stop working immediately")
    );
    refusal(
        refused,
        401,
        "invalid_token",
        "INVALID_API_KEY",
        &jp(82, "Revoked keys stop working immediately"),
    )
    .await;
    assert_eq!(
        api.count().await,
        before,
        "{}",
        jp(82, "Revoked keys stop working immediately")
    );
}

// ---------------------------------------------------------------------------------
// Revocation and rotation (seed line 82)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn rotated_and_revoked_keys_stop_working_immediately() {
    let (proxy, api, _idp) = jobspipe().await;
    let keys = proxy.url("/api/v1/auth/keys");

    // The account's key creates a key for a job (the dashboard's "create key"); the
    // secret is in this answer only.
    let created = client()
        .post(&keys)
        .bearer_auth(KEY)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        201,
        "{}",
        jp(82, "an API key from the dashboard")
    );
    let created = support::json(created).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = created["key"].as_str().unwrap().to_owned();
    assert!(
        first.starts_with("jp_live_"),
        "{}: {created}",
        jp(15, "a Bearer token prefixed `jp_live_`")
    );
    assert_eq!(created["tier"], "free", "{}", jp(15, "Free tier"));
    let listed = client().get(&keys).bearer_auth(KEY).send().await.unwrap();
    let listed = support::json(listed).await;
    assert_eq!(
        listed["keys"][0]["id"],
        json!(id),
        "{}: {listed}",
        jp(82, "the dashboard lists the account's keys")
    );
    assert!(
        listed["keys"][0].get("key").is_none(),
        "{}: the secret is shown once: {listed}",
        jp(82, "the dashboard lists the account's keys")
    );
    assert_eq!(
        search(&proxy, Some(&first)).await.status(),
        200,
        "{}",
        jp(56, "Authorization: Bearer jp_live_YOUR_KEY")
    );

    // Rotate: the new secret works, the old one is refused on the very next request.
    let rotated = client()
        .post(format!("{keys}/{id}/rotate"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200, "{}", jp(82, "rotate an API key"));
    let second = support::json(rotated).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, first, "{}", jp(82, "rotate an API key"));
    let old = search(&proxy, Some(&first)).await;
    assert_eq!(
        old.status(),
        401,
        "{}",
        jp(
            82,
            "Revoke or rotate an API key ... stop working immediately"
        )
    );
    refusal(
        old,
        401,
        "invalid_token",
        "INVALID_API_KEY",
        &jp(82, "rotate ... stop working immediately"),
    )
    .await;
    assert_eq!(
        search(&proxy, Some(&second)).await.status(),
        200,
        "{}",
        jp(82, "rotate an API key")
    );

    // Revoke: refused from the next request on; the API never sees it again.
    let revoked = client()
        .delete(format!("{keys}/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200, "{}", jp(82, "Revoke ... an API key"));
    let revoked = support::json(revoked).await;
    assert!(
        revoked["revoked_at"].is_string(),
        "{}: {revoked}",
        jp(82, "Revoke ... an API key")
    );
    let before = api.count().await;
    let refused = search(&proxy, Some(&second)).await;
    assert_eq!(
        refused.status(),
        401,
        "{}",
        jp(82, "Revoked keys stop working immediately")
    );
    refusal(
        refused,
        401,
        "invalid_token",
        "INVALID_API_KEY",
        &jp(82, "Revoked keys stop working immediately"),
    )
    .await;
    assert_eq!(
        api.count().await,
        before,
        "{}",
        jp(82, "Revoked keys stop working immediately")
    );

    // A key declared in the config belongs to the operator: it is not revoked over
    // the API, and keeps working.
    let declared = post_json(&proxy, "/agent/auth/revoke", &json!({"credential": KEY})).await;
    refusal(
        declared,
        409,
        "invalid_request",
        "KEY_NOT_MANAGED",
        &jp(15, "issued from the dashboard: the operator's key"),
    )
    .await;
    assert_eq!(
        search(&proxy, Some(KEY)).await.status(),
        200,
        "{}",
        jp(15, "issued from the dashboard: the operator's key")
    );
}

// ---------------------------------------------------------------------------------
// Rate limits and quota (seed lines 15, 70, 75, 76)
// ---------------------------------------------------------------------------------

/// Seed line 76. The limit is 10 per second (the document gives no figure; the
/// config's choice): requests are sent in concurrent bursts until one is refused,
/// which takes one burst unless the proxy answers slower than the window refills.
#[tokio::test]
async fn past_the_per_second_limit_is_429_with_retry_after() {
    let (proxy, api, _idp) = jobspipe().await;
    let mut allowed = 0;
    let mut a_refusal = None;
    for _ in 0..20 {
        let burst =
            futures_util::future::join_all((0..30).map(|_| search(&proxy, Some(KEY)))).await;
        for response in burst {
            match response.status().as_u16() {
                200 => allowed += 1,
                429 => a_refusal = Some(response),
                other => panic!("{}: status {other}", jp(76, "per-second rate limit")),
            }
        }
        if a_refusal.is_some() {
            break;
        }
    }
    let refused = a_refusal.unwrap_or_else(|| panic!("{}: never refused", jp(76, "429")));
    assert!(
        allowed >= 10,
        "{}: {allowed} allowed",
        jp(76, "per-second rate limit: the first 10 pass")
    );
    assert_eq!(
        header(&refused, "retry-after"),
        Some("1"),
        "{}",
        jp(76, "429 - ... retry after `Retry-After`")
    );
    for (name, value) in [
        ("ratelimit-limit", "10"),
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "1"),
        ("ratelimit-policy", "10;w=1, 5000;w=2592000"),
    ] {
        assert_eq!(
            header(&refused, name),
            Some(value),
            "{}",
            jp(
                70,
                "On `429`, a `Retry-After` header tells you when to retry"
            )
        );
    }
    let body = refusal(
        refused,
        429,
        "rate_limit_exceeded",
        "RATE_LIMIT_EXCEEDED",
        &jp(76, "429 - per-second rate limit exceeded"),
    )
    .await;
    assert_eq!(
        body["docs"],
        json!(proxy.url("/auth.md#rate-limits")),
        "{}",
        jp(68, "## Rate limits")
    );
    assert_eq!(
        api.count().await,
        allowed,
        "{}",
        jp(76, "a refused request never reaches the API")
    );
}

/// Seed lines 15 and 75: 5,000 requests in a month, then 402. The config's text
/// with the per-second line taken out (the month's figure untouched), so 5,000
/// requests take seconds rather than minutes.
#[tokio::test]
async fn the_five_thousandth_request_of_the_month_is_the_last_then_402() {
    let per_second = "    rate_limits: [10/s]\n";
    assert!(
        CONFIG.contains(per_second) && CONFIG.contains("    quota: 5000/month "),
        "{}",
        jp(15, "Free tier: 5,000 requests/month")
    );
    let monthly_only = CONFIG.replace(per_second, "");
    let api = Api::start().await;
    let idp = Idp::start().await;
    let proxy = proxy(&monthly_only, api.addr, &idp).await;
    let http = client();
    let remaining: Vec<u64> = futures_util::stream::iter(0..5000)
        .map(|_| {
            let request = http
                .post(proxy.url("/v1/jobs/search"))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(SEARCH)
                .send();
            async move {
                let response = request.await.unwrap();
                assert_eq!(
                    response.status(),
                    200,
                    "{}",
                    jp(15, "Free tier: 5,000 requests/month")
                );
                header(&response, "ratelimit-remaining")
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut sorted = remaining.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..5000).collect::<Vec<u64>>(),
        "{}",
        jp(15, "5,000 requests/month, each counted once")
    );
    assert_eq!(
        api.count().await,
        5000,
        "{}",
        jp(15, "5,000 requests/month reach the API")
    );

    let refused = search(&proxy, Some(KEY)).await;
    assert_eq!(
        refused.status(),
        402,
        "{}",
        jp(75, "402 - monthly request quota exceeded for your plan")
    );
    assert_eq!(
        header(&refused, "ratelimit-limit"),
        Some("5000"),
        "{}",
        jp(70, "`RateLimit-Limit`")
    );
    assert_eq!(
        header(&refused, "ratelimit-remaining"),
        Some("0"),
        "{}",
        jp(70, "`RateLimit-Remaining`")
    );
    assert_eq!(
        header(&refused, "ratelimit-policy"),
        Some("5000;w=2592000"),
        "{}",
        jp(70, "`RateLimit-Policy`")
    );
    let body = refusal(
        refused,
        402,
        "quota_exceeded",
        "QUOTA_EXCEEDED",
        &jp(75, "402 - monthly request quota exceeded for your plan"),
    )
    .await;
    assert_eq!(
        body["docs"],
        json!(proxy.url("/auth.md#rate-limits")),
        "{}",
        jp(68, "## Rate limits")
    );
    assert_eq!(
        api.count().await,
        5000,
        "{}",
        jp(75, "over quota, nothing reaches the API")
    );
}

// ---------------------------------------------------------------------------------
// Upstream failures (seed lines 77-78)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_api_is_502_and_a_silent_one_504() {
    let idp = Idp::start().await;

    // Seed line 77, from the proxy: the API cannot be reached (a closed port).
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let proxy_closed = proxy(CONFIG, closed, &idp).await;
    let response = search(&proxy_closed, Some(KEY)).await;
    assert_eq!(response.status(), 502, "{}", jp(77, "502 ... retry"));
    refusal(
        response,
        502,
        "bad_gateway",
        "UPSTREAM_UNAVAILABLE",
        &jp(77, "502 ... retry"),
    )
    .await;

    // Seed line 77, from the API: its own 502 ("tech-stack scanner failed") reaches
    // the agent unchanged.
    let failing = support::upstream(|_| async {
        let mut response = Response::new(Body::full(
            r#"{"error":"scan_failed","message":"tech-stack scanner failed; retry or request mode: \"render\""}"#,
        ));
        *response.status_mut() = http::StatusCode::BAD_GATEWAY;
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        response
    })
    .await;
    let proxy_failing = proxy(CONFIG, failing, &idp).await;
    let response = search(&proxy_failing, Some(KEY)).await;
    assert_eq!(
        response.status(),
        502,
        "{}",
        jp(77, "502 - tech-stack scanner failed")
    );
    let body = support::json(response).await;
    assert_eq!(
        body["error"],
        "scan_failed",
        "{}: {body}",
        jp(
            77,
            "502 - tech-stack scanner failed; retry or request `mode: \"render\"`"
        )
    );

    // Seed line 78: an API that never answers. The config's response_timeout,
    // shortened in its text so the test does not wait 30 s.
    let (reached_tx, mut reached) = tokio::sync::mpsc::unbounded_channel();
    let silent = support::upstream(move |_| {
        let _ = reached_tx.send(());
        std::future::pending::<Response<Body>>()
    })
    .await;
    let timeout = "  response_timeout: 30s\n";
    assert!(
        CONFIG.contains(timeout),
        "{}",
        jp(78, "504 - upstream timed out")
    );
    let impatient = CONFIG.replace(timeout, "  response_timeout: 1s\n");
    let proxy_silent = proxy(&impatient, silent, &idp).await;
    let response = search(&proxy_silent, Some(KEY)).await;
    assert_eq!(
        response.status(),
        504,
        "{}",
        jp(78, "504 - upstream timed out; retry")
    );
    refusal(
        response,
        504,
        "gateway_timeout",
        "UPSTREAM_TIMEOUT",
        &jp(78, "504 - upstream timed out; retry"),
    )
    .await;
    assert!(
        reached.try_recv().is_ok(),
        "{}: the request reached the API, which stayed silent",
        jp(78, "upstream timed out")
    );
}

// ---------------------------------------------------------------------------------
// The generated /auth.md against the original
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_generated_auth_md_describes_what_the_original_does() {
    let (proxy, _api, _idp) = jobspipe().await;
    let response = client().get(proxy.url("/auth.md")).send().await.unwrap();
    let what = jp(1, "JobsPipe API authentication & agent auth (auth.md)");
    assert_eq!(response.status(), 200, "{what}");
    assert!(
        header(&response, "content-type").is_some_and(|t| t.starts_with("text/markdown")),
        "{what}: markdown"
    );
    let md = response.text().await.unwrap();

    for (line, method) in METHODS {
        assert!(md.contains(method), "{}", jp(*line, method));
    }
    for (line, path) in ENDPOINTS {
        let url = proxy.url(path);
        assert!(
            md.contains(&url),
            "{}: `{url}` is not in\n{md}",
            jp(*line, path)
        );
    }
    for (line, method, path) in ROUTES {
        let row = format!("| {method} | `{path}` | credential |");
        assert!(md.contains(&row), "{}: no row {row}", jp(*line, path));
    }
    for (line, url) in URLS {
        assert!(md.contains(url), "{}", jp(*line, url));
    }
    for (line, limit) in LIMITS {
        assert!(md.contains(limit), "{}", jp(*line, limit));
    }
    for (line, status, code) in ERRORS {
        let row = format!("| {status} | `{code}` |");
        assert!(
            md.contains(&row),
            "{}: no row {row}",
            jp(*line, &status.to_string())
        );
    }
    // Seed line 38: registration by identity assertion with an ID-JAG.
    assert!(
        md.contains("identity_assertion") && md.contains(ID_JAG),
        "{}",
        jp(
            38,
            "`identity_assertion` - assertion types `urn:ietf:params:oauth:token-type:id-jag`"
        )
    );
    // Seed line 29: the 401 challenge, as the agent will see it.
    assert!(
        md.contains(&format!(
            "WWW-Authenticate: Bearer resource_metadata=\"{}\"",
            proxy.url("/.well-known/oauth-protected-resource")
        )),
        "{}",
        jp(29, "WWW-Authenticate: Bearer resource_metadata=...")
    );

    // Scopes: the generated Scopes table names exactly the original's (none).
    let section = md
        .split("## Scopes\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("no Scopes section in\n{md}"));
    let generated: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    for (line, scope) in SCOPES {
        assert!(generated.contains(scope), "{}", jp(*line, scope));
    }
    for scope in &generated {
        assert!(
            SCOPES.iter().any(|(_, s)| s == scope),
            "{}: the generated document names `{scope}`",
            jp(15, "the original names no scope")
        );
    }
}
