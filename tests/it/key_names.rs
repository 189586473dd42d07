//! One name for a key's secret and one for its id (issue 24): registration and the
//! key management API both answer `credential` and `key_id` (the auth.md spec's
//! names); the key API keeps `key` and `id` beside them, with the same values, as
//! deprecated aliases; the self-revocation endpoint takes either `credential` or
//! `key`; auth.md says so.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use serde_json::{Value, json};

use crate::support::{TestProxy, client};

const KEYS: &str = "/api/v1/auth/keys";

/// `method path` with `key` as the bearer credential and an optional JSON body:
/// the status and the JSON answer.
async fn call(
    proxy: &TestProxy,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(method.parse().unwrap(), proxy.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A key's answer names its secret `credential` (and `key`, the alias, the same)
/// when it carries one, and its id `key_id` (and `id`, the same).
fn assert_named(answer: &Value, with_secret: bool) -> (String, Option<String>) {
    let key_id = answer["key_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no key_id: {answer}"));
    assert!(key_id.starts_with("key_"), "{answer}");
    assert_eq!(answer["id"], answer["key_id"], "the alias `id`: {answer}");
    if !with_secret {
        assert!(answer.get("credential").is_none(), "{answer}");
        assert!(answer.get("key").is_none(), "{answer}");
        return (key_id.to_owned(), None);
    }
    let credential = answer["credential"]
        .as_str()
        .unwrap_or_else(|| panic!("no credential: {answer}"));
    assert!(credential.starts_with("ak_live_"), "{answer}");
    assert_eq!(
        answer["key"], answer["credential"],
        "the alias `key`: {answer}"
    );
    (key_id.to_owned(), Some(credential.to_owned()))
}

#[tokio::test]
async fn registration_and_the_key_api_use_the_same_names_with_the_old_ones_as_aliases() {
    let proxy = TestProxy::example(None).await;
    let (status, registered) = call(
        &proxy,
        "POST",
        "/agent/auth/register",
        None,
        Some(json!({"type": "anonymous", "client_name": "bot"})),
    )
    .await;
    assert_eq!(status, 200, "{registered}");
    let owner = registered["credential"].as_str().unwrap().to_owned();
    assert!(registered["key_id"].as_str().unwrap().starts_with("key_"));

    // Create: the secret as `credential` and `key`, the id as `key_id` and `id`.
    let body = json!({"name": "ci", "scopes": ["offers:read"]});
    let (status, created) = call(&proxy, "POST", KEYS, Some(&owner), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let (key_id, secret) = assert_named(&created, true);
    let secret = secret.unwrap();

    // List: ids under both names, never a secret.
    let (status, list) = call(&proxy, "GET", KEYS, Some(&owner), None).await;
    assert_eq!(status, 200, "{list}");
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{list}");
    for key in keys {
        assert_named(key, false);
    }
    assert!(
        keys.iter().any(|k| k["key_id"] == key_id.as_str()),
        "{list}"
    );

    // Rotate: the new secret under both names, the same id.
    let rotate = format!("{KEYS}/{key_id}/rotate");
    let (status, rotated) = call(&proxy, "POST", &rotate, Some(&owner), None).await;
    assert_eq!(status, 200, "{rotated}");
    let (rotated_id, new_secret) = assert_named(&rotated, true);
    assert_eq!(rotated_id, key_id);
    assert_ne!(new_secret.as_deref(), Some(secret.as_str()));

    // Revoke: the id under both names, no secret.
    let (status, revoked) = call(
        &proxy,
        "DELETE",
        &format!("{KEYS}/{key_id}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(assert_named(&revoked, false).0, key_id);
}

#[tokio::test]
async fn self_revocation_takes_the_secret_as_credential_or_as_key() {
    let proxy = TestProxy::example(None).await;
    for field in ["credential", "key"] {
        let (status, registered) = call(
            &proxy,
            "POST",
            "/agent/auth/register",
            None,
            Some(json!({"type": "anonymous"})),
        )
        .await;
        assert_eq!(status, 200, "{registered}");
        let secret = registered["credential"].as_str().unwrap();
        let (status, answer) = call(
            &proxy,
            "POST",
            "/agent/auth/revoke",
            None,
            Some(json!({ field: secret })),
        )
        .await;
        assert_eq!(status, 200, "{field}: {answer}");
        assert_eq!(answer, json!({"revoked": 1}), "{field}");
        let (status, _) = call(&proxy, "GET", KEYS, Some(secret), None).await;
        assert_eq!(status, 401, "{field}: the key is revoked");
    }
    // Both at once is ambiguous, and refused.
    let (status, answer) = call(
        &proxy,
        "POST",
        "/agent/auth/revoke",
        None,
        Some(json!({"credential": "ak_live_x", "key": "ak_live_y"})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn auth_md_names_credential_and_key_id_and_the_aliases_as_deprecated() {
    let proxy = TestProxy::example(None).await;
    let md = proxy.auth_md().await;
    let section = md
        .split("Manage keys with a key")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("no key management section:\n{md}"));
    assert!(
        section.contains("/api/v1/auth/keys/{key_id}/rotate"),
        "{section}"
    );
    assert!(section.contains("`credential`"), "{section}");
    assert!(section.contains("`key_id`"), "{section}");
    assert!(section.contains("`key`"), "{section}");
    assert!(section.contains("`id`"), "{section}");
    assert!(section.contains("deprecated aliases"), "{section}");
}
