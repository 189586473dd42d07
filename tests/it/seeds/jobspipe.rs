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

use std::net::SocketAddr;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::json;

use super::common::{
    Idp, Seed, Upstream, get, get_json, header, here, json_response, ok_json, post_json,
    scope_table,
};
use crate::support::{self, TestProxy, client, www};

/// The reproduction's config.
const CONFIG: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/seeds/jobspipe.yaml"
));
const SEED: Seed = Seed::new("JobsPipe");

/// The example account key the config declares by hash (its secret is published in
/// the config's comment, as `config.example.yaml` does with its own).
const KEY: &str = "jp_live_CBARn5VXXyawoH37e6Q6H6JDid2qzNyFs3vnq5h";

const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// The body of seed lines 60-63.
const SEARCH: &str = r#"{"job_title_or":["software engineer"],"limit":5}"#;

/// What the Jobs API behind the proxy answers to every request.
const JOBS: &str = r#"{"jobs":[]}"#;

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

/// The proxy with `yaml` (the seed config, or one derived from its text) in front of
/// `upstream`, trusting `idp` where the config names its identity provider.
async fn proxy(yaml: &str, upstream: SocketAddr, idp: &Idp) -> TestProxy {
    let at = SEED.at(
        38,
        "`identity_assertion` - assertion types `urn:ietf:params:oauth:token-type:id-jag`",
    );
    TestProxy::start(&here(&idp.trusted_by(yaml, &at)), Some(upstream)).await
}

/// The seed config in front of the Jobs API: a plain upstream answering every request
/// `200 {"jobs": []}` (it knows nothing about keys) and recording it.
async fn jobspipe() -> (TestProxy, Upstream, Idp) {
    let api = Upstream::answering(JOBS).await;
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

/// Seed line 70: `response` carries the headers `expected` (`at` names the seed line).
fn assert_headers(response: &reqwest::Response, expected: &[(&str, &str)], at: &str) {
    for (name, value) in expected {
        assert_eq!(
            header(response.headers(), name),
            Some(*value),
            "{at}: {name}"
        );
    }
}

/// Seed line 70: the `RateLimit-*` headers of the config's tightest window (10 a
/// second), with `remaining` left.
fn assert_per_second_headers(response: &reqwest::Response, remaining: &str, at: &str) {
    let expected = [
        ("ratelimit-limit", "10"),
        ("ratelimit-remaining", remaining),
        ("ratelimit-reset", "1"),
        ("ratelimit-policy", "10;w=1, 5000;w=2592000"),
    ];
    assert_headers(response, &expected, at);
}

/// Seed lines 68 and 75-76: a refusal past a limit (`at` names the seed line), whose
/// `docs` link the `## Rate limits` section.
async fn assert_over_limit(
    proxy: &TestProxy,
    response: reqwest::Response,
    status: u16,
    error: &str,
    code: &str,
    at: &str,
) {
    let body = SEED.refusal(response, status, error, code, at).await.body;
    assert_eq!(
        body["docs"],
        json!(proxy.url("/auth.md#rate-limits")),
        "{}",
        SEED.at(68, "## Rate limits")
    );
}

/// Seed line 82: a request of the account's key (`Authorization: Bearer <KEY>`) to the
/// key management below `/api/v1/auth/keys` (the dashboard's API).
fn dashboard(proxy: &TestProxy, method: Method, below: &str) -> reqwest::RequestBuilder {
    client()
        .request(method, proxy.url(&format!("/api/v1/auth/keys{below}")))
        .bearer_auth(KEY)
}

/// Seed line 82: a search with `key` is refused as an invalid key (`at` names the
/// seed line), and the API sees nothing of it.
async fn assert_key_refused(proxy: &TestProxy, api: &Upstream, key: &str, at: &str) {
    let before = api.count();
    let refused = search(proxy, Some(key)).await;
    SEED.refusal(refused, 401, "invalid_token", "INVALID_API_KEY", at)
        .await;
    assert_eq!(api.count(), before, "{at}");
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
        SEED.at(
            29,
            "401 with WWW-Authenticate: Bearer resource_metadata=\"https://api.jobspipe.dev/.well-known/oauth-protected-resource\""
        )
    );
    SEED.refusal(
        response,
        401,
        "unauthorized",
        "UNAUTHORIZED",
        &SEED.at(74, "401 - missing ... API key"),
    )
    .await;
    // Seed line 74: an invalid key is a 401 whose challenge points at the same place.
    let response = search(&proxy, Some("jp_live_NotAKeyJobsPipeIssued")).await;
    let challenge = www(&response);
    assert!(
        challenge.starts_with(&format!("Bearer resource_metadata=\"{prm_url}\""))
            && challenge.contains("error=\"invalid_token\""),
        "{}: {challenge}",
        SEED.at(
            74,
            "401 - missing or invalid API key. The WWW-Authenticate header points at the protected-resource metadata"
        )
    );
    SEED.refusal(
        response,
        401,
        "invalid_token",
        "INVALID_API_KEY",
        &SEED.at(74, "401 - ... invalid API key"),
    )
    .await;
    assert_eq!(
        api.count(),
        0,
        "{}",
        SEED.at(
            29,
            "a protected endpoint: nothing reaches the API without a key"
        )
    );

    // Seed line 23: the protected-resource metadata.
    let prm = get_json(
        &proxy,
        "/.well-known/oauth-protected-resource",
        &SEED.at(23, "Protected-resource metadata (RFC 9728)"),
    )
    .await;
    assert_eq!(
        prm["resource"],
        json!(proxy.url),
        "{}",
        SEED.at(23, "Protected-resource metadata (RFC 9728)")
    );
    assert_eq!(
        prm["authorization_servers"],
        json!([proxy.url]),
        "{}",
        SEED.at(24, "Authorization-server metadata (RFC 8414)")
    );
    assert_eq!(
        prm["bearer_methods_supported"],
        json!(["header"]),
        "{}",
        SEED.at(53, "Send the API key as a Bearer token")
    );
    assert_eq!(
        prm["scopes_supported"],
        json!([]),
        "{}",
        SEED.at(15, "one credential type, no scopes named")
    );

    // Seed lines 24, 33-38: the authorization-server metadata and its agent_auth block.
    let asm = get_json(
        &proxy,
        "/.well-known/oauth-authorization-server",
        &SEED.at(24, "Authorization-server metadata (RFC 8414)"),
    )
    .await;
    assert_eq!(
        asm["issuer"],
        json!(proxy.url),
        "{}",
        SEED.at(24, "Authorization-server metadata (RFC 8414)")
    );
    // Seed line 25: the JWKS, where the metadata says it is.
    let at = SEED.at(25, "JWKS: https://api.jobspipe.dev/api/auth/jwks");
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
            SEED.at(line, &format!("`{field}`: https://api.jobspipe.dev{path}"))
        );
    }
    assert_eq!(
        agent_auth["identity_types_supported"],
        json!(["identity_assertion"]),
        "{}: {agent_auth}",
        SEED.at(38, "`identity_types_supported`: `identity_assertion`")
    );
    let assertion = &agent_auth["identity_assertion"];
    assert!(
        assertion["assertion_types_supported"]
            .as_array()
            .is_some_and(|types| types.contains(&json!(ID_JAG))),
        "{}: {agent_auth}",
        SEED.at(
            38,
            "assertion types `urn:ietf:params:oauth:token-type:id-jag`"
        )
    );
    assert_eq!(
        assertion["credential_types_supported"],
        json!(["api_key"]),
        "{}: {agent_auth}",
        SEED.at(38, "credential type `api_key`")
    );
    assert!(
        agent_auth.get("anonymous").is_none(),
        "{}: {agent_auth}",
        SEED.at(49, "rather than minting anonymous credentials")
    );
    // The limits the document states, in the block's `limits` extension.
    let free = &agent_auth["limits"]["tiers"][0];
    assert_eq!(
        free["tier"],
        "free",
        "{}: {agent_auth}",
        SEED.at(15, "Free tier")
    );
    assert_eq!(
        free["quota"],
        json!({"requests": 5000, "period": "month"}),
        "{}",
        SEED.at(15, "Free tier: 5,000 requests/month")
    );
    assert_eq!(
        free["rate_limits"],
        json!([{"requests": 10, "window_seconds": 1}]),
        "{}",
        SEED.at(76, "per-second rate limit")
    );
    assert_eq!(
        agent_auth["limits"]["over_quota"],
        "402",
        "{}",
        SEED.at(75, "402 - monthly request quota exceeded")
    );

    // Seed lines 26-27: the API catalog and the OpenAPI spec it links.
    let response = get(&proxy, "/.well-known/api-catalog", None).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(27, "API catalog (RFC 9727)")
    );
    assert!(
        header(response.headers(), "content-type")
            .is_some_and(|t| t.starts_with("application/linkset+json")),
        "{}",
        SEED.at(27, "API catalog (RFC 9727)")
    );
    let catalog = support::json(response).await;
    let entry = &catalog["linkset"][0];
    assert_eq!(
        entry["anchor"],
        json!(proxy.url),
        "{}",
        SEED.at(27, "API catalog")
    );
    assert_eq!(
        entry["service-desc"][0]["href"],
        "https://jobspipe.dev/openapi.json",
        "{}: {catalog}",
        SEED.at(26, "OpenAPI spec: https://jobspipe.dev/openapi.json")
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
        SEED.at(
            3,
            "Developer resources hub: https://jobspipe.dev/developers"
        )
    );
    assert_eq!(
        entry["service-meta"][0]["href"],
        json!(prm_url),
        "{}",
        SEED.at(23, "Protected-resource metadata")
    );
    let head = client()
        .head(proxy.url("/.well-known/api-catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(head.headers(), "link"),
        Some(
            format!(
                "<{}>; rel=\"api-catalog\"",
                proxy.url("/.well-known/api-catalog")
            )
            .as_str()
        ),
        "{}",
        SEED.at(27, "API catalog (RFC 9727)")
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
        SEED.at(61, "-H \"Authorization: Bearer jp_live_YOUR_KEY\"")
    );
    // Seed line 70: the RFC RateLimit headers, for the tightest window (the second).
    let at = SEED.at(
        70,
        "`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`, `RateLimit-Policy`",
    );
    assert_per_second_headers(&response, "9", &at);
    assert_eq!(
        support::json(response).await,
        json!({"jobs": []}),
        "{}",
        SEED.at(60, "the API's own answer")
    );

    // What the API received: the request as the agent sent it, minus the key, plus
    // who sent it.
    let seen = api.last().await;
    assert_eq!(
        api.count(),
        1,
        "{}",
        SEED.at(60, "one search, forwarded once")
    );
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/v1/jobs/search"),
        "{}",
        SEED.at(60, "curl -s https://api.jobspipe.dev/v1/jobs/search ... -d")
    );
    assert_eq!(
        seen.body,
        SEARCH.as_bytes(),
        "{}",
        SEED.at(
            63,
            r#"-d '{"job_title_or":["software engineer"],"limit":5}'"#
        )
    );
    assert_eq!(
        seen.header("content-type"),
        Some("application/json"),
        "{}",
        SEED.at(62, "-H \"Content-Type: application/json\"")
    );
    assert!(
        seen.header("authorization").is_none(),
        "{}: the key is consumed by the proxy",
        SEED.at(61, "Authorization: Bearer jp_live_YOUR_KEY")
    );
    assert_eq!(
        seen.header("x-authmd-principal"),
        Some("key:jobspipe-example"),
        "{}",
        SEED.at(15, "API key issued from the dashboard")
    );
    assert_eq!(
        seen.header("x-authmd-tier"),
        Some("free"),
        "{}",
        SEED.at(15, "Free tier")
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
    SEED.refusal(
        elsewhere,
        401,
        "unauthorized",
        "UNAUTHORIZED",
        &SEED.at(56, "Authorization: Bearer jp_live_YOUR_KEY"),
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
        SEED.at(15, "a Bearer token prefixed `jp_live_`")
    );
    assert_eq!(
        api.count(),
        1,
        "{}",
        SEED.at(74, "missing or invalid API key")
    );
}

// ---------------------------------------------------------------------------------
// Register (seed lines 31-49)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn registration_at_agent_auth_takes_an_identity_assertion() {
    let (proxy, api, idp) = jobspipe().await;

    // Seed lines 43-46, exactly: the body names the identity type and nothing else.
    let body = r#"{ "identity_type": "identity_assertion" }"#;
    let response = post_json(&proxy, "/agent/auth", body).await;
    let body = SEED
        .refusal(
            response,
            400,
            "invalid_request",
            "INVALID_REQUEST",
            &SEED.at(46, r#"{ "identity_type": "identity_assertion" }"#),
        )
        .await
        .body;
    assert!(
        body["message"].as_str().unwrap().contains("assertion"),
        "{}: {body}",
        SEED.at(49, "no key is minted without an identity")
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("get a key at https://jobspipe.dev/signup"),
        "{}: {body}",
        SEED.at(
            49,
            "the response directs you to https://jobspipe.dev/signup"
        )
    );
    let docs = body["docs"].as_str().unwrap().to_owned();
    assert!(
        docs.starts_with(&proxy.url("/auth.md#")),
        "{}: {body}",
        SEED.at(49, "the response directs you")
    );
    let guide = get(&proxy, &docs[proxy.url.len()..], None).await;
    let guide = guide.text().await.unwrap();
    assert!(
        guide.contains("https://jobspipe.dev/signup"),
        "{}",
        SEED.at(49, "directs you to https://jobspipe.dev/signup")
    );
    // Seed line 49: "rather than minting anonymous credentials".
    let anonymous = post_json(&proxy, "/agent/auth", r#"{"identity_type":"anonymous"}"#).await;
    SEED.refusal(
        anonymous,
        403,
        "access_denied",
        "ANONYMOUS_NOT_ENABLED",
        &SEED.at(49, "rather than minting anonymous credentials"),
    )
    .await;

    // Seed line 38: an ID-JAG registers, and the credential is an `api_key`.
    let register = json!({
        "identity_type": "identity_assertion",
        "assertion_type": ID_JAG,
        "identity_assertion": idp.id_jag(&proxy.url, &json!({
            "sub": "user-7", "client_id": "jobs-agent",
            "email": "ops@example.com", "email_verified": true,
        })),
    })
    .to_string();
    let response = post_json(&proxy, "/agent/auth", &register).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(
            38,
            "assertion types `urn:ietf:params:oauth:token-type:id-jag`"
        )
    );
    assert_eq!(
        header(response.headers(), "cache-control"),
        Some("no-store"),
        "{}",
        SEED.at(49, "create or bind a key: the secret is not cached")
    );
    let issued = support::json(response).await;
    assert_eq!(
        issued["credential_type"],
        "api_key",
        "{}: {issued}",
        SEED.at(38, "credential type `api_key`")
    );
    let key = issued["credential"].as_str().unwrap().to_owned();
    let key_id = issued["key_id"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("jp_live_"),
        "{}: {issued}",
        SEED.at(15, "a Bearer token prefixed `jp_live_`")
    );
    assert_eq!(issued["tier"], "free", "{}", SEED.at(15, "Free tier"));
    // Seed line 49: "Once you hold a key, use it as the Bearer credential below."
    let used = search(&proxy, Some(&key)).await;
    assert_eq!(
        used.status(),
        200,
        "{}",
        SEED.at(49, "Once you hold a key, use it as the Bearer credential")
    );
    assert_eq!(
        api.last().await.header("x-authmd-principal"),
        Some(format!("key:{key_id}").as_str()),
        "{}",
        SEED.at(49, "use it as the Bearer credential")
    );
    // The same assertion twice registers nothing.
    let replay = post_json(&proxy, "/agent/auth", &register).await;
    SEED.refusal(
        replay,
        401,
        "invalid_grant",
        "REPLAY_DETECTED",
        &SEED.at(38, "an id-jag assertion registers once"),
    )
    .await;

    // Seed line 36: the claim endpoint answers (there is nothing to claim: keys are
    // issued in their final tier).
    let claim = post_json(
        &proxy,
        "/agent/auth/claim",
        r#"{"claim_token":"clm_unknown"}"#,
    )
    .await;
    SEED.refusal(
        claim,
        401,
        "invalid_grant",
        "INVALID_CLAIM_TOKEN",
        &SEED.at(36, "`claim_uri`: https://api.jobspipe.dev/agent/auth/claim"),
    )
    .await;

    // Seed lines 37, 82: the key gives itself up at revocation_uri, and is refused
    // from the next request on, before the API sees it.
    let revoke = json!({"credential": key}).to_string();
    let revoked = post_json(&proxy, "/agent/auth/revoke", &revoke).await;
    assert_eq!(
        revoked.status(),
        200,
        "{}",
        SEED.at(
            37,
            "`revocation_uri`: https://api.jobspipe.dev/agent/auth/revoke"
        )
    );
    assert_eq!(
        support::json(revoked).await,
        json!({"revoked": 1}),
        "{}",
        SEED.at(37, "`revocation_uri`")
    );
    let at = SEED.at(82, "Revoked keys stop working immediately");
    assert_key_refused(&proxy, &api, &key, &at).await;
}

// ---------------------------------------------------------------------------------
// Revocation and rotation (seed line 82)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn rotated_and_revoked_keys_stop_working_immediately() {
    let (proxy, api, _idp) = jobspipe().await;

    // The account's key creates a key for a job (the dashboard's "create key"); the
    // secret is in this answer only.
    let created = dashboard(&proxy, Method::POST, "")
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status(),
        201,
        "{}",
        SEED.at(82, "an API key from the dashboard")
    );
    let created = support::json(created).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = created["key"].as_str().unwrap().to_owned();
    assert!(
        first.starts_with("jp_live_"),
        "{}: {created}",
        SEED.at(15, "a Bearer token prefixed `jp_live_`")
    );
    assert_eq!(created["tier"], "free", "{}", SEED.at(15, "Free tier"));
    let listed = dashboard(&proxy, Method::GET, "").send().await.unwrap();
    let listed = support::json(listed).await;
    assert_eq!(
        listed["keys"][0]["id"],
        json!(id),
        "{}: {listed}",
        SEED.at(82, "the dashboard lists the account's keys")
    );
    assert!(
        listed["keys"][0].get("key").is_none(),
        "{}: the secret is shown once: {listed}",
        SEED.at(82, "the dashboard lists the account's keys")
    );
    assert_eq!(
        search(&proxy, Some(&first)).await.status(),
        200,
        "{}",
        SEED.at(56, "Authorization: Bearer jp_live_YOUR_KEY")
    );

    // Rotate: the new secret works, the old one is refused on the very next request.
    let rotated = dashboard(&proxy, Method::POST, &format!("/{id}/rotate"))
        .send()
        .await
        .unwrap();
    let second = ok_json(rotated, &SEED.at(82, "rotate an API key")).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, first, "{}", SEED.at(82, "rotate an API key"));
    let at = SEED.at(
        82,
        "Revoke or rotate an API key ... stop working immediately",
    );
    assert_key_refused(&proxy, &api, &first, &at).await;
    assert_eq!(
        search(&proxy, Some(&second)).await.status(),
        200,
        "{}",
        SEED.at(82, "rotate an API key")
    );

    // Revoke: refused from the next request on; the API never sees it again.
    let revoked = dashboard(&proxy, Method::DELETE, &format!("/{id}"))
        .send()
        .await
        .unwrap();
    let revoked = ok_json(revoked, &SEED.at(82, "Revoke ... an API key")).await;
    assert!(
        revoked["revoked_at"].is_string(),
        "{}: {revoked}",
        SEED.at(82, "Revoke ... an API key")
    );
    let at = SEED.at(82, "Revoked keys stop working immediately");
    assert_key_refused(&proxy, &api, &second, &at).await;

    // A key declared in the config belongs to the operator: it is not revoked over
    // the API, and keeps working.
    let declared = json!({"credential": KEY}).to_string();
    let declared = post_json(&proxy, "/agent/auth/revoke", &declared).await;
    SEED.refusal(
        declared,
        409,
        "invalid_request",
        "KEY_NOT_MANAGED",
        &SEED.at(15, "issued from the dashboard: the operator's key"),
    )
    .await;
    assert_eq!(
        search(&proxy, Some(KEY)).await.status(),
        200,
        "{}",
        SEED.at(15, "issued from the dashboard: the operator's key")
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
                other => panic!("{}: status {other}", SEED.at(76, "per-second rate limit")),
            }
        }
        if a_refusal.is_some() {
            break;
        }
    }
    let refused = a_refusal.unwrap_or_else(|| panic!("{}: never refused", SEED.at(76, "429")));
    assert!(
        allowed >= 10,
        "{}: {allowed} allowed",
        SEED.at(76, "per-second rate limit: the first 10 pass")
    );
    assert_eq!(
        header(refused.headers(), "retry-after"),
        Some("1"),
        "{}",
        SEED.at(76, "429 - ... retry after `Retry-After`")
    );
    let at = SEED.at(
        70,
        "On `429`, a `Retry-After` header tells you when to retry",
    );
    assert_per_second_headers(&refused, "0", &at);
    let at = SEED.at(76, "429 - per-second rate limit exceeded");
    assert_over_limit(
        &proxy,
        refused,
        429,
        "rate_limit_exceeded",
        "RATE_LIMIT_EXCEEDED",
        &at,
    )
    .await;
    assert_eq!(
        api.count(),
        allowed,
        "{}",
        SEED.at(76, "a refused request never reaches the API")
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
        SEED.at(15, "Free tier: 5,000 requests/month")
    );
    let monthly_only = CONFIG.replace(per_second, "");
    let api = Upstream::answering(JOBS).await;
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
                    SEED.at(15, "Free tier: 5,000 requests/month")
                );
                header(response.headers(), "ratelimit-remaining")
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
        SEED.at(15, "5,000 requests/month, each counted once")
    );
    assert_eq!(
        api.count(),
        5000,
        "{}",
        SEED.at(15, "5,000 requests/month reach the API")
    );

    let refused = search(&proxy, Some(KEY)).await;
    let at = SEED.at(
        70,
        "`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Policy`",
    );
    assert_headers(
        &refused,
        &[
            ("ratelimit-limit", "5000"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-policy", "5000;w=2592000"),
        ],
        &at,
    );
    let at = SEED.at(75, "402 - monthly request quota exceeded for your plan");
    assert_over_limit(
        &proxy,
        refused,
        402,
        "quota_exceeded",
        "QUOTA_EXCEEDED",
        &at,
    )
    .await;
    assert_eq!(
        api.count(),
        5000,
        "{}",
        SEED.at(75, "over quota, nothing reaches the API")
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
    SEED.refusal(
        response,
        502,
        "bad_gateway",
        "UPSTREAM_UNAVAILABLE",
        &SEED.at(77, "502 ... retry"),
    )
    .await;

    // Seed line 77, from the API: its own 502 ("tech-stack scanner failed") reaches
    // the agent unchanged.
    let failing = Upstream::with(|_| async {
        json_response(
            502,
            r#"{"error":"scan_failed","message":"tech-stack scanner failed; retry or request mode: \"render\""}"#,
        )
    })
    .await;
    let proxy_failing = proxy(CONFIG, failing.addr, &idp).await;
    let response = search(&proxy_failing, Some(KEY)).await;
    assert_eq!(
        response.status(),
        502,
        "{}",
        SEED.at(77, "502 - tech-stack scanner failed")
    );
    let body = support::json(response).await;
    assert_eq!(
        body["error"],
        "scan_failed",
        "{}: {body}",
        SEED.at(
            77,
            "502 - tech-stack scanner failed; retry or request `mode: \"render\"`"
        )
    );

    // Seed line 78: an API that never answers. The config's response_timeout,
    // shortened in its text so the test does not wait 30 s.
    let silent = Upstream::with(|_| std::future::pending()).await;
    let timeout = "  response_timeout: 30s\n";
    assert!(
        CONFIG.contains(timeout),
        "{}",
        SEED.at(78, "504 - upstream timed out")
    );
    let impatient = CONFIG.replace(timeout, "  response_timeout: 1s\n");
    let proxy_silent = proxy(&impatient, silent.addr, &idp).await;
    let response = search(&proxy_silent, Some(KEY)).await;
    SEED.refusal(
        response,
        504,
        "gateway_timeout",
        "UPSTREAM_TIMEOUT",
        &SEED.at(78, "504 - upstream timed out; retry"),
    )
    .await;
    assert_eq!(
        silent.count(),
        1,
        "{}: the request reached the API, which stayed silent",
        SEED.at(78, "upstream timed out")
    );
}

// ---------------------------------------------------------------------------------
// The generated /auth.md against the original
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_generated_auth_md_describes_what_the_original_does() {
    let (proxy, _api, _idp) = jobspipe().await;
    let response = get(&proxy, "/auth.md", None).await;
    let what = SEED.at(1, "JobsPipe API authentication & agent auth (auth.md)");
    assert_eq!(response.status(), 200, "{what}");
    assert!(
        header(response.headers(), "content-type").is_some_and(|t| t.starts_with("text/markdown")),
        "{what}: markdown"
    );
    let md = response.text().await.unwrap();

    for (line, method) in METHODS {
        assert!(md.contains(method), "{}", SEED.at(*line, method));
    }
    for (line, path) in ENDPOINTS {
        let url = proxy.url(path);
        assert!(
            md.contains(&url),
            "{}: `{url}` is not in\n{md}",
            SEED.at(*line, path)
        );
    }
    for (line, method, path) in ROUTES {
        let row = format!("| {method} | `{path}` | credential |");
        assert!(md.contains(&row), "{}: no row {row}", SEED.at(*line, path));
    }
    for (line, url) in URLS {
        assert!(md.contains(url), "{}", SEED.at(*line, url));
    }
    for (line, limit) in LIMITS {
        assert!(md.contains(limit), "{}", SEED.at(*line, limit));
    }
    for (line, status, code) in ERRORS {
        let row = format!("| {status} | `{code}` |");
        assert!(
            md.contains(&row),
            "{}: no row {row}",
            SEED.at(*line, &status.to_string())
        );
    }
    // Seed line 38: registration by identity assertion with an ID-JAG.
    assert!(
        md.contains("identity_assertion") && md.contains(ID_JAG),
        "{}",
        SEED.at(
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
        SEED.at(29, "WWW-Authenticate: Bearer resource_metadata=...")
    );

    // Scopes: the generated Scopes table names exactly the original's (none).
    let generated = scope_table(&md, &SEED.at(15, "the original names no scope"));
    for (line, scope) in SCOPES {
        assert!(generated.contains(scope), "{}", SEED.at(*line, scope));
    }
    for scope in &generated {
        assert!(
            SCOPES.iter().any(|(_, s)| s == scope),
            "{}: the generated document names `{scope}`",
            SEED.at(15, "the original names no scope")
        );
    }
}

// ---------------------------------------------------------------------------------
// Registration with a verified e-mail address (seed line 38)
// ---------------------------------------------------------------------------------

/// Seed line 38: "`identity_types_supported`: `identity_assertion` - assertion types
/// `urn:ietf:params:oauth:token-type:id-jag` and `verified_email`". With the identity
/// provider trusted for `verified_email` too, the metadata names both types, and an
/// OpenID Connect `id_token` with a verified address registers at `/agent/auth`
/// (seed line 43) for a `jp_live_` key that works (seed line 49), once.
#[tokio::test]
async fn registration_at_agent_auth_takes_a_verified_email() {
    let api = Upstream::answering(JOBS).await;
    let idp = Idp::start().await;
    let at = SEED.at(38, "assertion types ... and `verified_email`");
    let yaml = idp.trusted_for_email_by(CONFIG, "jobspipe-api", &at);
    let proxy = TestProxy::start(&yaml, Some(api.addr)).await;

    let metadata = get_json(&proxy, "/.well-known/oauth-authorization-server", &at).await;
    let block = &metadata["agent_auth"];
    assert_eq!(
        block["identity_types_supported"],
        json!(["identity_assertion"]),
        "{at}"
    );
    assert_eq!(
        block["identity_assertion"]["assertion_types_supported"],
        json!([ID_JAG, "verified_email"]),
        "{at}"
    );
    assert_eq!(
        block["identity_assertion"]["credential_types_supported"],
        json!(["api_key"]),
        "{}",
        SEED.at(38, "credential type `api_key`")
    );

    // Seed line 43's body, with the assertion its type names (seed line 38).
    let register = json!({
        "identity_type": "identity_assertion",
        "assertion_type": "verified_email",
        "identity_assertion": idp.id_token("jobspipe-api", "user-8", "ops@example.com"),
    })
    .to_string();
    let response = post_json(&proxy, "/agent/auth", &register).await;
    let issued = ok_json(response, &SEED.at(38, "`verified_email`")).await;
    let key = issued["credential"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("jp_live_"),
        "{}: {issued}",
        SEED.at(15, "a Bearer token prefixed `jp_live_`")
    );
    assert_eq!(issued["tier"], "free", "{}", SEED.at(15, "Free tier"));
    let used = search(&proxy, Some(&key)).await;
    assert_eq!(
        used.status(),
        200,
        "{}",
        SEED.at(49, "Once you hold a key, use it as the Bearer credential")
    );
    // The same id_token twice registers nothing.
    let replay = post_json(&proxy, "/agent/auth", &register).await;
    SEED.refusal(
        replay,
        401,
        "invalid_grant",
        "REPLAY_DETECTED",
        &SEED.at(38, "a verified_email assertion registers once"),
    )
    .await;
}
