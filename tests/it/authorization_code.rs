//! The authorization-code flow with PKCE, end to end over real sockets, driven as
//! a browser and a public client would: the authorization request, the sign-in
//! (a static account), the consent page, the code at the client's loopback
//! redirect (on a port it did not register), the token exchange, the token on a
//! protected route with the person's identity, refresh rotation, and the attacks
//! the specs name (code replay, refresh reuse, a wrong verifier, a foreign
//! redirect, a consent without its CSRF token). Dynamic client registration and
//! the metadata that advertises all of it too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::LOCATION;
use serde_json::Value;

use crate::login::{Browser, PASSWORD, assert_page, csrf_of, static_demo, urlencode, yaml};
use crate::support::TestProxy;

pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const REDIRECT: &str = "http://127.0.0.1:51004/callback";

pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

fn config(grace: &str) -> String {
    format!(
        "{}oauth:\n  refresh_reuse_grace: {grace}\n  clients:\n    - client_id: my-cli\n      client_name: My CLI\n      redirect_uris: [http://127.0.0.1/callback]\n      scopes: [offers:read, offers:write]\n",
        yaml(&static_demo())
    )
}

fn authorize_url(proxy: &TestProxy, extra: &[(&str, &str)]) -> String {
    let resource = proxy.url("/mcp");
    let challenge = challenge(VERIFIER);
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", "my-cli"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", "xyz"),
        ("scope", "offers:read"),
        ("resource", resource.as_str()),
    ];
    for (name, value) in extra {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, value));
        }
    }
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    proxy.url(&format!("/oauth2/authorize?{query}"))
}

pub(crate) fn location(response: &reqwest::Response) -> String {
    assert_eq!(response.status().as_u16(), 303, "{:?}", response.url());
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

pub(crate) fn query_of(url: &str) -> Vec<(String, String)> {
    let url = reqwest::Url::parse(url).unwrap();
    url.query_pairs().into_owned().collect()
}

pub(crate) fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Signs `browser` in as ada, through the redirect the authorization endpoint
/// answers with, and returns where the sign-in sends it back.
pub(crate) async fn sign_in(proxy: &TestProxy, browser: &Browser, authorize: &str) -> String {
    let to_login = location(&browser.get(authorize).await);
    assert!(
        to_login.starts_with("/oauth2/login?return_to="),
        "{to_login}"
    );
    let page = browser.get(&proxy.url(&to_login)).await;
    assert_page(&page, 200);
    let csrf = csrf_of(&page.text().await.unwrap());
    let return_to = param(&query_of(&proxy.url(&to_login)), "return_to").unwrap();
    let fields = [
        ("provider", "demo"),
        ("username", "ada"),
        ("password", PASSWORD),
        ("csrf", csrf.as_str()),
        ("return_to", return_to.as_str()),
    ];
    let back = location(&browser.post(&proxy.url("/oauth2/login"), &fields).await);
    assert!(back.starts_with("/oauth2/authorize?"), "{back}");
    proxy.url(&back)
}

/// The consent page's hidden fields.
pub(crate) fn consent_fields(html: &str) -> (String, String) {
    let start = html
        .find("name=\"request\" value=\"")
        .expect("a request field")
        + 22;
    let request = html[start..].split('"').next().unwrap().to_owned();
    (request, csrf_of(html))
}

/// Approves the consent page at `authorize`, and returns the redirect to the client.
async fn approve(proxy: &TestProxy, browser: &Browser, authorize: &str) -> String {
    let page = browser.get(authorize).await;
    assert_page(&page, 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:51004"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("My CLI"), "{html}");
    assert!(html.contains("offers:read"), "{html}");
    assert!(
        html.contains("127.0.0.1:51004"),
        "the redirect's host is shown: {html}"
    );
    let (request, csrf) = consent_fields(&html);
    let fields = [
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "approve"),
    ];
    location(&browser.post(&proxy.url("/oauth2/consent"), &fields).await)
}

pub(crate) async fn token(proxy: &TestProxy, fields: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(proxy.url("/oauth2/token"))
        .form(fields)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn exchange(proxy: &TestProxy, code: &str, verifier: &str) -> (u16, Value) {
    token(
        proxy,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", "my-cli"),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(proxy: &TestProxy, refresh_token: &str) -> (u16, Value) {
    token(
        proxy,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", "my-cli"),
        ],
    )
    .await
}

async fn call_mcp(proxy: &TestProxy, access_token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(proxy.url("/mcp/tools"))
        .bearer_auth(access_token)
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_person_signs_in_consents_and_the_client_gets_tokens_that_work() {
    let proxy = TestProxy::start(&config("10s"), None).await;
    let browser = Browser::new();
    let authorize = authorize_url(&proxy, &[]);
    let back = sign_in(&proxy, &browser, &authorize).await;
    let redirect = approve(&proxy, &browser, &back).await;
    assert!(
        redirect.starts_with(&format!("{REDIRECT}?code=ac_")),
        "{redirect}"
    );
    let pairs = query_of(&redirect);
    assert_eq!(param(&pairs, "state").as_deref(), Some("xyz"));
    assert_eq!(param(&pairs, "iss").as_deref(), Some(proxy.url.as_str()));
    let code = param(&pairs, "code").unwrap();

    let (status, tokens) = exchange(&proxy, &code, VERIFIER).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "offers:read");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, echo) = call_mcp(&proxy, &access).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["headers"]["x-authmd-principal"], "user:demo:ada");

    // The same code again: refused, and what it gave is revoked.
    let (status, replay) = exchange(&proxy, &code, VERIFIER).await;
    assert_eq!(status, 400);
    assert_eq!(replay["error"], "invalid_grant");
    assert_eq!(replay["code"], "CODE_REPLAYED");
    assert_eq!(call_mcp(&proxy, &access).await.0, 401);
    let (status, refused) = refresh(&proxy, &refresh_token).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"], "invalid_grant");
}

#[tokio::test]
async fn refresh_tokens_rotate_a_retry_gets_the_same_successor_and_reuse_revokes_the_family() {
    let proxy = TestProxy::start(&config("0s"), None).await;
    let browser = Browser::new();
    let authorize = authorize_url(&proxy, &[]);
    let back = sign_in(&proxy, &browser, &authorize).await;
    let code = param(&query_of(&approve(&proxy, &browser, &back).await), "code").unwrap();
    let (_, first) = exchange(&proxy, &code, VERIFIER).await;
    let first_refresh = first["refresh_token"].as_str().unwrap().to_owned();

    let (status, second) = refresh(&proxy, &first_refresh).await;
    assert_eq!(status, 200, "{second}");
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh, "rotated on use");
    let second_access = second["access_token"].as_str().unwrap().to_owned();
    assert_eq!(call_mcp(&proxy, &second_access).await.0, 200);

    // With no grace, the first token used again is a leak: the family is revoked,
    // its newest refresh token and access token with it.
    let (status, reused) = refresh(&proxy, &first_refresh).await;
    assert_eq!(status, 400, "{reused}");
    assert_eq!(reused["code"], "REFRESH_TOKEN_REUSED");
    assert_eq!(refresh(&proxy, &second_refresh).await.0, 400);
    assert_eq!(call_mcp(&proxy, &second_access).await.0, 401);
}

#[tokio::test]
async fn within_the_grace_a_refresh_retry_gets_the_same_successor() {
    let proxy = TestProxy::start(&config("1m"), None).await;
    let browser = Browser::new();
    let back = sign_in(&proxy, &browser, &authorize_url(&proxy, &[])).await;
    let code = param(&query_of(&approve(&proxy, &browser, &back).await), "code").unwrap();
    let (_, first) = exchange(&proxy, &code, VERIFIER).await;
    let first_refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let (_, a) = refresh(&proxy, &first_refresh).await;
    let (status, b) = refresh(&proxy, &first_refresh).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(a["refresh_token"], b["refresh_token"]);
    assert_eq!(
        refresh(&proxy, b["refresh_token"].as_str().unwrap())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn a_remembered_consent_and_a_loopback_port_change_go_straight_back_with_a_code() {
    let proxy = TestProxy::start(&config("10s"), None).await;
    let browser = Browser::new();
    let back = sign_in(&proxy, &browser, &authorize_url(&proxy, &[])).await;
    approve(&proxy, &browser, &back).await;
    let again = authorize_url(
        &proxy,
        &[("redirect_uri", "http://127.0.0.1:40000/callback")],
    );
    let redirect = location(&browser.get(&again).await);
    assert!(
        redirect.starts_with("http://127.0.0.1:40000/callback?code="),
        "{redirect}"
    );
}

#[tokio::test]
async fn the_attacks_the_specs_name_are_answered_as_they_say() {
    let proxy = TestProxy::start(&config("10s"), None).await;
    let browser = Browser::new();
    // A redirect the client did not register: a page here, never a redirect.
    let foreign = authorize_url(&proxy, &[("redirect_uri", "https://evil.example/callback")]);
    let page = browser.get(&foreign).await;
    assert_page(&page, 400);
    // PKCE missing or plain: back to the client with invalid_request.
    for extra in [
        [("code_challenge_method", "plain")],
        [("code_challenge", "")],
    ] {
        let to = location(&browser.get(&authorize_url(&proxy, &extra)).await);
        let pairs = query_of(&to);
        assert_eq!(
            param(&pairs, "error").as_deref(),
            Some("invalid_request"),
            "{to}"
        );
        assert_eq!(param(&pairs, "state").as_deref(), Some("xyz"));
        assert!(param(&pairs, "iss").is_some());
    }
    let to = location(
        &browser
            .get(&authorize_url(
                &proxy,
                &[("resource", "https://evil.example/mcp")],
            ))
            .await,
    );
    assert_eq!(
        param(&query_of(&to), "error").as_deref(),
        Some("invalid_target")
    );

    let back = sign_in(&proxy, &browser, &authorize_url(&proxy, &[])).await;
    // The consent POST without its CSRF token.
    let html = browser.get(&back).await.text().await.unwrap();
    let (request, _) = consent_fields(&html);
    let forged = [("request", request.as_str()), ("decision", "approve")];
    assert_page(
        &browser.post(&proxy.url("/oauth2/consent"), &forged).await,
        403,
    );
    // A wrong verifier, then a wrong redirect: invalid_grant, and the code is spent.
    let code = param(&query_of(&approve(&proxy, &browser, &back).await), "code").unwrap();
    let (status, wrong) = exchange(&proxy, &code, &"x".repeat(43)).await;
    assert_eq!(status, 400);
    assert_eq!(wrong["code"], "PKCE_VERIFIER_MISMATCH");
    assert_eq!(
        exchange(&proxy, &code, VERIFIER).await.1["code"],
        "CODE_REPLAYED"
    );
    // Denying sends access_denied back to the client.
    let back = authorize_url(&proxy, &[("scope", "offers:write")]);
    let html = browser.get(&back).await.text().await.unwrap();
    let (request, csrf) = consent_fields(&html);
    let deny = [
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "deny"),
    ];
    let to = location(&browser.post(&proxy.url("/oauth2/consent"), &deny).await);
    assert_eq!(
        param(&query_of(&to), "error").as_deref(),
        Some("access_denied"),
        "{to}"
    );
}

#[tokio::test]
async fn clients_register_dynamically_and_the_metadata_says_how() {
    let proxy = TestProxy::start(&config("10s"), None).await;
    let metadata: Value = reqwest::get(proxy.url("/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        metadata["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        metadata["authorization_response_iss_parameter_supported"],
        true
    );
    let grants = metadata["grant_types_supported"].as_array().unwrap();
    assert!(
        grants.contains(&"authorization_code".into()) && grants.contains(&"refresh_token".into())
    );
    assert!(
        metadata["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&"none".into())
    );
    let endpoint = metadata["registration_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(endpoint, proxy.url("/oauth2/register"));

    let register = |body: Value| {
        let endpoint = endpoint.clone();
        async move {
            let response = reqwest::Client::new()
                .post(&endpoint)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let mcp_client = serde_json::json!({
        "client_name": "An MCP client",
        "redirect_uris": ["http://127.0.0.1:33418/oauth/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
        "vendor_extension": {"ignored": true}
    });
    let (status, first) = register(mcp_client.clone()).await;
    assert_eq!(status, 201, "{first}");
    let client_id = first["client_id"].as_str().unwrap();
    assert!(client_id.starts_with("dcr_"), "{first}");
    assert!(first.get("client_secret").is_none());
    assert!(first.get("vendor_extension").is_none());
    let (_, again) = register(mcp_client).await;
    assert_eq!(
        again["client_id"], first["client_id"],
        "the same registration within a minute"
    );

    let (status, refused) =
        register(serde_json::json!({"redirect_uris": ["http://evil.example/cb"]})).await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"], "invalid_redirect_uri");
    let (status, refused) = register(serde_json::json!({
        "redirect_uris": ["https://app.example/cb"], "grant_types": ["client_credentials"]
    }))
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"], "invalid_client_metadata");

    // The registered client goes through the flow like a declared one.
    let browser = Browser::new();
    let challenge = challenge(VERIFIER);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", "http://127.0.0.1:33418/oauth/callback"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let authorize = proxy.url(&format!("/oauth2/authorize?{query}"));
    let back = sign_in(&proxy, &browser, &authorize).await;
    let page = browser.get(&back).await;
    assert_page(&page, 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("An MCP client"), "{html}");
    assert!(
        html.contains("your own computer"),
        "a loopback client is flagged: {html}"
    );
    let _ = urlencode("");
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family() {
    let proxy = TestProxy::start(&config("10s"), None).await;
    let browser = Browser::new();
    let back = sign_in(&proxy, &browser, &authorize_url(&proxy, &[])).await;
    let code = param(&query_of(&approve(&proxy, &browser, &back).await), "code").unwrap();
    let (_, first) = exchange(&proxy, &code, VERIFIER).await;
    let (_, second) = refresh(&proxy, first["refresh_token"].as_str().unwrap()).await;
    let access = second["access_token"].as_str().unwrap().to_owned();
    let current = second["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(call_mcp(&proxy, &access).await.0, 200);
    let revoked = reqwest::Client::new()
        .post(proxy.url("/oauth2/revoke"))
        .form(&[("token", current.as_str()), ("client_id", "my-cli")])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200);
    assert_eq!(refresh(&proxy, &current).await.0, 400);
    assert_eq!(
        call_mcp(&proxy, &access).await.0,
        401,
        "the family's access token too"
    );
}

#[tokio::test]
async fn auth_md_tells_clients_acting_for_people_how_to_get_a_token() {
    let proxy = TestProxy::start(&config("10s"), None).await;
    let md = reqwest::get(proxy.url("/auth.md"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let section = md
        .split("## People and MCP clients")
        .nth(1)
        .unwrap_or_else(|| panic!("no section for people:\n{md}"));
    for expected in [
        "/oauth2/register",
        "/oauth2/authorize",
        "code_challenge_method=S256",
        "grant_type=authorization_code",
        "grant_type=refresh_token",
    ] {
        assert!(section.contains(expected), "{expected}");
    }
}
