//! AnyGett, reproduced: `tests/seeds/anygett.yaml` in front of a plain upstream, and
//! every request AnyGett's auth.md shows sent to it, every documented answer checked.
//! Each assertion names the line of AnyGett's auth.md it checks.

use reqwest::Method;
use serde_json::{Value, json};

use super::common::{Seed, get, get_json, ok_json, start};
use crate::support::{TestProxy, client};

const CONFIG: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/seeds/anygett.yaml"
));
const SEED: Seed = Seed::new("AnyGett");

/// A request to `path` carrying `X-Agent-Key: <agent_key>` (an identifier or a key).
fn as_agent(
    proxy: &TestProxy,
    method: Method,
    path: &str,
    agent_key: &str,
) -> reqwest::RequestBuilder {
    client()
        .request(method, proxy.url(path))
        .header("X-Agent-Key", agent_key)
}

/// Creates a key as the anonymous agent `agent`, as Step 3 shows.
async fn create_key(proxy: &TestProxy, agent: &str, scopes: &[&str]) -> Value {
    let response = as_agent(proxy, Method::POST, "/api/v1/auth/keys", agent)
        .json(&json!({"name": "my-production-agent", "scopes": scopes}))
        .send()
        .await
        .unwrap();
    let at = SEED.at(59, "POST https://api.anygett.com/api/v1/auth/keys");
    assert_eq!(response.status(), 201, "{at}");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["key"].as_str().unwrap().starts_with("ak_live_"),
        "{}: {body}",
        SEED.at(36, "API key (`ak_live_*`)")
    );
    body
}

async fn get_offers(proxy: &TestProxy, agent_key: &str) -> reqwest::Response {
    as_agent(proxy, Method::GET, "/api/v1/offers", agent_key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn discovery_documents_carry_the_fields_agents_read() {
    let (proxy, _upstream) = start(CONFIG).await;
    let at = SEED.at(19, "Expected fields: `resource`, `authorization_servers`, `scopes_supported`, `bearer_methods_supported` (includes `\"header\"`)");
    let prm = get_json(&proxy, "/.well-known/oauth-protected-resource", &at).await;
    assert_eq!(prm["resource"], proxy.url, "{at}");
    assert_eq!(prm["authorization_servers"], json!([proxy.url]), "{at}");
    for scope in [
        "offers:read",
        "offers:write",
        "offers:delete",
        "contacts:reveal",
    ] {
        assert!(
            prm["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(scope)),
            "{at}: {prm}"
        );
    }
    assert!(
        prm["bearer_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("header")),
        "{at}"
    );

    let at = SEED.at(
        27,
        "Read the `agent_auth` block for registration endpoints and supported identity types.",
    );
    let metadata = get_json(&proxy, "/.well-known/oauth-authorization-server", &at).await;
    let agent_auth = &metadata["agent_auth"];
    assert_eq!(
        agent_auth["register_uri"],
        proxy.url("/agent/auth/register"),
        "{at}: {metadata}"
    );
    assert!(
        agent_auth["identity_types_supported"]
            .to_string()
            .contains("anonymous"),
        "{at}: {agent_auth}"
    );

    let at = SEED.at(
        122,
        "MCP server card: https://api.anygett.com/.well-known/mcp/server-card.json",
    );
    let card = get_json(&proxy, "/.well-known/mcp/server-card.json", &at).await;
    assert_eq!(card["transport"]["endpoint"], "/mcp", "{at}: {card}");
    let at = SEED.at(
        123,
        "Agent card (A2A): https://anygett.com/.well-known/agent-card.json",
    );
    let agent_card = get_json(&proxy, "/.well-known/agent-card.json", &at).await;
    assert_eq!(agent_card["name"], "AnyGett", "{at}");
}

#[tokio::test]
async fn an_anonymous_agent_reads_with_any_stable_identifier_but_cannot_write() {
    let (proxy, upstream) = start(CONFIG).await;
    let response = as_agent(&proxy, Method::GET, "/api/v1/offers", "your-agent-name")
        .header("X-Agent-Name", "Claude")
        .header("X-Agent-Model", "Sonnet 4")
        .send()
        .await
        .unwrap();
    let at = SEED.at(
        42,
        "No registration call required. Send any stable identifier",
    );
    assert_eq!(response.status(), 200, "{at}");
    let seen = upstream.last().await;
    assert_eq!(seen.path, "/api/v1/offers", "{at}");
    assert_eq!(seen.header("x-authmd-tier"), Some("anonymous"), "{at}");
    assert!(
        seen.header("x-authmd-principal")
            .is_some_and(|p| p.starts_with("anonymous:")),
        "{at}: {seen:?}"
    );
    let at = SEED.at(49, "Optional headers for visibility on offer cards");
    assert_eq!(seen.header("x-agent-name"), Some("Claude"), "{at}");
    assert_eq!(seen.header("x-agent-model"), Some("Sonnet 4"), "{at}");

    // Read-only: a write needs a key.
    let response = as_agent(&proxy, Method::POST, "/api/v1/offers", "your-agent-name")
        .json(&json!({"title": "a bike"}))
        .send()
        .await
        .unwrap();
    SEED.envelope(
        response,
        401,
        "UNAUTHORIZED",
        &SEED.at(35, "Anonymous | Quick start, read-only, low volume"),
    )
    .await;
    assert_eq!(upstream.count(), 1, "a refused write never reaches the API");
}

#[tokio::test]
async fn an_agent_creates_a_scoped_key_with_its_identifier_and_uses_it_for_rest_and_mcp() {
    let (proxy, upstream) = start(CONFIG).await;
    let created = create_key(
        &proxy,
        "your-agent-name",
        &["offers:read", "offers:write", "offers:delete"],
    )
    .await;
    let at = SEED.at(
        65,
        r#""scopes": ["offers:read", "offers:write", "offers:delete"]"#,
    );
    assert_eq!(
        created["scopes"],
        json!(["offers:read", "offers:write", "offers:delete"]),
        "{at}"
    );
    assert_eq!(
        created["name"],
        "my-production-agent",
        "{}",
        SEED.at(64, r#""name": "my-production-agent""#)
    );
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();

    // The secret is shown once: the list has the key, never the secret.
    let at = SEED.at(
        56,
        "Create a scoped key (show the secret once — store it securely)",
    );
    let list = as_agent(&proxy, Method::GET, "/api/v1/auth/keys", "your-agent-name")
        .send()
        .await
        .unwrap();
    let list = ok_json(list, &at).await;
    assert_eq!(list["keys"][0]["id"], id, "{at}: {list}");
    assert!(!list.to_string().contains(key), "{at}");

    // Step 4: the key on every request, in X-Agent-Key.
    let response = get_offers(&proxy, key).await;
    let at = SEED.at(
        87,
        "GET https://api.anygett.com/api/v1/offers / X-Agent-Key: ak_live_...",
    );
    assert_eq!(response.status(), 200, "{at}");
    let seen = upstream.last().await;
    assert_eq!(
        seen.header("x-authmd-principal"),
        Some(format!("key:{id}").as_str()),
        "{at}"
    );
    assert_eq!(seen.header("x-authmd-tier"), Some("api_key"), "{at}");
    assert!(
        seen.header("x-agent-key").is_none(),
        "{at}: the key never reaches the API"
    );

    // Scoped writes.
    for (method, path, line, text) in [
        (
            Method::POST,
            "/api/v1/offers",
            104,
            "`offers:write` | Create and update own offers",
        ),
        (
            Method::DELETE,
            "/api/v1/offers/17",
            105,
            "`offers:delete` | Delete own offers",
        ),
    ] {
        let response = as_agent(&proxy, method, path, key).send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", SEED.at(line, text));
    }

    // MCP behind the same key.
    let response = as_agent(&proxy, Method::POST, "/mcp", key)
        .header("Content-Type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    let at = SEED.at(
        94,
        "POST https://api.anygett.com/mcp / X-Agent-Key: ak_live_...",
    );
    assert_eq!(response.status(), 200, "{at}");
    let seen = upstream.last().await;
    assert_eq!(seen.path, "/mcp", "{at}");
    assert_eq!(
        seen.text(),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        "{at}"
    );
}

#[tokio::test]
async fn the_scope_list_is_the_documented_inventory() {
    let (proxy, _upstream) = start(CONFIG).await;
    let at = SEED.at(72, "GET https://api.anygett.com/api/v1/auth/scopes");
    let body = get_json(&proxy, "/api/v1/auth/scopes", &at).await;
    let listed: Vec<(String, String)> = body["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["description"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (line, name, description) in SCOPES {
        assert!(
            listed.contains(&((*name).to_owned(), (*description).to_owned())),
            "{}: {listed:?}",
            SEED.at(*line, &format!("`{name}` | {description}"))
        );
    }
    assert_eq!(
        listed.len(),
        SCOPES.len(),
        "{at}: no scope beyond the document's"
    );
}

#[tokio::test]
async fn rotation_and_revocation_take_effect_at_once_and_only_the_owner_manages() {
    let (proxy, _upstream) = start(CONFIG).await;
    let created = create_key(&proxy, "your-agent-name", &["offers:read"]).await;
    let old = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();

    // Another agent's identifier manages nothing of it.
    let key_path = format!("/api/v1/auth/keys/{id}");
    let response = as_agent(&proxy, Method::DELETE, &key_path, "someone-else")
        .send()
        .await
        .unwrap();
    // The document's 403 row covers scopes and ownership; for a key of another owner
    // the proxy's code is the more precise `NOT_KEY_OWNER`, with `error: forbidden`.
    SEED.refusal(
        response,
        403,
        "forbidden",
        "NOT_KEY_OWNER",
        &SEED.at(
            113,
            "403 `FORBIDDEN` | Missing scope or not owner | only owners can update/delete",
        ),
    )
    .await;

    let rotate = format!("{key_path}/rotate");
    let response = as_agent(&proxy, Method::POST, &rotate, "your-agent-name")
        .send()
        .await
        .unwrap();
    let at = SEED.at(
        78,
        "POST https://api.anygett.com/api/v1/auth/keys/{key_id}/rotate",
    );
    assert_eq!(response.status(), 200, "{at}");
    let rotated: Value = response.json().await.unwrap();
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old, "{at}");
    assert_eq!(rotated["id"], id.as_str(), "{at}");
    assert_eq!(get_offers(&proxy, &new).await.status(), 200, "{at}");

    // The old secret is now a revoked key: 401 INVALID_API_KEY, with the discovery hint.
    let response = get_offers(&proxy, &old).await;
    let at = SEED.at(
        116,
        "On 401, fetch `/.well-known/oauth-protected-resource` from the `WWW-Authenticate` header",
    );
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"{}\"",
            proxy.url("/.well-known/oauth-protected-resource")
        )),
        "{at}: {challenge}"
    );
    let revoked = SEED.at(112, "401 `INVALID_API_KEY` | Key revoked or invalid");
    SEED.envelope(response, 401, "INVALID_API_KEY", &revoked)
        .await;

    let response = as_agent(&proxy, Method::DELETE, &key_path, "your-agent-name")
        .send()
        .await
        .unwrap();
    let at = SEED.at(
        79,
        "DELETE https://api.anygett.com/api/v1/auth/keys/{key_id}",
    );
    assert_eq!(response.status(), 200, "{at}");
    SEED.envelope(
        get_offers(&proxy, &new).await,
        401,
        "INVALID_API_KEY",
        &revoked,
    )
    .await;
}

#[tokio::test]
async fn a_key_without_the_scope_is_forbidden() {
    let (proxy, upstream) = start(CONFIG).await;
    let created = create_key(&proxy, "reader-agent", &["offers:read"]).await;
    let key = created["key"].as_str().unwrap();
    let response = as_agent(&proxy, Method::DELETE, "/api/v1/offers/17", key)
        .send()
        .await
        .unwrap();
    let body = SEED
        .envelope(
            response,
            403,
            "FORBIDDEN",
            &SEED.at(113, "403 `FORBIDDEN` | Missing scope or not owner"),
        )
        .await
        .body;
    assert!(
        body["message"].as_str().unwrap().contains("offers:delete"),
        "{}: {body}",
        SEED.at(113, "Check scopes")
    );
    assert_eq!(upstream.count(), 0);

    // Nor can a key be created with scopes beyond what keys may hold... none here; but
    // an unknown scope is refused rather than ignored.
    let response = as_agent(&proxy, Method::POST, "/api/v1/auth/keys", "reader-agent")
        .json(&json!({"name": "x", "scopes": ["offers:steal"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        400,
        "{}",
        SEED.at(101, "| Scope | Access |")
    );
}

/// Sends requests as `agent_key` until one is refused; the limit is `limit` per
/// minute. The bucket refills continuously, so a few more than `limit` may pass
/// while the loop runs (one per second at 60/min); never fewer.
async fn exhaust(proxy: &TestProxy, agent_key: &str, limit: usize, at: &str) -> reqwest::Response {
    for sent in 0..2 * limit {
        let response = get_offers(proxy, agent_key).await;
        if response.status() == 429 {
            assert!(sent >= limit, "{at}: refused after {sent} requests");
            return response;
        }
        assert_eq!(response.status(), 200, "{at}");
        assert_eq!(
            response.headers()["ratelimit-limit"],
            limit.to_string().as_str(),
            "{at}"
        );
        assert_eq!(
            response.headers()["x-ratelimit-limit"],
            limit.to_string().as_str(),
            "{at}"
        );
    }
    panic!("{at}: never refused in {} requests", 2 * limit);
}

#[tokio::test]
async fn anonymous_agents_get_60_a_minute_and_keys_300() {
    let (proxy, _upstream) = start(CONFIG).await;
    let at = SEED.at(35, "Anonymous | ... | 60 req/min");
    let response = exhaust(&proxy, "busy-agent", 60, &at).await;
    assert_eq!(response.headers()["ratelimit-policy"], "60;w=60", "{at}");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "{at}: Retry-After {retry_after}"
    );
    SEED.envelope(
        response,
        429,
        "RATE_LIMIT_EXCEEDED",
        &SEED.at(
            114,
            "429 `RATE_LIMIT_EXCEEDED` | Too many requests | Add `X-Agent-Key` or wait",
        ),
    )
    .await;
    // Each identifier counts on its own.
    assert_eq!(get_offers(&proxy, "calm-agent").await.status(), 200, "{at}");

    let key = create_key(&proxy, "busy-agent", &["offers:read"]).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = SEED.at(36, "API key (`ak_live_*`) | ... | 300 req/min");
    let response = exhaust(&proxy, &key, 300, &at).await;
    assert_eq!(response.headers()["ratelimit-policy"], "300;w=60", "{at}");
    SEED.envelope(
        response,
        429,
        "RATE_LIMIT_EXCEEDED",
        &SEED.at(114, "429 `RATE_LIMIT_EXCEEDED`"),
    )
    .await;
}

/// The scopes of the document's table (line, name, description).
const SCOPES: &[(u32, &str, &str)] = &[
    (103, "offers:read", "Read public offers"),
    (104, "offers:write", "Create and update own offers"),
    (105, "offers:delete", "Delete own offers"),
    (106, "contacts:reveal", "Reveal contact information"),
];

/// What AnyGett's auth.md names, each with its line: the generated `/auth.md` must
/// name it too.
const DOCUMENT: &[(u32, &str)] = &[
    (10, "/.well-known/oauth-protected-resource"),
    (24, "/.well-known/oauth-authorization-server"),
    (35, "60"),
    (36, "300"),
    (36, "ak_live_"),
    (46, "X-Agent-Key"),
    (59, "/api/v1/auth/keys"),
    (72, "/api/v1/auth/scopes"),
    (78, "/rotate"),
    (94, "/mcp"),
    (112, "INVALID_API_KEY"),
    (113, "FORBIDDEN"),
    (114, "RATE_LIMIT_EXCEEDED"),
    (116, "WWW-Authenticate"),
];

#[tokio::test]
async fn the_generated_auth_md_describes_what_the_original_does() {
    let (proxy, _upstream) = start(CONFIG).await;
    let text = get(&proxy, "/auth.md", None).await.text().await.unwrap();
    SEED.same_document(
        &text,
        DOCUMENT,
        SCOPES.iter().map(|(line, name, _)| (*line, *name)),
    );
}
