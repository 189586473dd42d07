//! Clients named by the URL of their Client ID Metadata Document, over real
//! sockets: the proxy fetches the document from an HTTPS host (a test CA the
//! config trusts, on 127.0.0.1, which the config allows), shows the client on the
//! consent page by its address, and issues tokens to it; the document is cached as
//! its headers allow. Refused, each before any code is issued: a private address
//! (by name and by literal), a redirect (not followed), an oversized document, a
//! document that names another URL, one with a secret, and an error status.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use serde_json::Value;

use crate::authorization_code::{
    VERIFIER, challenge, consent_fields, location, param, query_of, sign_in, token,
};
use crate::login::{Browser, assert_page, static_demo, yaml};
use crate::support::TestProxy;
use crate::support::document_host::{Answer, DocumentHost};

const REDIRECT: &str = "http://127.0.0.1:51004/callback";
const PATH: &str = "/oauth/client.json";

fn config(host: &DocumentHost, allow_loopback: bool) -> String {
    let allow = if allow_loopback { "127.0.0.1/32" } else { "" };
    format!(
        "{}oauth:\n  client_id_metadata_documents:\n    ca_file: {}\n    allow_networks: [{allow}]\n",
        yaml(&static_demo()),
        host.ca_file.display()
    )
}

fn document(client_id: &str) -> String {
    serde_json::json!({
        "client_id": client_id,
        "client_name": "Example Agent",
        "client_uri": "https://agent.example.com",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "offers:read some:other-servers-scope",
    })
    .to_string()
}

fn authorize_url(proxy: &TestProxy, client_id: &str) -> String {
    let resource = proxy.url("/mcp");
    let challenge = challenge(VERIFIER);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "s1"),
            ("scope", "offers:read"),
            ("resource", resource.as_str()),
        ])
        .finish();
    proxy.url(&format!("/oauth2/authorize?{query}"))
}

/// The authorization endpoint's page for `client_id`, which must be a refusal
/// (400, never a redirect); returns its text.
async fn refused_page(proxy: &TestProxy, client_id: &str) -> String {
    let page = Browser::new().get(&authorize_url(proxy, client_id)).await;
    assert_page(&page, 400);
    page.text().await.unwrap()
}

#[tokio::test]
async fn a_client_named_by_its_document_url_signs_a_person_in_and_gets_tokens() {
    let host = DocumentHost::start().await;
    let client_id = host.url(PATH);
    host.serve(PATH, Answer::json(document(&client_id)));
    let proxy = TestProxy::start(&config(&host, true), None).await;

    let metadata: Value = reqwest::get(proxy.url("/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["client_id_metadata_document_supported"], true);

    let browser = Browser::new();
    let back = sign_in(&proxy, &browser, &authorize_url(&proxy, &client_id)).await;
    let page = browser.get(&back).await;
    assert_page(&page, 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Example Agent"), "{html}");
    let shown = format!(
        "identified by its address on <code>127.0.0.1:{}</code>",
        host.addr.port()
    );
    assert!(html.contains(&shown), "{html}");
    let (request, csrf) = consent_fields(&html);
    let fields = [
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "approve"),
    ];
    let redirect = location(&browser.post(&proxy.url("/oauth2/consent"), &fields).await);
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    let code = param(&query_of(&redirect), "code").unwrap();

    let (status, tokens) = token(
        &proxy,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "offers:read", "{tokens}");
    let (status, refreshed) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    // Authorization, exchange and refresh: one fetch, then the cache (no headers:
    // `max_cache`).
    assert_eq!(host.hits(PATH), 1);

    // A client that is not the document's cannot use its codes or tokens.
    let (status, error) = token(
        &proxy,
        &[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                refreshed["refresh_token"].as_str().unwrap(),
            ),
            ("client_id", "my-cli"),
        ],
    )
    .await;
    assert_eq!(status, 401, "{error}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_document_that_forbids_caching_is_fetched_each_time() {
    let host = DocumentHost::start().await;
    let client_id = host.url(PATH);
    let mut answer = Answer::json(document(&client_id));
    answer
        .headers
        .push(("cache-control", "no-store".to_owned()));
    host.serve(PATH, answer);
    let proxy = TestProxy::start(&config(&host, true), None).await;
    for expected in 1..=2 {
        let page = Browser::new().get(&authorize_url(&proxy, &client_id)).await;
        assert_eq!(page.status().as_u16(), 303);
        assert_eq!(host.hits(PATH), expected);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn private_addresses_are_never_fetched() {
    let host = DocumentHost::start().await;
    let proxy = TestProxy::start(&config(&host, false), None).await;
    // By name: `localhost` resolves to loopback only.
    let by_name = format!("https://localhost:{}{PATH}", host.addr.port());
    host.serve(PATH, Answer::json(document(&by_name)));
    let html = refused_page(&proxy, &by_name).await;
    assert!(html.contains("no public address"), "{html}");
    // By literal address: the cloud metadata service, and loopback.
    for literal in [
        "https://169.254.169.254/latest/meta-data/client.json".to_owned(),
        host.url(PATH),
    ] {
        let html = refused_page(&proxy, &literal).await;
        assert!(html.contains("no public address"), "{literal}: {html}");
    }
    assert_eq!(host.hits(PATH), 0, "no request reached the host");
    proxy.shutdown().await;
}

#[tokio::test]
async fn redirects_oversized_and_foreign_documents_are_refused() {
    let host = DocumentHost::start().await;
    let proxy = TestProxy::start(&config(&host, true), None).await;

    // A redirect is not followed, even to a good document.
    let good = host.url("/good.json");
    host.serve("/good.json", Answer::json(document(&good)));
    host.serve(
        "/moved.json",
        Answer {
            status: 302,
            headers: vec![("location", good.clone())],
            body: String::new(),
        },
    );
    let html = refused_page(&proxy, &host.url("/moved.json")).await;
    assert!(html.contains("HTTP 302"), "{html}");
    assert_eq!(host.hits("/good.json"), 0, "the redirect was not followed");

    // Over 5 KB.
    let big = host.url("/big.json");
    let mut padded: Value = serde_json::from_str(&document(&big)).unwrap();
    padded["padding"] = Value::String("x".repeat(6 * 1024));
    host.serve("/big.json", Answer::json(padded.to_string()));
    let html = refused_page(&proxy, &big).await;
    assert!(html.contains("larger than 5120 bytes"), "{html}");

    // A document that names another URL, or carries a secret.
    let foreign = host.url("/foreign.json");
    host.serve("/foreign.json", Answer::json(document(&good)));
    let html = refused_page(&proxy, &foreign).await;
    assert!(html.contains("not the URL it was fetched from"), "{html}");
    let secret = host.url("/secret.json");
    let mut with_secret: Value = serde_json::from_str(&document(&secret)).unwrap();
    with_secret["client_secret"] = Value::String("s3cr3t".into());
    host.serve("/secret.json", Answer::json(with_secret.to_string()));
    let html = refused_page(&proxy, &secret).await;
    assert!(html.contains("client_secret"), "{html}");
    assert!(!html.contains("s3cr3t"), "{html}");

    // An error status, and a URL against the rules (a fragment).
    let html = refused_page(&proxy, &host.url("/missing.json")).await;
    assert!(html.contains("HTTP 404"), "{html}");
    let html = refused_page(&proxy, &format!("{good}#frag")).await;
    assert!(html.contains("fragment"), "{html}");

    // None of them is cached: the good document fixed in place is accepted.
    host.serve("/foreign.json", Answer::json(document(&foreign)));
    let page = Browser::new().get(&authorize_url(&proxy, &foreign)).await;
    assert_eq!(page.status().as_u16(), 303);
    proxy.shutdown().await;
}
