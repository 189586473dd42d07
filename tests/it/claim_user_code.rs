//! `registration.claim.user_code`: the claim page's confirmation shows a short
//! code, and the agent finishes the claim with it (`POST claim` with `user_code`,
//! case- and dash-insensitive). A wrong code is counted and answered with the tries
//! left; five lock the confirmation until the person confirms again (a new code,
//! a new count); an expired code is refused. Without `user_code` the confirmation
//! claims at once, as before.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use authmd_proxy::store::Store;
use reqwest::header::LOCATION;
use serde_json::{Value, json};

use crate::login::{Browser, PASSWORD, assert_page, csrf_of, static_demo, yaml};
use crate::support::{TestProxy, client};

/// The static-account config, with `user_code` on.
fn user_code_yaml() -> String {
    yaml(&static_demo()).replacen(
        "registration:\n",
        "registration:\n  claim: {user_code: true}\n",
        1,
    )
}

/// An anonymous agent: its key, claim URL and registration id.
async fn register(proxy: &TestProxy) -> (String, String, String) {
    let response = client()
        .post(proxy.url("/agent/auth/register"))
        .json(&json!({"type": "anonymous", "client_name": "coder"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    (
        answer["credential"].as_str().unwrap().to_owned(),
        answer["claim_url"].as_str().expect("a claim").to_owned(),
        answer["registration_id"].as_str().unwrap().to_owned(),
    )
}

/// `DELETE /api/v1/offers/1` (the claimed tier's scope): status and echo.
async fn delete_offer(proxy: &TestProxy, key: &str) -> (u16, Value) {
    let response = client()
        .delete(proxy.url("/api/v1/offers/1"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Signs ada in from the claim page: the claim page's HTML.
async fn sign_in(proxy: &TestProxy, browser: &Browser, claim_url: &str) -> String {
    let first = browser.get(claim_url).await;
    assert_eq!(first.status(), 303);
    let login = first.headers()[LOCATION].to_str().unwrap().to_owned();
    let chooser = browser.get(&proxy.url(&login)).await;
    let csrf = csrf_of(&chooser.text().await.unwrap());
    let return_to = claim_url.strip_prefix(&proxy.url("")).unwrap().to_owned();
    let signed_in = browser
        .post(
            &proxy.url("/oauth2/login"),
            &[
                ("provider", "demo"),
                ("username", "ada"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("return_to", &return_to),
            ],
        )
        .await;
    assert_eq!(signed_in.status(), 303);
    let page = browser.get(claim_url).await;
    assert_page(&page, 200);
    page.text().await.unwrap()
}

/// Confirms on the claim page: the answer's status and HTML.
async fn confirm(proxy: &TestProxy, browser: &Browser, page: &str) -> (u16, String) {
    let token = page
        .split("name=\"claim_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a claim form")
        .to_owned();
    let csrf = csrf_of(page);
    let response = browser
        .post(
            &proxy.url("/agent/auth/claim"),
            &[("claim_token", token.as_str()), ("csrf", csrf.as_str())],
        )
        .await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The `XXXX-XXXX` code a confirmation page shows.
fn code_of(html: &str) -> String {
    let code = html
        .split("<code>")
        .filter_map(|rest| rest.split("</code>").next())
        .find(|c| c.len() == 9 && c.as_bytes()[4] == b'-')
        .unwrap_or_else(|| panic!("a code on the page: {html}"));
    assert!(
        code.chars()
            .filter(|c| *c != '-')
            .all(|c| "BCDFGHJKLMNPQRSTVWXZ".contains(c)),
        "{code}"
    );
    code.to_owned()
}

/// The agent's `POST claim` with `body`: status and JSON answer.
async fn finish(proxy: &TestProxy, body: Value) -> (u16, Value) {
    let response = client()
        .post(proxy.url("/agent/auth/claim"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A code of the alphabet that differs from `code`.
fn wrong(code: &str) -> String {
    let first = if code.starts_with('B') { "C" } else { "B" };
    format!("{first}{}", &code[1..])
}

#[tokio::test]
async fn the_confirmation_shows_a_code_and_the_agent_claims_with_it() {
    let proxy = TestProxy::start(&user_code_yaml(), None).await;
    let auth_md = proxy.auth_md().await;
    assert!(
        auth_md.contains("\"user_code\": \"XXXX-XXXX\"") && auth_md.contains("USER_CODE_LOCKED"),
        "auth.md explains the step: {auth_md}"
    );
    let (key, claim_url, registration_id) = register(&proxy).await;
    let token = claim_url.split("token=").nth(1).unwrap().to_owned();
    let browser = Browser::new();
    let page = sign_in(&proxy, &browser, &claim_url).await;

    let (status, shown) = confirm(&proxy, &browser, &page).await;
    assert_eq!(status, 200, "{shown}");
    let code = code_of(&shown);
    assert!(shown.contains("give this code to the agent"), "{shown}");
    assert_eq!(
        delete_offer(&proxy, &key).await.0,
        403,
        "nothing is claimed before the agent sends the code"
    );

    // Before any code, an agent asking without one is told a person must sign in.
    let (status, body) = finish(&proxy, json!({"claim_token": token})).await;
    assert_eq!(status, 400, "{body}");

    // A wrong code is counted and says how many tries are left.
    let (status, body) = finish(
        &proxy,
        json!({"registration_id": registration_id, "user_code": wrong(&code)}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "USER_CODE_INVALID", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("4 tries left"),
        "{body}"
    );
    assert!(!body.to_string().contains(&code), "the code is not echoed");

    // The right one, in lower case without its dash, by the claim token.
    let sent = code.replace('-', "").to_lowercase();
    let (status, body) = finish(&proxy, json!({"claim_token": token, "user_code": sent})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "claimed", "{body}");
    assert_eq!(body["tier"], "verified", "{body}");
    assert_eq!(body["operator"], "demo:ada", "{body}");

    let (after, echoed) = delete_offer(&proxy, &key).await;
    assert_eq!(after, 200, "the same key, raised in place: {echoed}");
    assert_eq!(echoed["headers"]["x-authmd-operator"], "demo:ada");
    assert_eq!(echoed["headers"]["x-authmd-tier"], "verified");

    // A code works once.
    let (status, body) = finish(
        &proxy,
        json!({"registration_id": registration_id, "user_code": code}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "PREVIOUSLY_CLAIMED", "{body}");
}

#[tokio::test]
async fn five_wrong_codes_lock_the_confirmation_until_the_person_confirms_again() {
    let proxy = TestProxy::start(&user_code_yaml(), None).await;
    let (key, claim_url, registration_id) = register(&proxy).await;
    let browser = Browser::new();
    let page = sign_in(&proxy, &browser, &claim_url).await;

    let (_, shown) = confirm(&proxy, &browser, &page).await;
    let code = code_of(&shown);
    for left in (1..=4).rev() {
        let (status, body) = finish(
            &proxy,
            json!({"registration_id": registration_id, "user_code": wrong(&code)}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{left} tr")),
            "{body}"
        );
    }
    let (status, body) = finish(
        &proxy,
        json!({"registration_id": registration_id, "user_code": "garbage"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "USER_CODE_LOCKED", "{body}");
    // Locked: even the right code no longer works.
    let (status, body) = finish(
        &proxy,
        json!({"registration_id": registration_id, "user_code": code}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "USER_CODE_LOCKED", "{body}");
    assert_eq!(delete_offer(&proxy, &key).await.0, 403);

    // Confirming again shows a new code, with a new count.
    let page = browser.get(&claim_url).await;
    assert_page(&page, 200);
    let (status, shown) = confirm(&proxy, &browser, &page.text().await.unwrap()).await;
    assert_eq!(status, 200);
    let again = code_of(&shown);
    let (status, body) = finish(
        &proxy,
        json!({"registration_id": registration_id, "user_code": again}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(delete_offer(&proxy, &key).await.0, 200);
}

#[tokio::test]
async fn an_expired_code_is_refused_and_not_counted() {
    let proxy = TestProxy::start(&user_code_yaml(), None).await;
    let (_, claim_url, registration_id) = register(&proxy).await;
    let browser = Browser::new();
    let page = sign_in(&proxy, &browser, &claim_url).await;
    let (_, shown) = confirm(&proxy, &browser, &page).await;
    let code = code_of(&shown);

    // The stored confirmation's expiry, moved into the past through a second
    // handle on the proxy's store.
    let config = proxy.running().gateway.config();
    let store = Store::open(&config.lifecycle.store).await.unwrap().unwrap();
    let mut pending = store.user_code(&registration_id).await.unwrap().unwrap();
    assert_eq!(pending.operator.handle, "ada");
    assert!(
        !format!("{pending:?}").contains(&code.replace('-', "")),
        "only a hash is stored"
    );
    let now = authmd_proxy::clock::unix_now();
    pending.expires_at = now - 1;
    store.put_user_code(&pending, now).await.unwrap();

    let (status, body) = finish(
        &proxy,
        json!({"registration_id": registration_id, "user_code": code}),
    )
    .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["code"], "USER_CODE_EXPIRED", "{body}");
    assert_eq!(
        store
            .user_code(&registration_id)
            .await
            .unwrap()
            .unwrap()
            .failures,
        0
    );
}

#[tokio::test]
async fn without_user_code_the_confirmation_claims_at_once_and_codes_are_refused() {
    let proxy = TestProxy::start(&yaml(&static_demo()), None).await;
    let auth_md = proxy.auth_md().await;
    assert!(!auth_md.contains("\"user_code\"") && !auth_md.contains("USER_CODE_"));
    let (key, claim_url, registration_id) = register(&proxy).await;
    let (status, body) = finish(
        &proxy,
        json!({"registration_id": registration_id, "user_code": "BCDF-GHJK"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "INVALID_REQUEST", "{body}");
    let browser = Browser::new();
    let page = sign_in(&proxy, &browser, &claim_url).await;
    let (status, done) = confirm(&proxy, &browser, &page).await;
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Claimed"), "{done}");
    assert_eq!(delete_offer(&proxy, &key).await.0, 200);
}
