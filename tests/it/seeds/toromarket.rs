//! Toromarket, reproduced: `tests/seeds/toromarket.yaml` in front of a plain
//! upstream, and every step Toromarket's auth.md describes taken against it: JWT
//! Bearer tokens from self-registration, logging in again for a new token, explicit
//! invalidation, the operator's claim raising the trust tier, API keys instead of
//! tokens, the legacy register behind a shared secret, and the session headers.
//! Each assertion names the line of Toromarket's auth.md it checks.

use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::store::Store;
use serde_json::{Value, json};

use super::common::{Seed, decode_jwt, get, post_form, post_json, start};
use crate::support::github_api::{self, GithubApi};
use crate::support::{Binary, TestProxy, client};

const CONFIG: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/seeds/toromarket.yaml"
));
const SEED: Seed = Seed::new("Toromarket");
/// The legacy register's shared secret (its hash is in the config).
const SHARED_SECRET: &str = "tm_live_PmHz3njCst7iyRqqTcCyZvwgJ2QUGT3mX7BgLGP";

/// Self-registers, as line 8 describes; returns the answer.
async fn self_register(proxy: &TestProxy) -> Value {
    let body = json!({"client_name": "momentum-bot"}).to_string();
    let response = post_json(proxy, "/api/v1/agents/self-register", &body).await;
    let at = SEED.at(8, "POST to /api/v1/agents/self-register ...");
    assert_eq!(response.status(), 200, "{at}");
    response.json().await.unwrap()
}

async fn login(proxy: &TestProxy, key_id: &str, key: &str) -> reqwest::Response {
    let credentials = [
        ("grant_type", "client_credentials"),
        ("client_id", key_id),
        ("client_secret", key),
    ];
    post_form(proxy, "/api/v1/auth/login", &credentials).await
}

#[tokio::test]
async fn self_registration_gives_a_jwt_at_once_that_every_authenticated_endpoint_accepts() {
    let (proxy, upstream) = start(CONFIG).await;
    let registered = self_register(&proxy).await;
    let at = SEED.at(
        8,
        "You get a token back immediately, plus a claimUrl for your operator.",
    );
    let token = registered["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "{at}: a JWT");
    assert_eq!(registered["token_type"], "Bearer", "{at}");
    let key_id = registered["key_id"].as_str().unwrap();
    let (_, claims) = decode_jwt(token);
    assert_eq!(claims["sub"], format!("key:{key_id}"), "{at}: {claims}");
    assert_eq!(claims["tier"], "unclaimed", "{at}: {claims}");
    assert!(
        registered["claim_url"]
            .as_str()
            .unwrap()
            .starts_with(&proxy.url("/api/v1/agents/claim?token=")),
        "{at}: {registered}"
    );

    // Line 4: the JWT in the Authorization header, on every authenticated request.
    let at = SEED.at(
        4,
        "Pass your JWT in the Authorization header on every authenticated request",
    );
    let response = get(&proxy, "/api/v1/portfolio", Some(token)).await;
    assert_eq!(response.status(), 200, "{at}");
    let seen = upstream.last().await;
    assert_eq!(
        seen.header("x-authmd-principal"),
        Some(format!("key:{key_id}").as_str()),
        "{at}"
    );
    assert_eq!(seen.header("x-authmd-tier"), Some("unclaimed"), "{at}");
    assert!(
        seen.header("authorization").is_none(),
        "{at}: the token stays with the proxy"
    );

    // Line 14: "Your agent can trade immediately".
    let response = client()
        .post(proxy.url("/api/v1/orders"))
        .bearer_auth(token)
        .json(&json!({"market": "BTC-USD", "side": "buy", "size": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "{}",
        SEED.at(14, "Your agent can trade immediately")
    );

    // Line 2: without a token, an authenticated endpoint says where to start.
    let response = get(&proxy, "/api/v1/portfolio", None).await;
    let at = SEED.at(
        2,
        "Every authenticated endpoint accepts a JWT Bearer token.",
    );
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{at}: {challenge}");
    assert!(
        challenge.contains("resource_metadata="),
        "{at}: {challenge}"
    );
    SEED.envelope(response, 401, "UNAUTHORIZED", &at).await;
    // Public market data needs nothing.
    assert_eq!(
        get(&proxy, "/api/v1/markets", None).await.status(),
        200,
        "{at}"
    );
}

#[tokio::test]
async fn logging_in_again_gives_a_new_token_and_the_old_one_lasts_until_invalidated() {
    let (proxy, _upstream) = start(CONFIG).await;
    let registered = self_register(&proxy).await;
    let old = registered["access_token"].as_str().unwrap().to_owned();
    let key_id = registered["key_id"].as_str().unwrap();
    let key = registered["credential"].as_str().unwrap();

    let response = login(&proxy, key_id, key).await;
    let at = SEED.at(
        10,
        "If you already have credentials ..., use the standard login endpoint",
    );
    assert_eq!(response.status(), 200, "{at}");
    let body: Value = response.json().await.unwrap();
    let new = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new, old, "{at}");
    assert_eq!(
        body["expires_in"],
        86_400,
        "{}",
        SEED.at(5, "Tokens are long-lived but rotating-friendly.")
    );

    let at = SEED.at(
        5,
        "log in again to get a new one — the old token stays valid until you explicitly invalidate it",
    );
    assert_eq!(
        get(&proxy, "/api/v1/portfolio", Some(&old)).await.status(),
        200,
        "{at}"
    );
    assert_eq!(
        get(&proxy, "/api/v1/portfolio", Some(&new)).await.status(),
        200,
        "{at}"
    );

    // Explicit invalidation (RFC 7009 at the logout path).
    let response = post_form(&proxy, "/api/v1/auth/logout", &[("token", &old)]).await;
    assert_eq!(response.status(), 200, "{at}");
    SEED.envelope(
        get(&proxy, "/api/v1/portfolio", Some(&old)).await,
        401,
        "TOKEN_REVOKED",
        &SEED.at(5, "until you explicitly invalidate it"),
    )
    .await;
    assert_eq!(
        get(&proxy, "/api/v1/portfolio", Some(&new)).await.status(),
        200,
        "{at}"
    );

    // Wrong credentials log nobody in.
    let response = login(&proxy, key_id, SHARED_SECRET).await;
    assert_eq!(
        response.status(),
        401,
        "{}",
        SEED.at(10, "use the standard login endpoint")
    );
}

#[tokio::test]
async fn the_operator_claims_from_the_claim_url_and_the_tier_and_limits_rise() {
    let (proxy, upstream) = start(CONFIG).await;
    let registered = self_register(&proxy).await;
    let key_id = registered["key_id"].as_str().unwrap();
    let key = registered["credential"].as_str().unwrap();
    let claim_url = registered["claim_url"].as_str().unwrap();
    let token = registered["access_token"].as_str().unwrap();
    let before = get(&proxy, "/api/v1/portfolio", Some(token)).await;
    assert_eq!(
        before.headers()["ratelimit-limit"],
        "60",
        "{}",
        SEED.at(18, "rate limits + trust tier reflect the claim")
    );

    // The operator opens the URL in a browser.
    let page = client().get(claim_url).send().await.unwrap();
    let at = SEED.at(16, "The operator opens the URL in a browser");
    assert_eq!(page.status(), 200, "{at}");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{at}"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("momentum-bot"),
        "{at}: the page names the agent"
    );
    assert!(html.contains("<form method=\"post\""), "{at}: {html}");

    // ... and confirms: the form posts the claim token.
    let claim_token = claim_url.split("token=").nth(1).unwrap();
    let confirm = [("claim_token", claim_token)];
    let response = post_form(&proxy, "/api/v1/agents/claim", &confirm).await;
    let at = SEED.at(
        14,
        "claiming is what links it to a real human operator and moves it to a higher trust tier",
    );
    assert_eq!(response.status(), 200, "{at}");
    let page = response.text().await.unwrap();
    assert!(page.contains("Claimed"), "{at}: {page}");
    let at = SEED.at(17, "attaches the operator ... to the agent's user record");
    let keys: Value = get(&proxy, "/api/v1/api-keys", Some(key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["id"], key_id, "{at}: the same agent's key");
    assert_eq!(keys["keys"][0]["tier"], "claimed", "{at}: {keys}");

    // The same key, and a token from logging in again, now carry the higher tier.
    let at = SEED.at(18, "rate limits + trust tier reflect the claim");
    let response = get(&proxy, "/api/v1/portfolio", Some(key)).await;
    assert_eq!(response.headers()["ratelimit-limit"], "600", "{at}");
    assert_eq!(
        upstream.last().await.header("x-authmd-tier"),
        Some("claimed"),
        "{at}"
    );
    let fresh: Value = login(&proxy, key_id, key).await.json().await.unwrap();
    let fresh = fresh["access_token"].as_str().unwrap();
    assert_eq!(decode_jwt(fresh).1["tier"], "claimed", "{at}");
    let response = get(&proxy, "/api/v1/portfolio", Some(fresh)).await;
    assert_eq!(response.headers()["ratelimit-limit"], "600", "{at}");

    // A claim link works once.
    let again = post_form(&proxy, "/api/v1/agents/claim", &confirm).await;
    assert_eq!(
        again.status(),
        409,
        "{}",
        SEED.at(15, "Your agent sends the claim URL to its operator")
    );
}

#[tokio::test]
async fn api_keys_work_instead_of_tokens_and_are_managed_at_api_keys() {
    let (proxy, upstream) = start(CONFIG).await;
    let registered = self_register(&proxy).await;
    let key = registered["credential"].as_str().unwrap().to_owned();
    let token = registered["access_token"].as_str().unwrap().to_owned();
    let at = SEED.at(
        20,
        "Long-lived API keys ... can be used instead of JWT Bearer tokens for certain clients (including the MCP server)",
    );
    assert!(key.starts_with("tm_live_"), "{at}");
    let response = client()
        .post(proxy.url("/mcp"))
        .bearer_auth(&key)
        .header("Content-Type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{at}");
    assert_eq!(upstream.last().await.path, "/mcp", "{at}");

    // Manage keys via /api/v1/api-keys.
    let at = SEED.at(20, "Manage keys via /api/v1/api-keys");
    let response = client()
        .post(proxy.url("/api/v1/api-keys"))
        .bearer_auth(&key)
        .json(&json!({"name": "mcp-client", "scopes": ["markets:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{at}");
    let created: Value = response.json().await.unwrap();
    let second = created["key"].as_str().unwrap().to_owned();
    let second_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&proxy, "/api/v1/portfolio", Some(&second))
            .await
            .status(),
        200,
        "{at}"
    );
    let list: Value = get(&proxy, "/api/v1/api-keys", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["keys"].as_array().unwrap().len(), 2, "{at}: {list}");
    assert!(
        !list.to_string().contains(&second),
        "{at}: no secret in the list"
    );

    // Revoking a key ends it at once (the second key), and the tokens minted from it
    // (the agent's own key, and its first token).
    let own_id = registered["key_id"].as_str().unwrap();
    for (id, credential, code, text) in [
        (&*second_id, &*second, "INVALID_API_KEY", "revoke_api_key"),
        (
            own_id,
            &*token,
            "TOKEN_REVOKED",
            "revoke_api_key: the key's tokens end with it",
        ),
    ] {
        let response = client()
            .delete(proxy.url(&format!("/api/v1/api-keys/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{at}");
        let response = get(&proxy, "/api/v1/portfolio", Some(credential)).await;
        SEED.envelope(response, 401, code, &SEED.at(20, text)).await;
    }
}

#[tokio::test]
async fn the_legacy_register_needs_the_shared_secret_and_nothing_else_accepts_it() {
    let (proxy, upstream) = start(CONFIG).await;
    let at = SEED.at(
        12,
        "It requires a shared secret header and is gated on operator pre-approval",
    );
    let body = json!({"name": "old-client"});
    // The legacy register, with the shared secret when given.
    let register = |secret: Option<&str>| {
        let mut request = client().post(proxy.url("/api/v1/agents/register"));
        if let Some(secret) = secret {
            request = request.header("X-Shared-Secret", secret);
        }
        request.json(&body).send()
    };
    let needed = SEED.at(12, "It requires a shared secret header");
    let response = register(None).await.unwrap();
    SEED.envelope(response, 401, "UNAUTHORIZED", &needed).await;
    let forged = SHARED_SECRET.replace("PmHz", "PmHy");
    let response = register(Some(&forged)).await.unwrap();
    SEED.envelope(response, 401, "INVALID_API_KEY", &needed)
        .await;
    assert_eq!(upstream.count(), 0, "{at}");

    let response = register(Some(SHARED_SECRET)).await.unwrap();
    assert_eq!(response.status(), 200, "{at}");
    let seen = upstream.last().await;
    assert_eq!(
        seen.header("x-authmd-principal"),
        Some("key:legacy-register"),
        "{at}"
    );
    assert!(
        seen.header("x-shared-secret").is_none(),
        "{at}: the secret stays with the proxy"
    );
    assert_eq!(seen.text(), body.to_string(), "{at}");

    // The shared secret opens the legacy flow only.
    let response = client()
        .post(proxy.url("/api/v1/orders"))
        .header("X-Shared-Secret", SHARED_SECRET)
        .send()
        .await
        .unwrap();
    SEED.envelope(
        response,
        403,
        "FORBIDDEN",
        &SEED.at(12, "gated on operator pre-approval"),
    )
    .await;
}

#[tokio::test]
async fn session_headers_reach_the_api_and_are_not_needed_for_authentication() {
    let (proxy, upstream) = start(CONFIG).await;
    let token = self_register(&proxy).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = client()
        .get(proxy.url("/api/v1/portfolio"))
        .bearer_auth(&token)
        .header("User-Agent", "momentum-bot/2.1")
        .header("x-toromarket-client", "momentum-bot")
        .send()
        .await
        .unwrap();
    let at = SEED.at(
        22,
        "Every request should include a User-Agent ... and may include an x-toromarket-client header",
    );
    assert_eq!(response.status(), 200, "{at}");
    let seen = upstream.last().await;
    assert_eq!(seen.header("user-agent"), Some("momentum-bot/2.1"), "{at}");
    assert_eq!(
        seen.header("x-toromarket-client"),
        Some("momentum-bot"),
        "{at}"
    );
    let bare = get(&proxy, "/api/v1/portfolio", Some(&token)).await;
    assert_eq!(
        bare.status(),
        200,
        "{}",
        SEED.at(22, "Neither is required for authentication")
    );
}

/// Toromarket's own self-registration body (line 8), with `password` as given.
fn account_body(password: &str) -> String {
    json!({"email": "ops@momentum.example", "username": "momentum-bot", "password": password})
        .to_string()
}

#[tokio::test]
async fn self_registration_with_an_email_username_and_password_gets_a_key_and_a_token() {
    let (proxy, upstream) = start(CONFIG).await;
    let at = SEED.at(
        8,
        "POST to /api/v1/agents/self-register with an email, username, and password. You get a token back immediately, plus a claimUrl for your operator.",
    );
    let body = account_body("correct-horse-battery");
    let response = post_json(&proxy, "/api/v1/agents/self-register", &body).await;
    assert_eq!(response.status(), 200, "{at}");
    let registered: Value = response.json().await.unwrap();
    let key = registered["credential"].as_str().unwrap();
    assert!(key.starts_with("tm_live_"), "{at}: {registered}");
    let token = registered["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "{at}: a JWT in {registered}");
    assert!(
        registered["claim_url"]
            .as_str()
            .unwrap()
            .starts_with(&proxy.url("/api/v1/agents/claim?token=")),
        "{at}: {registered}"
    );
    // The password is ignored, and the answer says so and how to sign in again.
    assert_eq!(
        registered["ignored_members"],
        json!(["password"]),
        "{at}: {registered}"
    );
    let message = registered["message"].as_str().unwrap();
    assert!(
        message.starts_with("this service keeps no passwords"),
        "{at}: {message}"
    );
    let login_at = SEED.at(10, "use the standard login endpoint");
    assert!(
        message.contains(&format!("`POST {}`", proxy.url("/api/v1/auth/login"))),
        "{login_at}: {message}"
    );
    assert!(
        !registered.to_string().contains("correct-horse"),
        "{at}: {registered}"
    );
    // The token works at once; logging in again with the key, as the message says.
    let response = get(&proxy, "/api/v1/portfolio", Some(token)).await;
    assert_eq!(response.status(), 200, "{at}");
    assert!(
        !upstream.last().await.text().contains("correct-horse"),
        "{at}"
    );
    let key_id = registered["key_id"].as_str().unwrap();
    let response = login(&proxy, key_id, key).await;
    assert_eq!(response.status(), 200, "{login_at}");
}

#[tokio::test]
async fn the_password_is_neither_logged_nor_stored_and_the_contact_details_are_kept() {
    // The seed file as written, run by the binary in front of the echo API, logging
    // at debug.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/seeds/toromarket.yaml");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authmd-proxy"));
    command
        .args(["run", "--config", path, "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "debug");
    let mut proxy = Binary::launch(command).await;
    let password = format!("pw{}", "Zx9".repeat(10));
    let at = SEED.at(
        8,
        "POST to /api/v1/agents/self-register with an email, username, and password",
    );
    let response = client()
        .post(format!("{}/api/v1/agents/self-register", proxy.url))
        .header("content-type", "application/json")
        .body(account_body(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{at}");
    let registered: Value = response.json().await.unwrap();
    let token = registered["access_token"].as_str().unwrap();
    let response = client()
        .get(format!("{}/api/v1/portfolio", proxy.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{at}: the echo API answers");
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/api/v1/portfolio", "{at}: {echo}");

    // A path the proxy refuses, which its debug line names: the scan sees the log.
    let canary = format!("canary{}", "Q7".repeat(12));
    let response = client()
        .get(format!("{}/{canary}", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    proxy.signal("TERM");
    assert!(proxy.wait().await.success());
    let lines = proxy.remaining_log_lines();
    assert!(
        lines.iter().any(|line| line.contains(&canary)),
        "the scan sees what is logged: {lines:#?}"
    );
    for line in &lines {
        assert!(
            !line.contains(&password),
            "{at}: the password is in a log line: {line}"
        );
        assert!(
            !line.contains("ops@momentum.example"),
            "{at}: the contact is in a log line: {line}"
        );
    }

    // At rest: the store keeps the contact details, never the password.
    let mut stored = Vec::new();
    let mut dirs = vec![data.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap().path();
            if entry.is_dir() {
                dirs.push(entry);
            } else {
                stored.extend(std::fs::read(&entry).unwrap());
            }
        }
    }
    let text = String::from_utf8_lossy(&stored);
    assert!(
        text.contains("ops@momentum.example"),
        "the scan sees the store's files"
    );
    assert!(!text.contains(&password), "{at}: the password is stored");
    let yaml = std::fs::read_to_string(path).unwrap();
    let overrides = Overrides {
        data_dir: Some(data.clone()),
        ..Overrides::default()
    };
    let config = Config::from_yaml_str(&yaml, path, &overrides, &|_| None).unwrap();
    let store = Store::open(&config.lifecycle.store).await.unwrap().unwrap();
    let registration = store
        .registration(registered["registration_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let kept = SEED.at(
        15,
        "Your agent sends the claim URL to its operator (email, Slack, printing to console, whatever).",
    );
    assert_eq!(
        registration.contact_email.as_deref(),
        Some("ops@momentum.example"),
        "{kept}"
    );
    assert_eq!(
        registration.contact_username.as_deref(),
        Some("momentum-bot"),
        "{kept}"
    );
}

/// What Toromarket's auth.md names, each with its line.
const DOCUMENT: &[(u32, &str)] = &[
    (2, "Bearer"),
    (4, "Authorization"),
    (5, "/api/v1/auth/logout"),
    (8, "/api/v1/agents/self-register"),
    (8, "access_token"),
    (8, "claim_url"),
    (10, "/api/v1/auth/login"),
    (14, "`claimed`"),
    (20, "/api/v1/api-keys"),
    (20, "/mcp"),
];

#[tokio::test]
async fn the_generated_auth_md_describes_what_the_original_does() {
    let (proxy, _upstream) = start(CONFIG).await;
    let text = get(&proxy, "/auth.md", None).await.text().await.unwrap();
    // The original names no scope; the reproduction's own are not compared.
    SEED.same_document(&text, DOCUMENT, []);
}

/// Line 16: "The operator opens the URL in a browser and signs in with GitHub via
/// OAuth." With a GitHub provider under `login:` (here the local GitHub API, which
/// follows GitHub's OAuth and user API) and an identity required to claim, the
/// claim URL sends the operator to GitHub; back from it they see the agent and
/// confirm, and the same key rises to the claimed tier with its operator named
/// upstream (line 17: "attaches the operator ... to the agent's user record").
#[tokio::test]
async fn the_operator_signs_in_with_github_at_the_claim_url_and_the_tier_rises() {
    let gh = GithubApi::start(crate::login::octocat()).await;
    let from = "  require_identity_to_claim: false\n";
    assert!(CONFIG.contains(from));
    let config = format!(
        "{}login:\n  cookie_key: {}\n  providers:\n    - id: github\n      kind: github\n      client_id: {}\n      client_secret: \"{}\"\n      web_url: {}\n      api_url: {}\n",
        CONFIG.replace(from, "  require_identity_to_claim: true\n"),
        crate::login::COOKIE_KEY,
        github_api::CLIENT_ID,
        github_api::CLIENT_SECRET,
        gh.web_url,
        gh.api_url,
    );
    let (proxy, upstream) = start(&config).await;
    let registered = self_register(&proxy).await;
    let key = registered["credential"].as_str().unwrap();
    let claim_url = registered["claim_url"].as_str().unwrap();

    let at = SEED.at(16, "signs in with GitHub via OAuth");
    let browser = crate::login::Browser::new();
    let page = crate::claims_signed_in::follow(&browser, claim_url).await;
    assert_eq!(page.status(), 200, "{at}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("octocat"),
        "{at}: who is signed in is shown: {html}"
    );
    let token = html
        .split("name=\"claim_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a claim form")
        .to_owned();
    let csrf = crate::login::csrf_of(&html);
    let confirmed = browser
        .post(
            &proxy.url("/api/v1/agents/claim"),
            &[("claim_token", token.as_str()), ("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(confirmed.status(), 200, "{at}");

    let at = SEED.at(17, "attaches the operator ... to the agent's user record");
    let response = get(&proxy, "/api/v1/portfolio", Some(key)).await;
    assert_eq!(response.status(), 200, "{at}");
    let seen = upstream.last().await;
    assert_eq!(seen.header("x-authmd-tier"), Some("claimed"), "{at}");
    assert_eq!(
        seen.header("x-authmd-operator"),
        Some("github:octocat"),
        "{at}"
    );

    // A token from logging in again with the claimed key names the operator too.
    let key_id = registered["key_id"].as_str().unwrap();
    let fresh: Value = login(&proxy, key_id, key).await.json().await.unwrap();
    let token = fresh["access_token"].as_str().unwrap();
    assert_eq!(decode_jwt(token).1["operator"], "github:octocat", "{at}");
    let response = get(&proxy, "/api/v1/portfolio", Some(token)).await;
    assert_eq!(response.status(), 200, "{at}");
    assert_eq!(
        upstream.last().await.header("x-authmd-operator"),
        Some("github:octocat"),
        "{at}: with the token"
    );
}
