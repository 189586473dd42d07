//! Claims by a signed-in person (`registration.claim`): the claim URL opens a page
//! that signs the person in (the local OpenID Connect provider, the local GitHub, a
//! static account), shows the agent and what the claim changes, and confirms with
//! a CSRF-protected form. The same key then has the claimed scopes on its next
//! request, and its forwarded requests carry `X-Authmd-Operator` (a client-sent
//! one is dropped). Two people racing: one claim, one 409. `registration.claim.allowed`
//! refuses people outside it. A sign-in begun on one replica is finished on
//! another sharing the PostgreSQL store and the cookie key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use reqwest::header::LOCATION;
use serde_json::{Value, json};

use crate::login::{Browser, PASSWORD, assert_page, csrf_of, octocat, oidc, static_demo, yaml};
use crate::support::github_api::{self, GithubApi};
use crate::support::oidc_provider::OidcProvider;
use crate::support::{TestProxy, client};

/// Registers an anonymous agent: its key and claim URL.
async fn register(proxy: &TestProxy) -> (String, String) {
    let response = client()
        .post(proxy.url("/agent/auth/register"))
        .json(&json!({"type": "anonymous", "client_name": "<b>helper</b> bot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let claim_url = answer["claim_url"].as_str().expect("a claim is offered");
    (
        answer["credential"].as_str().unwrap().to_owned(),
        claim_url.to_owned(),
    )
}

/// `DELETE /api/v1/offers/1` (needs `offers:delete`, the claimed tier's) with
/// `key` and a spoofed operator header: the status and the echoed request.
async fn delete_offer(proxy: &TestProxy, key: &str) -> (u16, Value) {
    let response = client()
        .delete(proxy.url("/api/v1/offers/1"))
        .bearer_auth(key)
        .header("x-authmd-operator", "evil:mallory")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Follows redirects from `url` (across the proxy and the providers) to the first
/// answer that is not one.
pub(crate) async fn follow(browser: &Browser, url: &str) -> reqwest::Response {
    let mut response = browser.get(url).await;
    for _ in 0..10 {
        if !response.status().is_redirection() {
            return response;
        }
        let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
        let next = response.url().join(&location).unwrap().to_string();
        response = browser.get(&next).await;
    }
    panic!("too many redirects from {url}");
}

/// Confirms the claim on `page` (the claim page's HTML) from `browser`.
async fn confirm(
    proxy: &TestProxy,
    browser: &Browser,
    page: &str,
    csrf: Option<&str>,
) -> reqwest::Response {
    let token = page
        .split("name=\"claim_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a claim form")
        .to_owned();
    let mut fields = vec![("claim_token", token.as_str())];
    let csrf_value;
    if let Some(csrf) = csrf {
        csrf_value = csrf.to_owned();
        fields.push(("csrf", csrf_value.as_str()));
    }
    browser.post(&proxy.url("/agent/auth/claim"), &fields).await
}

/// Signs `user` in with the static provider from the claim page: the claim page.
async fn sign_in_static(
    proxy: &TestProxy,
    browser: &Browser,
    claim_url: &str,
    user: &str,
    password: &str,
) -> String {
    let first = browser.get(claim_url).await;
    assert_eq!(
        first.status(),
        303,
        "an anonymous visitor is sent to sign in"
    );
    let login = first.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        login.starts_with("/oauth2/login?return_to=%2Fagent%2Fauth%2Fclaim%3Ftoken%3D"),
        "{login}"
    );
    let chooser = browser.get(&proxy.url(&login)).await;
    assert_page(&chooser, 200);
    let csrf = csrf_of(&chooser.text().await.unwrap());
    let return_to = claim_url.strip_prefix(&proxy.url("")).unwrap().to_owned();
    let signed_in = browser
        .post(
            &proxy.url("/oauth2/login"),
            &[
                ("provider", "demo"),
                ("username", user),
                ("password", password),
                ("csrf", &csrf),
                ("return_to", &return_to),
            ],
        )
        .await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()[LOCATION], return_to.as_str());
    let page = browser.get(claim_url).await;
    assert_page(&page, 200);
    page.text().await.unwrap()
}

#[tokio::test]
async fn an_openid_connect_sign_in_claims_and_the_same_key_rises_with_its_operator_named() {
    let idp = OidcProvider::start().await;
    let proxy = TestProxy::start(&yaml(&oidc(&idp)), None).await;
    let (key, claim_url) = register(&proxy).await;
    let (before, _) = delete_offer(&proxy, &key).await;
    assert_eq!(before, 403, "the pre-claim tier cannot delete");

    let browser = Browser::new();
    let page = follow(&browser, &claim_url).await;
    assert_page(&page, 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("jane@example.com"), "{html}");
    assert!(
        html.contains("&lt;b&gt;helper&lt;/b&gt; bot"),
        "the agent's name, escaped: {html}"
    );
    assert!(
        html.contains("After the claim") && html.contains("verified"),
        "{html}"
    );
    assert!(!html.contains("<script"), "no JavaScript");

    // Without the CSRF token (a cross-site form), nothing is claimed.
    let forged = confirm(&proxy, &browser, &html, None).await;
    assert_page(&forged, 403);
    let forged = confirm(&proxy, &browser, &html, Some("not-the-token")).await;
    assert_page(&forged, 403);
    assert_eq!(delete_offer(&proxy, &key).await.0, 403);

    let done = confirm(&proxy, &browser, &html, Some(&csrf_of(&html))).await;
    assert_page(&done, 200);
    assert!(done.text().await.unwrap().contains("Claimed"));

    let (after, echoed) = delete_offer(&proxy, &key).await;
    assert_eq!(after, 200, "the same key, raised in place: {echoed}");
    let headers = &echoed["headers"];
    assert_eq!(
        headers["x-authmd-operator"], "corp:jane@example.com",
        "{headers}"
    );
    assert_eq!(headers["x-authmd-tier"], "verified", "{headers}");

    // The link works once.
    let again = browser.get(&claim_url).await;
    assert_page(&again, 409);
}

#[tokio::test]
async fn a_github_sign_in_claims_within_the_allowed_organization_only() {
    let mut outsider = octocat();
    outsider.orgs = vec!["github".into()];
    let gh = GithubApi::start(outsider).await;
    let providers = format!(
        "    - id: gh
      kind: github
      client_id: {}
      client_secret: \"{}\"
      web_url: {}
      api_url: {}
",
        github_api::CLIENT_ID,
        github_api::CLIENT_SECRET,
        gh.web_url,
        gh.api_url
    );
    let yaml = yaml(&providers).replacen(
        "registration:\n",
        "registration:\n  claim: {accept: [sign_in], allowed: [{org: acme}]}\n",
        1,
    );
    let proxy = TestProxy::start(&yaml, None).await;
    let (key, claim_url) = register(&proxy).await;

    let browser = Browser::new();
    let refused = follow(&browser, &claim_url).await;
    assert_page(&refused, 403);
    assert!(refused.text().await.unwrap().contains("may not claim"));

    gh.sign_in_as(octocat());
    let other = Browser::new();
    let page = follow(&other, &claim_url).await;
    assert_page(&page, 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("octocat"), "{html}");
    let done = confirm(&proxy, &other, &html, Some(&csrf_of(&html))).await;
    assert_page(&done, 200);
    let (after, echoed) = delete_offer(&proxy, &key).await;
    assert_eq!(after, 200, "{echoed}");
    assert_eq!(echoed["headers"]["x-authmd-operator"], "gh:octocat");
}

#[tokio::test]
async fn two_people_racing_get_one_claim_and_one_conflict() {
    let proxy = TestProxy::start(&yaml(&static_demo()), None).await;
    let (key, claim_url) = register(&proxy).await;
    let ada = Browser::new();
    let ada_page = sign_in_static(&proxy, &ada, &claim_url, "ada", PASSWORD).await;
    let bob = Browser::new();
    let bob_page = sign_in_static(&proxy, &bob, &claim_url, "bob", "bob's own password").await;
    let (ada_csrf, bob_csrf) = (csrf_of(&ada_page), csrf_of(&bob_page));
    let (a, b) = tokio::join!(
        confirm(&proxy, &ada, &ada_page, Some(&ada_csrf)),
        confirm(&proxy, &bob, &bob_page, Some(&bob_csrf)),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let (status, echoed) = delete_offer(&proxy, &key).await;
    assert_eq!(status, 200);
    let operator = echoed["headers"]["x-authmd-operator"].as_str().unwrap();
    let winner = if a.status() == 200 {
        "demo:ada"
    } else {
        "demo:bob"
    };
    assert_eq!(operator, winner);

    // A JSON claim of the claimed registration is a 409 in the envelope.
    let token = ada_page
        .split("name=\"claim_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    let late = client()
        .post(proxy.url("/agent/auth/claim"))
        .json(&json!({"claim_token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 409);
    let body: Value = late.json().await.unwrap();
    assert_eq!(body["code"], "PREVIOUSLY_CLAIMED", "{body}");
}

#[tokio::test]
async fn a_person_outside_the_allowed_email_domains_cannot_claim_and_the_agent_cannot_claim_itself()
{
    let yaml = yaml(&static_demo()).replacen(
        "registration:\n",
        "registration:\n  claim: {allowed: [{email_domain: example.com}]}\n",
        1,
    );
    let proxy = TestProxy::start(&yaml, None).await;
    let (key, claim_url) = register(&proxy).await;
    let token = claim_url.split("token=").nth(1).unwrap().to_owned();

    // The agent holds the token, but a token alone is no sign-in.
    let itself = client()
        .post(proxy.url("/agent/auth/claim"))
        .json(&json!({"claim_token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(itself.status(), 400);
    let body: Value = itself.json().await.unwrap();
    assert_eq!(body["code"], "IDENTITY_ASSERTION_REQUIRED", "{body}");

    // bob has no email at example.com.
    let bob = Browser::new();
    let first = bob.get(&claim_url).await;
    let login = first.headers()[LOCATION].to_str().unwrap().to_owned();
    let chooser = bob.get(&proxy.url(&login)).await;
    let csrf = csrf_of(&chooser.text().await.unwrap());
    let return_to = claim_url.strip_prefix(&proxy.url("")).unwrap().to_owned();
    bob.post(
        &proxy.url("/oauth2/login"),
        &[
            ("provider", "demo"),
            ("username", "bob"),
            ("password", "bob's own password"),
            ("csrf", &csrf),
            ("return_to", &return_to),
        ],
    )
    .await;
    let refused = bob.get(&claim_url).await;
    assert_page(&refused, 403);
    assert_eq!(delete_offer(&proxy, &key).await.0, 403);

    let ada = Browser::new();
    let page = sign_in_static(&proxy, &ada, &claim_url, "ada", PASSWORD).await;
    let done = confirm(&proxy, &ada, &page, Some(&csrf_of(&page))).await;
    assert_page(&done, 200);
    assert_eq!(delete_offer(&proxy, &key).await.0, 200);
}
