//! The audience of the proxy's own tokens, over real sockets (RFC 8707): a token
//! names one resource of this API in `aud`, and opens only the routes of that
//! resource. The example config has `/mcp` as a resource of its own besides the
//! API as a whole; each route belongs to the longest resource prefix it starts
//! with, else to the primary resource.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use authmd_proxy::body::Body;
use hyper::Response;

use crate::support;
use crate::support::{TestProxy, WRITER_KEY, assert_envelope, client};

const FORM: &str = "application/x-www-form-urlencoded";

/// A second public origin of the proxy, reached with its `Host`.
const OTHER: &str = "https://api.example.org";

/// The example config in front of a real upstream that answers 200 to anything.
async fn proxy() -> TestProxy {
    let upstream = support::upstream(|_| async { Response::new(Body::full("ok")) }).await;
    TestProxy::example(Some(upstream)).await
}

/// The same, with [`OTHER`] as a second public origin.
async fn two_origin_proxy() -> TestProxy {
    let upstream = support::upstream(|_| async { Response::new(Body::full("ok")) }).await;
    // Static accounts are for loopback origins only: the example's demo goes.
    let text = support::example_without("login");
    let from = "  # hosts: [https://api.example.org]";
    assert!(
        text.contains(from),
        "the example config no longer has {from:?}"
    );
    let text = text
        .replace(from, &format!("  hosts: [{OTHER}]"))
        .replace("url: builtin:echo", "url: {upstream}");
    TestProxy::start(&text, Some(upstream)).await
}

/// A token for the example writer key, for `resource` when given.
async fn token(proxy: &TestProxy, resource: Option<&str>) -> String {
    let mut form = "grant_type=client_credentials".to_owned();
    if let Some(resource) = resource {
        form.push_str("&resource=");
        form.extend(form_urlencoded::byte_serialize(resource.as_bytes()));
    }
    let response = client()
        .post(proxy.url("/oauth2/token"))
        .header("content-type", FORM)
        .basic_auth("example-writer", Some(WRITER_KEY))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "token response");
    let body = support::json(response).await;
    body["access_token"].as_str().unwrap().to_owned()
}

async fn get(proxy: &TestProxy, path: &str, credential: &str) -> reqwest::Response {
    client()
        .get(proxy.url(path))
        .bearer_auth(credential)
        .send()
        .await
        .unwrap()
}

/// The status of `GET path` addressed to the origin `host`.
async fn status_at(proxy: &TestProxy, host: &str, path: &str, credential: &str) -> u16 {
    let response = client()
        .get(proxy.url(path))
        .header("host", host)
        .bearer_auth(credential)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 401 {
        let body = support::json(response).await;
        assert_eq!(body["code"], "TOKEN_WRONG_RESOURCE", "{body}");
    }
    status
}

/// Asserts the request reached the upstream.
async fn assert_opens(proxy: &TestProxy, path: &str, credential: &str) {
    let response = get(proxy, path, credential).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{path} should be forwarded: {body}");
    assert_eq!(body, "ok", "{path}");
}

/// Asserts the token is refused on `path` as one for another resource, with the
/// challenge of the resource `path` belongs to.
async fn assert_wrong_resource(proxy: &TestProxy, path: &str, token: &str, metadata: &str) {
    let response = get(proxy, path, token).await;
    let www = support::www(&response);
    assert!(www.starts_with("Bearer "), "{www}");
    assert!(www.contains("error=\"invalid_token\""), "{www}");
    assert!(
        www.contains(&format!("resource_metadata=\"{}\"", proxy.url(metadata))),
        "{www}"
    );
    let body = assert_envelope(response, 401, "invalid_token", "TOKEN_WRONG_RESOURCE").await;
    assert!(
        !body.to_string().contains(token),
        "the refusal echoes the token: {body}"
    );
}

#[tokio::test]
async fn a_token_opens_only_the_routes_of_its_resource() {
    let proxy = proxy().await;
    let mcp = proxy.url("/mcp");

    // A token for the MCP server is no key to the rest of the API.
    let for_mcp = token(&proxy, Some(&mcp)).await;
    assert_opens(&proxy, "/mcp", &for_mcp).await;
    assert_opens(&proxy, "/mcp/tools", &for_mcp).await;
    for path in ["/api/v1/offers/1", "/api/v1/offers"] {
        assert_wrong_resource(
            &proxy,
            path,
            &for_mcp,
            "/.well-known/oauth-protected-resource",
        )
        .await;
    }

    // A token for the API as a whole does not open the MCP server.
    let for_api = token(&proxy, Some(&proxy.url)).await;
    assert_opens(&proxy, "/api/v1/offers/1", &for_api).await;
    assert_wrong_resource(
        &proxy,
        "/mcp",
        &for_api,
        "/.well-known/oauth-protected-resource/mcp",
    )
    .await;

    // Without `resource`, a token is for the primary resource.
    let unnamed = token(&proxy, None).await;
    assert_opens(&proxy, "/api/v1/offers/1", &unnamed).await;
    assert_wrong_resource(
        &proxy,
        "/mcp/tools",
        &unnamed,
        "/.well-known/oauth-protected-resource/mcp",
    )
    .await;

    // An API key is not bound to a resource.
    assert_opens(&proxy, "/mcp", WRITER_KEY).await;
    assert_opens(&proxy, "/api/v1/offers/1", WRITER_KEY).await;

    // The refusal is documented where tokens are.
    let auth_md = proxy.auth_md().await;
    assert!(auth_md.contains("`TOKEN_WRONG_RESOURCE`"), "{auth_md}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_resource_identifier_names_its_origin_too() {
    let proxy = two_origin_proxy().await;
    let here = proxy.url.trim_start_matches("http://").to_owned();
    let there = OTHER.trim_start_matches("https://");

    // A token for the other origin's API opens it there, and not here.
    let for_other = token(&proxy, Some(OTHER)).await;
    assert_eq!(
        status_at(&proxy, there, "/api/v1/offers/1", &for_other).await,
        200
    );
    assert_eq!(
        status_at(&proxy, &here, "/api/v1/offers/1", &for_other).await,
        401
    );
    assert_eq!(status_at(&proxy, there, "/mcp", &for_other).await, 401);

    // And the other origin's MCP server the same way.
    let for_other_mcp = token(&proxy, Some(&format!("{OTHER}/mcp"))).await;
    assert_eq!(status_at(&proxy, there, "/mcp", &for_other_mcp).await, 200);
    assert_eq!(status_at(&proxy, &here, "/mcp", &for_other_mcp).await, 401);

    // A token for this origin is refused at the other.
    let for_here = token(&proxy, Some(&proxy.url)).await;
    assert_eq!(
        status_at(&proxy, &here, "/api/v1/offers/1", &for_here).await,
        200
    );
    assert_eq!(
        status_at(&proxy, there, "/api/v1/offers/1", &for_here).await,
        401
    );
    proxy.shutdown().await;
}

#[test]
fn a_resource_listed_twice_is_a_config_error() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    let from = "  resources: [/mcp] ";
    assert!(
        text.contains(from),
        "the example config no longer has {from:?}"
    );
    let text = text.replace(from, "  resources: [/mcp, /mcp/] ");
    let overrides = authmd_proxy::config::Overrides::default();
    let error =
        authmd_proxy::config::Config::from_yaml_str(&text, "test.yaml", &overrides, &|_| None)
            .unwrap_err()
            .to_string();
    assert!(error.contains("discovery.resources[1]"), "{error}");
    assert!(error.contains("`/mcp` is listed twice"), "{error}");
    assert!(error.contains("test.yaml:"), "{error}");
}
