//! The credential lifecycle endpoints over real sockets: what each does, and how each
//! refuses bad input (a precise code in the JSON envelope, nothing changed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use serde_json::{Value, json};

use crate::support;
use crate::support::{READER_KEY, TestProxy, WRITER_KEY, assert_envelope, client};

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml")).unwrap()
}

/// The example config with `from` replaced by `to`.
async fn proxy_with(from: &str, to: &str) -> TestProxy {
    let text = example();
    assert!(text.contains(from), "{from}");
    TestProxy::start(&text.replace(from, to), None).await
}

async fn post_json(
    proxy: &TestProxy,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = client().post(proxy.url(path)).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn register(proxy: &TestProxy, body: Value) -> Value {
    let response = post_json(proxy, "/agent/auth/register", None, body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Status of `method path` with `key`.
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

/// The ids of the keys `key`'s owner holds.
async fn key_ids(proxy: &TestProxy, key: &str) -> Vec<String> {
    let response = client()
        .get(proxy.url("/api/v1/auth/keys"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn anonymous_registration_grants_at_most_what_was_asked_and_allowed() {
    let proxy = TestProxy::example(None).await;
    let full = register(&proxy, json!({"type": "anonymous", "client_name": "bot"})).await;
    assert!(full["credential"].as_str().unwrap().starts_with("ak_live_"));
    assert!(
        full["registration_id"]
            .as_str()
            .unwrap()
            .starts_with("reg_")
    );
    // The example's claims are made by a person signed in on the claim page (its
    // `login:` demo account), so the answer offers one (`claims_signed_in` makes it).
    assert!(full["claim_url"].as_str().is_some(), "{full}");
    assert_eq!(full["scopes"], json!(["offers:read", "offers:write"]));
    let key = full["credential"].as_str().unwrap();
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", key).await, 200);
    assert_eq!(status(&proxy, "DELETE", "/api/v1/offers/1", key).await, 403);

    // The seeds' field names; a narrower request; a scope beyond the grant is not given.
    let narrow = register(
        &proxy,
        json!({"identity_type": "anonymous", "scopes": "offers:read contacts:reveal"}),
    )
    .await;
    assert_eq!(narrow["scopes"], json!(["offers:read"]));
    let key = narrow["credential"].as_str().unwrap();
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", key).await, 403);
}

#[tokio::test]
async fn bad_registrations_get_precise_codes_and_issue_nothing() {
    let proxy = TestProxy::example(None).await;
    let url = proxy.url("/agent/auth/register");
    let send = |body: &'static str, content_type: &'static str| {
        client()
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let body = assert_envelope(
        send("{\"type\": ", "application/json").await.unwrap(),
        400,
        "invalid_request",
        "INVALID_REQUEST",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("not valid JSON"));
    // A member the endpoint does not know is ignored and named (RFC 7591 section 2);
    // one it knows, with a value of the wrong type, is refused naming it.
    let body = assert_envelope(
        send(
            "{\"type\":\"anonymous\",\"colour\":\"red\",\"scopes\":7}",
            "application/json",
        )
        .await
        .unwrap(),
        400,
        "invalid_request",
        "INVALID_REQUEST",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().ends_with(
            "`scopes`: expected a list of strings or a space-separated string, got a number"
        ),
        "{body}"
    );
    // A value in the wrong place is never repeated: it could be a secret.
    let body = assert_envelope(
        send(
            "{\"client_name\": [\"ak_live_s3cret\"]}",
            "application/json",
        )
        .await
        .unwrap(),
        400,
        "invalid_request",
        "INVALID_REQUEST",
    )
    .await;
    assert!(!body.to_string().contains("s3cret"), "{body}");
    assert_envelope(
        send("type=anonymous", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        415,
        "invalid_request",
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    let large = format!("{{\"client_name\": \"{}\"}}", "x".repeat(20 * 1024));
    let response = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(large)
        .send()
        .await
        .unwrap();
    assert_envelope(response, 413, "invalid_request", "BODY_TOO_LARGE").await;
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    assert_envelope(response, 405, "method_not_allowed", "METHOD_NOT_ALLOWED").await;
    for (body, status, error, code) in [
        (
            json!({"type": "anonymous", "requested_credential_type": "access_token"}),
            400,
            "invalid_request",
            "UNSUPPORTED_CREDENTIAL_TYPE",
        ),
        (
            json!({"type": "identity_assertion", "assertion": "eyJ.eyJ.x"}),
            403,
            "access_denied",
            "ISSUER_NOT_ENABLED",
        ),
        (
            json!({"type": "anonymous", "scopes": ["ofers:read"]}),
            400,
            "invalid_scope",
            "INVALID_SCOPE",
        ),
        (
            json!({"type": "robot"}),
            400,
            "invalid_request",
            "INVALID_REQUEST",
        ),
    ] {
        let response = post_json(&proxy, "/agent/auth/register", None, body).await;
        assert_envelope(response, status, error, code).await;
    }
    // The default limit is 5 per address per hour: none of the above used one.
    for _ in 0..5 {
        register(&proxy, json!({"type": "anonymous"})).await;
    }
    let response = post_json(&proxy, "/agent/auth/register", None, json!({})).await;
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    assert_envelope(response, 429, "rate_limited", "RATE_LIMITED").await;
}

#[tokio::test]
async fn keys_are_created_within_the_creators_scopes_listed_without_secrets() {
    let proxy = TestProxy::example(None).await;
    let response = post_json(
        &proxy,
        "/api/v1/auth/keys",
        Some(WRITER_KEY),
        json!({"name": "ci", "scopes": ["offers:read"]}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let secret = created["key"].as_str().unwrap();
    assert_eq!(status(&proxy, "GET", "/api/v1/offers/1", secret).await, 200);
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", secret).await, 403);

    let list = client()
        .get(proxy.url("/api/v1/auth/keys"))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains(created["id"].as_str().unwrap()));
    assert!(!list.contains(secret), "a secret is shown exactly once");

    // Escalation: the reader key asks for a write scope.
    let before = key_ids(&proxy, READER_KEY).await;
    let response = post_json(
        &proxy,
        "/api/v1/auth/keys",
        Some(READER_KEY),
        json!({"name": "up", "scopes": ["offers:write"]}),
    )
    .await;
    let body = assert_envelope(response, 403, "insufficient_scope", "SCOPE_ESCALATION").await;
    assert!(body["message"].as_str().unwrap().contains("offers:write"));
    assert_eq!(key_ids(&proxy, READER_KEY).await, before);

    // No credential, or an anonymous one: 401 with the challenge.
    let response = client()
        .post(proxy.url("/api/v1/auth/keys"))
        .header("x-agent-key", "my-agent")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert!(support::www(&response).contains("resource_metadata"));
    assert_envelope(response, 401, "unauthorized", "UNAUTHORIZED").await;
}

#[tokio::test]
async fn rotation_and_revocation_take_effect_on_the_next_request() {
    let proxy = TestProxy::example(None).await;
    let create = || async {
        let response = post_json(
            &proxy,
            "/api/v1/auth/keys",
            Some(WRITER_KEY),
            json!({"name": "k", "scopes": ["offers:write"]}),
        )
        .await;
        let body: Value = response.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    };
    let (id, old) = create().await;
    let response = post_json(
        &proxy,
        &format!("/api/v1/auth/keys/{id}/rotate"),
        Some(WRITER_KEY),
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let new = response.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", &new).await, 200);
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", &old).await, 401);

    assert_eq!(
        status(
            &proxy,
            "DELETE",
            &format!("/api/v1/auth/keys/{id}"),
            WRITER_KEY
        )
        .await,
        200
    );
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", &new).await, 401);

    // Holder revocation, and the RFC 7009 endpoint.
    let (_, held) = create().await;
    let response = post_json(
        &proxy,
        "/agent/auth/revoke",
        None,
        json!({"credential": held}),
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"revoked": 1})
    );
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", &held).await, 401);
    let response = post_json(
        &proxy,
        "/agent/auth/revoke",
        None,
        json!({"credential": "ak_live_not_a_key"}),
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"revoked": 0})
    );
    let (_, oauth) = create().await;
    let response = client()
        .post(proxy.url("/oauth2/revoke"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={oauth}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", &oauth).await, 401);
}

#[tokio::test]
async fn only_the_owner_manages_a_key_and_config_keys_are_not_managed() {
    let proxy = TestProxy::example(None).await;
    let agent = register(&proxy, json!({"type": "anonymous"})).await;
    let theirs = agent["key_id"].as_str().unwrap();
    let their_key = agent["credential"].as_str().unwrap();
    for (method, path) in [
        ("DELETE", format!("/api/v1/auth/keys/{theirs}")),
        ("POST", format!("/api/v1/auth/keys/{theirs}/rotate")),
    ] {
        let response = client()
            .request(method.parse().unwrap(), proxy.url(&path))
            .bearer_auth(WRITER_KEY)
            .send()
            .await
            .unwrap();
        assert_envelope(response, 403, "forbidden", "NOT_KEY_OWNER").await;
    }
    assert_eq!(
        status(&proxy, "POST", "/api/v1/offers", their_key).await,
        200
    );

    let response = client()
        .delete(proxy.url("/api/v1/auth/keys/key_doesnotexist"))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap();
    assert_envelope(response, 404, "not_found", "KEY_NOT_FOUND").await;
    let response = client()
        .delete(proxy.url("/api/v1/auth/keys/example-reader"))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap();
    assert_envelope(response, 409, "invalid_request", "KEY_NOT_MANAGED").await;
    let response = post_json(
        &proxy,
        "/agent/auth/revoke",
        None,
        json!({"credential": READER_KEY}),
    )
    .await;
    assert_envelope(response, 409, "invalid_request", "KEY_NOT_MANAGED").await;
    assert_eq!(
        status(&proxy, "GET", "/api/v1/offers/1", READER_KEY).await,
        200
    );
}

#[tokio::test]
async fn an_owner_holds_at_most_the_configured_number_of_keys() {
    let proxy = proxy_with("max_keys_per_owner: 25", "max_keys_per_owner: 2").await;
    for expected in [201, 201] {
        let response = post_json(&proxy, "/api/v1/auth/keys", Some(WRITER_KEY), json!({})).await;
        assert_eq!(response.status(), expected);
    }
    let response = post_json(&proxy, "/api/v1/auth/keys", Some(WRITER_KEY), json!({})).await;
    assert_envelope(response, 409, "invalid_request", "KEY_LIMIT_REACHED").await;
    assert_eq!(key_ids(&proxy, WRITER_KEY).await.len(), 2);
}

#[tokio::test]
async fn a_rotation_grace_keeps_the_old_secret_working() {
    let proxy = proxy_with("rotation_grace: 0s", "rotation_grace: 1h").await;
    let created: Value = post_json(&proxy, "/api/v1/auth/keys", Some(WRITER_KEY), json!({}))
        .await
        .json()
        .await
        .unwrap();
    let (id, old) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let rotated: Value = post_json(
        &proxy,
        &format!("/api/v1/auth/keys/{id}/rotate"),
        Some(WRITER_KEY),
        json!({}),
    )
    .await
    .json()
    .await
    .unwrap();
    let new = rotated["key"].as_str().unwrap();
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", old).await, 200);
    assert_eq!(status(&proxy, "POST", "/api/v1/offers", new).await, 200);
}

#[tokio::test]
async fn claims_by_token_raise_the_key_once_and_the_page_escapes_what_agents_wrote() {
    // Without sign-in (no `login:`): with it, the page signs the person in first
    // (`claims_signed_in`).
    let text = crate::support::example_without("login").replace(
        "require_identity_to_claim: true",
        "require_identity_to_claim: false",
    );
    let proxy = TestProxy::start(&text, None).await;
    let agent = register(
        &proxy,
        json!({"type": "anonymous", "client_name": "<script>x</script>"}),
    )
    .await;
    let key = agent["credential"].as_str().unwrap();
    let token = agent["claim_token"].as_str().unwrap();

    let page = client()
        .get(agent["claim_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(!html.contains("<script>x"));
    let unknown = client()
        .get(proxy.url("/agent/auth/claim?token=clm_nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let missing = client()
        .get(proxy.url("/agent/auth/claim"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);

    assert_eq!(status(&proxy, "DELETE", "/api/v1/offers/1", key).await, 403);
    let response = post_json(
        &proxy,
        "/agent/auth/claim",
        None,
        json!({"claim_token": "clm_nope"}),
    )
    .await;
    assert_envelope(response, 401, "invalid_grant", "INVALID_CLAIM_TOKEN").await;
    // The page's form.
    let response = client()
        .post(proxy.url("/agent/auth/claim"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("claim_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(status(&proxy, "DELETE", "/api/v1/offers/1", key).await, 200);
    let response = post_json(
        &proxy,
        "/agent/auth/claim",
        None,
        json!({"claim_token": token}),
    )
    .await;
    assert_envelope(response, 409, "invalid_grant", "PREVIOUSLY_CLAIMED").await;
    let page = client()
        .get(agent["claim_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 409);
}

#[tokio::test]
async fn the_scope_list_and_the_metadata_name_every_endpoint() {
    let proxy = TestProxy::example(None).await;
    let scopes: Value = client()
        .get(proxy.url("/api/v1/auth/scopes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = scopes["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "offers:read",
            "offers:write",
            "offers:delete",
            "contacts:reveal"
        ]
    );
    let metadata: Value = client()
        .get(proxy.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let block = &metadata["agent_auth"];
    assert_eq!(block["register_uri"], proxy.url("/agent/auth/register"));
    assert_eq!(block["identity_endpoint"], block["register_uri"]);
    // A person signs in to claim (the example's `login:`): the claim endpoint is
    // named (`self_claim` has the metadata without sign-in, which names none).
    assert_eq!(block["claim_uri"], proxy.url("/agent/auth/claim"));
    assert_eq!(block["claim_endpoint"], block["claim_uri"]);
    assert_eq!(block["revocation_uri"], proxy.url("/agent/auth/revoke"));
    assert_eq!(block["identity_types_supported"], json!(["anonymous"]));
}
