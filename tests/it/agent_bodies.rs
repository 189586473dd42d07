//! The request bodies of the lifecycle endpoints (register, claim, key creation,
//! agent revocation) as agents write them, over real sockets: members an endpoint
//! does not know are ignored and listed in the answer's `ignored_members` (RFC 7591
//! section 2 does the same for client metadata), the two names of one member
//! (`type` and `identity_type`, ...) are accepted together when they agree and
//! refused naming both when they do not, every refusal of a body names the member
//! and what was wrong with it without repeating a value, and a `password` is
//! ignored and answered with how the agent signs in again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use serde_json::{Value, json};

use crate::support::{TestProxy, WRITER_KEY, assert_envelope, client};

const REGISTER: &str = "/agent/auth/register";
const CLAIM: &str = "/agent/auth/claim";
const KEYS: &str = "/api/v1/auth/keys";
const REVOKE: &str = "/agent/auth/revoke";

/// The example config, with claims by token and room for many registrations.
async fn proxy() -> TestProxy {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    for from in [
        "require_identity_to_claim: true",
        "per_hour: 5                # anonymous",
    ] {
        assert!(text.contains(from), "the example changed: {from}");
    }
    let text = text
        .replace(
            "require_identity_to_claim: true",
            "require_identity_to_claim: false",
        )
        .replace(
            "per_hour: 5                # anonymous",
            "per_hour: 100              # anonymous",
        );
    TestProxy::start(&text, None).await
}

/// `POST path` with `body` as written (JSON), with `key` as a Bearer credential.
async fn post(proxy: &TestProxy, path: &str, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = client()
        .post(proxy.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// The JSON of a `status` answer to `POST path`.
async fn answer(
    proxy: &TestProxy,
    path: &str,
    key: Option<&str>,
    body: &str,
    status: u16,
) -> Value {
    let response = post(proxy, path, key, body).await;
    let seen = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(seen, status, "POST {path} {body}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The message of the `400 INVALID_REQUEST` that `POST path` with `body` gets.
async fn refusal(proxy: &TestProxy, path: &str, key: Option<&str>, body: &str) -> String {
    let response = post(proxy, path, key, body).await;
    let refused = assert_envelope(response, 400, "invalid_request", "INVALID_REQUEST").await;
    refused["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn members_an_endpoint_does_not_know_are_ignored_and_listed_sorted() {
    let proxy = proxy().await;
    // Register: the known members apply, the others are listed once each, sorted.
    let agent = answer(
        &proxy,
        REGISTER,
        None,
        r#"{"zeta": 1, "type": "anonymous", "client_name": "lister",
            "alpha": {"nested": [1, {"deep": null}]}, "scopes": ["offers:read"], "zeta": "again"}"#,
        200,
    )
    .await;
    assert_eq!(
        agent["ignored_members"],
        json!(["alpha", "zeta"]),
        "{agent}"
    );
    assert_eq!(agent["scopes"], json!(["offers:read"]), "{agent}");
    // None ignored: no such field.
    let plain = answer(&proxy, REGISTER, None, r#"{"type": "anonymous"}"#, 200).await;
    assert!(plain.get("ignored_members").is_none(), "{plain}");

    // Claim.
    let token = agent["claim_token"].as_str().unwrap();
    let claimed = answer(
        &proxy,
        CLAIM,
        None,
        &json!({"claim_token": token, "note": "from the operator"}).to_string(),
        200,
    )
    .await;
    assert_eq!(claimed["status"], "claimed", "{claimed}");
    assert_eq!(claimed["ignored_members"], json!(["note"]), "{claimed}");

    // Key creation; the list of keys has no such field.
    let created = answer(
        &proxy,
        KEYS,
        Some(WRITER_KEY),
        r#"{"name": "ci", "scopes": ["offers:read"], "expires_in": 3600, "description": "x"}"#,
        201,
    )
    .await;
    assert_eq!(
        created["ignored_members"],
        json!(["description", "expires_in"]),
        "{created}"
    );
    assert_eq!(created["name"], "ci", "{created}");
    let listed: Value = client()
        .get(proxy.url(KEYS))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!listed.to_string().contains("ignored_members"), "{listed}");

    // Agent revocation.
    let secret = created["credential"].as_str().unwrap();
    let revoked = answer(
        &proxy,
        REVOKE,
        None,
        &json!({"credential": secret, "reason": "rotated out"}).to_string(),
        200,
    )
    .await;
    assert_eq!(
        revoked,
        json!({"revoked": 1, "ignored_members": ["reason"]})
    );
}

#[tokio::test]
async fn type_and_identity_type_together_register_when_they_agree() {
    let proxy = proxy().await;
    // The body the issue quotes, answered "the body must be a JSON object" before.
    let agent = answer(
        &proxy,
        REGISTER,
        None,
        r#"{"type":"anonymous","identity_type":"anonymous"}"#,
        200,
    )
    .await;
    assert_eq!(agent["registration_type"], "anonymous", "{agent}");
    assert!(
        agent["credential"]
            .as_str()
            .unwrap()
            .starts_with("ak_live_")
    );
    assert!(agent.get("ignored_members").is_none(), "{agent}");
    // The other names of one member, agreeing: a list and the OAuth string name the
    // same scopes.
    let agent = answer(
        &proxy,
        REGISTER,
        None,
        r#"{"identity_type": "anonymous", "scopes": ["offers:read"], "requested_scopes": ["offers:read"], "scope": "offers:read"}"#,
        200,
    )
    .await;
    assert_eq!(agent["scopes"], json!(["offers:read"]), "{agent}");
    let created = answer(
        &proxy,
        REVOKE,
        None,
        &json!({"credential": agent["credential"], "key": agent["credential"]}).to_string(),
        200,
    )
    .await;
    assert_eq!(created["revoked"], 1);
}

#[tokio::test]
async fn names_of_one_member_that_disagree_are_refused_naming_both() {
    let proxy = proxy().await;
    let cases = [
        (
            REGISTER,
            None,
            r#"{"type": "anonymous", "identity_type": "identity_assertion"}"#,
            "`type` is `anonymous` but `identity_type` is `identity_assertion`; both name the same member: send one, or the same value in both",
        ),
        (
            REGISTER,
            None,
            r#"{"identity_type": "identity_assertion", "type": "anonymous"}"#,
            "`identity_type` is `identity_assertion` but `type` is `anonymous`; both name the same member: send one, or the same value in both",
        ),
        (
            REGISTER,
            None,
            r#"{"type": "anonymous", "type": "identity_assertion"}"#,
            "`type` is sent twice, as `anonymous` and as `identity_assertion`; send it once",
        ),
        (
            REGISTER,
            None,
            r#"{"scopes": ["offers:read"], "scope": "offers:read offers:write"}"#,
            "`scopes` and `scope` differ; both name the same member: send one, or the same value in both",
        ),
        (
            REGISTER,
            None,
            r#"{"type": "identity_assertion", "assertion": "eyJhbGciOi.s3cret-one.x", "identity_assertion": "eyJhbGciOi.s3cret-two.x"}"#,
            "`assertion` and `identity_assertion` differ; both name the same member: send one, or the same value in both",
        ),
        (
            CLAIM,
            None,
            r#"{"registration_id": "reg_1", "identity_assertion": "eyJ.s3cret-one.x", "assertion": "eyJ.s3cret-two.x"}"#,
            "`identity_assertion` and `assertion` differ; both name the same member: send one, or the same value in both",
        ),
        (
            CLAIM,
            None,
            r#"{"claim_token": "clm_s3cret1", "claim_token": "clm_s3cret2"}"#,
            "`claim_token` is sent twice, with different values; send it once",
        ),
        (
            REVOKE,
            None,
            r#"{"credential": "ak_live_s3cret1", "key": "ak_live_s3cret2"}"#,
            "`credential` and `key` differ; both name the same member: send one, or the same value in both",
        ),
    ];
    for (path, key, body, expected) in cases {
        let message = refusal(&proxy, path, key, body).await;
        assert!(message.ends_with(expected), "{body}: {message}");
        assert!(!message.contains("s3cret"), "{body}: {message}");
        assert!(!message.contains("JSON object"), "{body}: {message}");
    }
}

#[tokio::test]
async fn every_body_error_names_its_member_and_what_was_wrong() {
    let proxy = proxy().await;
    let key = Some(WRITER_KEY);
    let cases: &[(&str, Option<&str>, &str, &str)] = &[
        (
            REGISTER,
            None,
            r#"{"scopes": 7}"#,
            "`scopes`: expected a list of strings or a space-separated string, got a number",
        ),
        (
            REGISTER,
            None,
            r#"{"requested_scopes": ["offers:read", 3]}"#,
            "`requested_scopes[1]`: expected a scope name (a string), got a number",
        ),
        (
            REGISTER,
            None,
            r#"{"client_name": ["ak_live_s3cret"]}"#,
            "`client_name`: expected a string, got a list",
        ),
        (
            REGISTER,
            None,
            r#"{"client_name": ""}"#,
            "`client_name`: expected 1 to 128 printable characters",
        ),
        (
            REGISTER,
            None,
            r#"{"type": "s3cret"}"#,
            "`type`: expected `anonymous`, `identity_assertion` or `verified_email`, got another string",
        ),
        (
            REGISTER,
            None,
            r#"{"identity_type": true}"#,
            "`identity_type`: expected `anonymous`, `identity_assertion` or `verified_email`, got a boolean",
        ),
        (
            REGISTER,
            None,
            r#"{"email": "s3cret-not-an-address"}"#,
            "`email`: expected an e-mail address (`name@example.com`, at most 254 characters)",
        ),
        (
            REGISTER,
            None,
            r#"{"username": {"first": "s3cret"}}"#,
            "`username`: expected a string, got an object",
        ),
        (
            REGISTER,
            None,
            r#"{"type": "anonymous", "identity_assertion": "eyJ.s3cret.x"}"#,
            "`assertion`: an anonymous registration carries no assertion; send `\"type\": \"identity_assertion\"` with one, or leave it out",
        ),
        (
            REGISTER,
            None,
            r#"{"type": "#,
            "the body is not valid JSON: EOF while parsing a value at line 1 column 9",
        ),
        (
            REGISTER,
            None,
            r#"["s3cret"]"#,
            "the body must be a JSON object",
        ),
        (
            CLAIM,
            None,
            r#"{"claim_token": 5}"#,
            "`claim_token`: expected a string, got a number",
        ),
        (
            CLAIM,
            None,
            r#"{"registration_id": {}, "assertion_type": "x"}"#,
            "`registration_id`: expected a string, got an object",
        ),
        (
            KEYS,
            key,
            r#"{"name": 3}"#,
            "`name`: expected a string, got a number",
        ),
        (
            KEYS,
            key,
            r#"{"name": "line\nbreak"}"#,
            "`name`: expected 1 to 128 printable characters",
        ),
        (
            KEYS,
            key,
            r#"{"scopes": {"offers:read": true}}"#,
            "`scopes`: expected a list of strings or a space-separated string, got an object",
        ),
        (
            REVOKE,
            None,
            r#"{"token": "ak_live_s3cret"}"#,
            "`credential` is missing: send the key to revoke as `credential`",
        ),
        (
            REVOKE,
            None,
            r#"{"key": null, "credential": ["ak_live_s3cret"]}"#,
            "`credential`: expected a string, got a list",
        ),
    ];
    for (path, key, body, expected) in cases {
        let message = refusal(&proxy, path, *key, body).await;
        assert_eq!(
            message,
            format!("the request body is not what this endpoint takes: {expected}"),
            "POST {path} {body}"
        );
        assert!(!message.contains("s3cret"), "{body}: {message}");
    }
}

#[tokio::test]
async fn a_password_is_ignored_and_the_answer_says_how_to_sign_in_again() {
    let proxy = proxy().await;
    let agent = answer(
        &proxy,
        REGISTER,
        None,
        r#"{"email": "ada@example.com", "username": "ada", "password": "hunter2-s3cret"}"#,
        200,
    )
    .await;
    assert_eq!(agent["ignored_members"], json!(["password"]), "{agent}");
    let message = agent["message"].as_str().unwrap();
    assert!(
        message.starts_with("this service keeps no passwords"),
        "{message}"
    );
    assert!(
        message.contains(&format!("`POST {}/oauth2/token`", proxy.url)),
        "{message}"
    );
    assert!(
        message.contains("grant_type=client_credentials"),
        "{message}"
    );
    assert!(!agent.to_string().contains("hunter2"), "{agent}");
    // The key signs in at the token endpoint, as the message says.
    let response = client()
        .post(proxy.url("/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", agent["key_id"].as_str().unwrap()),
            ("client_secret", agent["credential"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // (`tests/it/seeds/toromarket.rs` reads the contact details back from the store
    // and scans the logs and the store's files for the password.)
}

#[tokio::test]
async fn the_auth_md_says_how_bodies_are_read() {
    let proxy = proxy().await;
    let md = proxy.auth_md().await;
    for said in [
        "list them, sorted, in the answer's `ignored_members`",
        "`type` and `identity_type` name one member",
        "whose `message` names the member and what was wrong with it",
        "This service keeps no passwords",
    ] {
        assert!(md.contains(said), "{said}:\n{md}");
    }
}
