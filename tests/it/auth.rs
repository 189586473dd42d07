//! Admission over real sockets: every rejection, the identity the upstream sees, and
//! attempts to reach a protected path under a weaker rule.

use crate::support;
use crate::support::{READER_KEY, TestProxy, WRITER_KEY, assert_envelope, client, json, raw_get};

fn challenge(proxy: &TestProxy, extra: &str) -> String {
    format!(
        "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource\"{extra}",
        proxy.url
    )
}

#[tokio::test]
async fn no_credential_on_a_protected_route_is_401_with_the_discovery_challenge() {
    let proxy = TestProxy::example(None).await;
    let response = client()
        .post(proxy.url("/api/v1/offers"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let www = support::www(&response);
    assert_eq!(www, challenge(&proxy, ", scope=\"offers:write\""));
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = assert_envelope(response, 401, "unauthorized", "UNAUTHORIZED").await;
    assert_eq!(
        body["docs"],
        format!("{}/auth.md#use-the-credential", proxy.url)
    );
}

#[tokio::test]
async fn a_good_key_is_forwarded_with_identity_and_without_the_credential() {
    let proxy = TestProxy::example(None).await;
    for (header, value) in [
        ("x-agent-key", WRITER_KEY.to_owned()),
        ("x-api-key", WRITER_KEY.to_owned()),
        ("authorization", format!("Bearer {WRITER_KEY}")),
    ] {
        let response = client()
            .post(proxy.url("/api/v1/offers?draft=1"))
            .header(header, &value)
            .body("{\"title\":\"x\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{header}");
        let echo = json(response).await;
        let seen = &echo["headers"];
        assert_eq!(seen["x-authmd-principal"], "key:example-writer");
        assert_eq!(seen["x-authmd-scopes"], "offers:read offers:write");
        assert_eq!(seen["x-authmd-tier"], "free");
        for consumed in ["x-agent-key", "x-api-key", "authorization"] {
            assert!(
                seen.get(consumed).is_none(),
                "{consumed} reached the upstream via {header}"
            );
        }
        assert!(
            !echo.to_string().contains(WRITER_KEY),
            "the key reached the upstream"
        );
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["query"], "draft=1");
        assert_eq!(echo["body"]["text"], "{\"title\":\"x\"}");
    }
}

#[tokio::test]
async fn a_key_without_the_scope_is_403_naming_the_scope() {
    let proxy = TestProxy::example(None).await;
    let response = client()
        .patch(proxy.url("/api/v1/offers/7"))
        .header("x-agent-key", READER_KEY)
        .send()
        .await
        .unwrap();
    let www = support::www(&response);
    assert_eq!(
        www,
        challenge(
            &proxy,
            ", error=\"insufficient_scope\", scope=\"offers:write\""
        )
    );
    let body = assert_envelope(response, 403, "insufficient_scope", "FORBIDDEN").await;
    assert!(
        body["message"].as_str().unwrap().contains("offers:write"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_keys_and_tokens_are_401_invalid_token() {
    let proxy = TestProxy::example(None).await;
    let unknown = authmd_proxy::credentials::api_key::mint("ak_live")
        .unwrap()
        .secret
        .to_string();
    let mut bad_checksum = WRITER_KEY.to_owned();
    bad_checksum.pop();
    bad_checksum.push('2');
    let cases = [
        ("x-agent-key", unknown.clone(), "INVALID_API_KEY"),
        ("x-agent-key", bad_checksum, "INVALID_API_KEY"),
        ("x-api-key", "not-a-key".to_owned(), "INVALID_API_KEY"),
        (
            "authorization",
            "Bearer whatever".to_owned(),
            "INVALID_API_KEY",
        ),
        (
            "authorization",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned(),
            "TOKEN_ALGORITHM_REFUSED",
        ),
        (
            "authorization",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln".to_owned(),
            "TOKEN_ALGORITHM_REFUSED",
        ),
    ];
    for (header, value, code) in cases {
        let response = client()
            .get(proxy.url("/api/v1/offers"))
            .header(header, &value)
            .send()
            .await
            .unwrap();
        let www = support::www(&response);
        assert_eq!(
            www,
            challenge(&proxy, ", error=\"invalid_token\""),
            "{value}"
        );
        let body = assert_envelope(response, 401, "invalid_token", code).await;
        assert!(
            !body.to_string().contains(&value),
            "the credential was echoed: {body}"
        );
    }
}

#[tokio::test]
async fn anonymous_agents_get_the_anonymous_tier_only() {
    let proxy = TestProxy::example(None).await;
    // No credential at all.
    let echo = json(
        client()
            .get(proxy.url("/api/v1/offers"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo["headers"]["x-authmd-principal"], "anonymous");
    assert_eq!(echo["headers"]["x-authmd-tier"], "anonymous");
    assert_eq!(echo["headers"]["x-authmd-scopes"], "offers:read");
    // An anonymous identifier: a stable hashed principal, never the raw value.
    let echo = json(
        client()
            .get(proxy.url("/api/v1/offers/1"))
            .header("x-agent-key", "my-agent")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let principal = echo["headers"]["x-authmd-principal"].as_str().unwrap();
    assert!(principal.starts_with("anonymous:"), "{principal}");
    assert!(!echo.to_string().contains("my-agent"));
    // It cannot write: told to authenticate (401), with the scope it needs.
    let response = client()
        .post(proxy.url("/api/v1/offers"))
        .header("x-agent-key", "my-agent")
        .send()
        .await
        .unwrap();
    assert_envelope(response, 401, "unauthorized", "UNAUTHORIZED").await;
}

#[tokio::test]
async fn a_tier_below_the_route_minimum_is_refused() {
    let yaml = r#"
upstream: {url: builtin:echo}
credentials: {key_prefixes: [ak_live]}
scopes: {offers:read: Read}
tiers: [{name: anonymous}, {name: free}, {name: verified}]
keys:
  - {id: w, hash: "blake3:5e3badb54234fb3ed212ad03431ec29d20925e7e39e421d1a4fd63d269624e14", scopes: [offers:read], tier: free}
  - {id: r, hash: "blake3:3002225b1a30aefeed4ac8e020b60bf3a476dbb26802044570a85ddf52efc19e", scopes: [offers:read], tier: verified}
routes:
  - {path: /contact, scopes: [offers:read], min_tier: verified}
"#;
    let proxy = TestProxy::start(yaml, None).await;
    let response = client()
        .get(proxy.url("/contact"))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap();
    let body = assert_envelope(response, 403, "insufficient_tier", "INSUFFICIENT_TIER").await;
    assert!(body["message"].as_str().unwrap().contains("verified"));
    let response = client()
        .get(proxy.url("/contact"))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn conflicting_or_repeated_credentials_are_400() {
    let proxy = TestProxy::example(None).await;
    let response = client()
        .get(proxy.url("/api/v1/offers"))
        .header("x-api-key", READER_KEY)
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap();
    assert_envelope(response, 400, "invalid_request", "INVALID_REQUEST").await;
    let response = raw_get(
        proxy.addr,
        "/api/v1/offers",
        &[("X-Agent-Key", READER_KEY), ("X-Agent-Key", READER_KEY)],
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["code"], "INVALID_REQUEST");
}

#[tokio::test]
async fn unknown_paths_are_404_and_unlisted_methods_405() {
    let proxy = TestProxy::example(None).await;
    let response = client().get(proxy.url("/nowhere")).send().await.unwrap();
    assert_envelope(response, 404, "not_found", "NOT_FOUND").await;
    let response = client()
        .delete(proxy.url("/health"))
        .header("x-agent-key", WRITER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert_envelope(response, 405, "method_not_allowed", "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn identity_headers_from_the_client_never_reach_the_upstream() {
    let proxy = TestProxy::example(None).await;
    let spoof = [
        ("X-Authmd-Principal", "key:admin"),
        ("X-Authmd-Scopes", "admin:*"),
        ("X-Authmd-Tier", "verified"),
        ("X-Authmd-Other", "x"),
    ];
    // Public route: no identity at all.
    let echo = raw_get(proxy.addr, "/health", &spoof).await.json();
    assert!(
        echo["headers"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("x-authmd-")),
        "{echo}"
    );
    // Authenticated route: only the proxy's values.
    let mut headers = spoof.to_vec();
    headers.push(("X-Agent-Key", READER_KEY));
    let echo = raw_get(proxy.addr, "/api/v1/offers", &headers).await.json();
    assert_eq!(echo["headers"]["x-authmd-principal"], "key:example-reader");
    assert_eq!(echo["headers"]["x-authmd-scopes"], "offers:read");
    assert_eq!(echo["headers"]["x-authmd-tier"], "free");
    assert!(echo["headers"].get("x-authmd-other").is_none());
}

const GUARDED: &str = r#"
upstream: {url: builtin:echo}
credentials: {key_prefixes: [ak_live]}
scopes: {admin:users: Manage users, admin:*: Everything under admin}
keys:
  - {id: reader, hash: "blake3:3002225b1a30aefeed4ac8e020b60bf3a476dbb26802044570a85ddf52efc19e"}
  - {id: admin, hash: "blake3:5e3badb54234fb3ed212ad03431ec29d20925e7e39e421d1a4fd63d269624e14", scopes: ["admin:*"]}
routes:
  - {id: admin, path: "/admin/{*rest}", scopes: [admin:users]}
  - {id: public, path: "/{*rest}", access: public}
paths: {case_insensitive: CASE}
"#;

/// Every way of spelling a protected path is either refused outright (400) or
/// judged by the protected rule (401 without the admin scope): never forwarded as
/// public.
#[tokio::test]
async fn encoding_tricks_never_reach_a_protected_path_under_a_weaker_rule() {
    let proxy = TestProxy::start(&GUARDED.replace("CASE", "true"), None).await;
    let attacks = [
        "/admin/users",
        "/admin",
        "/admin/",
        "//admin/users",
        "/./admin/users",
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2e/admin/users",
        "/public/.%2e/admin/users",
        "/%61dmin/users",
        "/%61%64%6d%69%6e",
        "/ADMIN/users",
        "/Admin",
        "/admin/users/",
        "/admin/users/.",
        "/admin/./users",
        "/public/..%2Fadmin/users",
        "/admin;jsessionid=1/users",
        "/admin%3b/users",
        "/admin%2Fusers",
        "/admin%5Cusers",
        "/public%2F..%2Fadmin",
        "/admin%00/users",
        "/../admin/users",
    ];
    let reader = format!("Bearer {READER_KEY}");
    for path in attacks {
        for headers in [vec![], vec![("Authorization", reader.as_str())]] {
            let response = raw_get(proxy.addr, path, &headers).await;
            assert!(
                matches!(response.status, 400 | 401 | 403),
                "{path} with {headers:?} got {}: {}",
                response.status,
                response.body
            );
        }
    }
    // With the admin scope, the normalised path is what the upstream receives.
    let bearer = format!("Bearer {WRITER_KEY}");
    for (path, forwarded) in [
        ("/public/%2e%2e/admin/users", "/admin/users"),
        ("//admin//users/", "/admin/users/"),
        ("/%61dmin/%7Eme", "/admin/~me"),
    ] {
        let response = raw_get(proxy.addr, path, &[("Authorization", &bearer)]).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        assert_eq!(response.json()["path"], forwarded, "{path}");
    }
}

#[tokio::test]
async fn paths_are_case_sensitive_unless_configured() {
    let proxy = TestProxy::start(&GUARDED.replace("CASE", "false"), None).await;
    // Case-sensitive: `/ADMIN` is another path, which the public rule covers, and the
    // upstream receives it as `/ADMIN` (for an upstream that is also case-sensitive).
    let response = raw_get(proxy.addr, "/ADMIN/users", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["path"], "/ADMIN/users");
    let response = raw_get(proxy.addr, "/admin/users", &[]).await;
    assert_eq!(response.status, 401);
}

#[tokio::test]
async fn invalid_paths_are_400_with_the_envelope() {
    let proxy = TestProxy::example(None).await;
    let response = raw_get(proxy.addr, "/api/v1/offers%2F1", &[]).await;
    assert_eq!(response.status, 400);
    let body = response.json();
    assert_eq!(body["code"], "INVALID_PATH");
    assert_eq!(body["error"], "invalid_request");
}
