//! The operator page (`/agent/auth/operator`): a person signed in with a static
//! account claims two agents by signing in, sees both on the page with their keys
//! (ids, names, times, last use, never a secret), and revokes one key with the
//! page's form: the key is refused on its next request, at once. A form without
//! the session's CSRF token revokes nothing; another person sees none of these
//! agents and cannot revoke their keys (403). A browser without a session is sent
//! to sign in and comes back to exactly this page.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use reqwest::header::LOCATION;
use serde_json::{Value, json};

use crate::login::{Browser, PASSWORD, assert_page, csrf_of, static_demo, yaml};
use crate::support::{TestProxy, client};

const PAGE: &str = "/agent/auth/operator";

/// Registers an anonymous agent named `name`: its key id, key and claim URL.
async fn register(proxy: &TestProxy, name: &str) -> (String, String, String) {
    let response = client()
        .post(proxy.url("/agent/auth/register"))
        .json(&json!({"type": "anonymous", "client_name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    (
        answer["key_id"].as_str().unwrap().to_owned(),
        answer["credential"].as_str().unwrap().to_owned(),
        answer["claim_url"].as_str().expect("a claim").to_owned(),
    )
}

/// `GET /api/v1/offers` with `key`: the status.
async fn read_offers(proxy: &TestProxy, key: &str) -> u16 {
    client()
        .get(proxy.url("/api/v1/offers"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Signs `user` in from the operator page: it sends the browser to sign in,
/// which comes back to it.
async fn sign_in(proxy: &TestProxy, browser: &Browser, user: &str, password: &str) {
    let first = browser.get(&proxy.url(PAGE)).await;
    assert_eq!(
        first.status(),
        303,
        "an anonymous visitor is sent to sign in"
    );
    let login = first.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(login, "/oauth2/login?return_to=%2Fagent%2Fauth%2Foperator");
    let chooser = browser.get(&proxy.url(&login)).await;
    assert_page(&chooser, 200);
    let csrf = csrf_of(&chooser.text().await.unwrap());
    let signed_in = browser
        .post(
            &proxy.url("/oauth2/login"),
            &[
                ("provider", "demo"),
                ("username", user),
                ("password", password),
                ("csrf", &csrf),
                ("return_to", PAGE),
            ],
        )
        .await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()[LOCATION], PAGE);
}

/// Claims the agent of `claim_url` as the person signed in in `browser`.
async fn claim(proxy: &TestProxy, browser: &Browser, claim_url: &str) {
    let page = browser.get(claim_url).await;
    assert_page(&page, 200);
    let html = page.text().await.unwrap();
    let token = claim_url.split("token=").nth(1).unwrap();
    let done = browser
        .post(
            &proxy.url("/agent/auth/claim"),
            &[("claim_token", token), ("csrf", &csrf_of(&html))],
        )
        .await;
    assert_page(&done, 200);
}

/// The operator page as `browser` sees it.
async fn page(proxy: &TestProxy, browser: &Browser) -> String {
    let page = browser.get(&proxy.url(PAGE)).await;
    assert_page(&page, 200);
    page.text().await.unwrap()
}

/// The part of the page about the key `id`.
fn key_section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<div class=\"key\" id=\"{id}\">"))
        .unwrap_or_else(|| panic!("{id} is not listed: {html}"));
    let rest = &html[start..];
    &rest[..rest.find("</div>").unwrap()]
}

/// Posts a revocation of `key_id` from `browser` with `csrf`.
async fn revoke(
    proxy: &TestProxy,
    browser: &Browser,
    key_id: &str,
    csrf: Option<&str>,
) -> reqwest::Response {
    let mut fields = vec![("key_id", key_id)];
    if let Some(csrf) = csrf {
        fields.push(("csrf", csrf));
    }
    browser.post(&proxy.url(PAGE), &fields).await
}

#[tokio::test]
async fn a_person_sees_the_agents_they_claimed_and_revokes_a_key() {
    let proxy = TestProxy::start(&yaml(&static_demo()), None).await;
    let (first_id, first_key, first_claim) = register(&proxy, "<b>first</b> bot").await;
    let (second_id, second_key, second_claim) = register(&proxy, "second bot").await;

    let ada = Browser::new();
    sign_in(&proxy, &ada, "ada", PASSWORD).await;
    let empty = page(&proxy, &ada).await;
    assert!(empty.contains("You have not claimed any agent"), "{empty}");
    claim(&proxy, &ada, &first_claim).await;
    claim(&proxy, &ada, &second_claim).await;

    // The first agent makes a request and a second key of its own.
    assert_eq!(read_offers(&proxy, &first_key).await, 200);
    let created = client()
        .post(proxy.url("/api/v1/auth/keys"))
        .bearer_auth(&first_key)
        .json(&json!({"name": "ci runner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let extra_id = created["key_id"].as_str().unwrap().to_owned();
    let extra_key = created["credential"].as_str().unwrap().to_owned();

    let html = page(&proxy, &ada).await;
    assert!(!html.contains("<script"), "no JavaScript");
    assert!(
        html.contains("&lt;b&gt;first&lt;/b&gt; bot"),
        "escaped: {html}"
    );
    assert!(html.contains("second bot"), "{html}");
    assert!(html.contains("ada"), "{html}");
    assert!(html.contains("verified"), "the claimed tier: {html}");
    for id in [&first_id, &second_id, &extra_id] {
        let section = key_section(&html, id);
        assert!(section.contains("Revoke"), "{section}");
        assert!(section.contains("Created"), "{section}");
    }
    assert!(key_section(&html, &extra_id).contains("ci runner"));
    assert!(
        !key_section(&html, &first_id).contains("never"),
        "the first key was used: {html}"
    );
    assert!(key_section(&html, &second_id).contains("never"), "{html}");
    for secret in [&first_key, &second_key, &extra_key] {
        assert!(!html.contains(secret.as_str()), "no secret on the page");
    }
    let csrf = csrf_of(&html);

    // Without the session's CSRF token, nothing is revoked.
    let forged = revoke(&proxy, &ada, &second_id, None).await;
    assert_page(&forged, 403);
    let forged = revoke(&proxy, &ada, &second_id, Some("not-the-token")).await;
    assert_page(&forged, 403);
    // Without a session either.
    let anonymous = Browser::new();
    let unsigned = revoke(&proxy, &anonymous, &second_id, Some(&csrf)).await;
    assert_page(&unsigned, 401);
    assert_eq!(read_offers(&proxy, &second_key).await, 200);

    // Revoked with the page's form: 303 back to the page, which says so.
    let done = revoke(&proxy, &ada, &second_id, Some(&csrf)).await;
    assert_eq!(done.status(), 303);
    let back = done.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(back, format!("{PAGE}?revoked={second_id}"));
    assert_eq!(
        read_offers(&proxy, &second_key).await,
        401,
        "refused at once"
    );
    assert_eq!(
        read_offers(&proxy, &first_key).await,
        200,
        "the others work"
    );
    assert_eq!(read_offers(&proxy, &extra_key).await, 200);
    let after = ada.get(&proxy.url(&back)).await;
    assert_page(&after, 200);
    let after = after.text().await.unwrap();
    assert!(after.contains("Revoked: "), "{after}");
    let section = key_section(&after, &second_id);
    assert!(
        section.contains("Revoked") && !section.contains("<button"),
        "{section}"
    );
    // Posting it again changes nothing.
    let again = revoke(&proxy, &ada, &second_id, Some(&csrf)).await;
    assert_eq!(again.status(), 303);

    // Another person sees none of them, only their own, and cannot revoke them.
    let (bob_id, _, bob_claim) = register(&proxy, "bob's bot").await;
    let bob = Browser::new();
    sign_in(&proxy, &bob, "bob", "bob's own password").await;
    claim(&proxy, &bob, &bob_claim).await;
    let theirs = page(&proxy, &bob).await;
    assert!(key_section(&theirs, &bob_id).contains("Revoke"), "{theirs}");
    assert!(!page(&proxy, &ada).await.contains(&bob_id));
    for id in [&first_id, &second_id, &extra_id] {
        assert!(!theirs.contains(id.as_str()), "{theirs}");
    }
    let bob_csrf = csrf_of(&theirs);
    for id in [&first_id, &extra_id, "key_nonexistent"] {
        let refused = revoke(&proxy, &bob, id, Some(&bob_csrf)).await;
        assert_page(&refused, 403);
    }
    // Nor with ada's token in bob's session.
    let refused = revoke(&proxy, &bob, &first_id, Some(&csrf)).await;
    assert_page(&refused, 403);
    assert_eq!(read_offers(&proxy, &first_key).await, 200);
    assert_eq!(read_offers(&proxy, &extra_key).await, 200);
    // A notice names only a key of one's own.
    let other = bob
        .get(&proxy.url(&format!("{PAGE}?revoked={second_id}")))
        .await;
    assert!(!other.text().await.unwrap().contains(&second_id));
}

#[tokio::test]
async fn the_sign_in_returns_to_exactly_the_operator_page() {
    let proxy = TestProxy::start(&yaml(&static_demo()), None).await;
    let browser = Browser::new();
    for bad in [
        "/agent/auth/operator?x=1",
        "/agent/auth/operator/",
        "//evil.example/agent/auth/operator",
    ] {
        let url = format!(
            "{}?{}",
            proxy.url("/oauth2/login"),
            form_urlencoded::Serializer::new(String::new())
                .append_pair("return_to", bad)
                .finish()
        );
        let refused = browser.get(&url).await;
        assert_page(&refused, 400);
    }
    let post = client().put(proxy.url(PAGE)).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn without_sign_in_there_is_no_operator_page() {
    let proxy = TestProxy::start(&crate::support::example_without("login"), None).await;
    let response = client().get(proxy.url(PAGE)).send().await.unwrap();
    assert_eq!(response.status(), 404);
}
