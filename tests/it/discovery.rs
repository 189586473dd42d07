//! Discovery documents over real sockets, checked against their RFCs' MUST rules and
//! what real agent clients require (SPEC items 2, 3, 4, 9 and 10).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed step fails the test"
)]

use serde_json::Value;

use crate::support;
use crate::support::{TestProxy, WRITER_KEY, client, json};

async fn get_json(url: &str) -> Value {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{url}"
    );
    json(response).await
}

#[tokio::test]
async fn protected_resource_metadata_follows_rfc_9728() {
    let proxy = TestProxy::example(None).await;
    let origin = &proxy.url;
    let prm = get_json(&proxy.url("/.well-known/oauth-protected-resource")).await;
    // The resource identifier the well-known URL was built from, exactly.
    assert_eq!(prm["resource"], *origin);
    assert_eq!(prm["authorization_servers"], serde_json::json!([origin]));
    assert_eq!(
        prm["bearer_methods_supported"],
        serde_json::json!(["header"])
    );
    assert_eq!(prm["resource_name"], "Example Offers API");
    assert_eq!(prm["resource_documentation"], format!("{origin}/auth.md"));
    let scopes: Vec<&str> = prm["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        scopes,
        [
            "offers:read",
            "offers:write",
            "offers:delete",
            "contacts:reveal"
        ]
    );
    // RFC 9728: zero-valued members are omitted, and no signing alg is `none`.
    for (key, value) in prm.as_object().unwrap() {
        assert!(!value.is_null(), "{key} is null");
        assert!(
            value.as_array().is_none_or(|a| !a.is_empty()),
            "{key} is empty"
        );
    }

    // Path-inserted form for the /mcp resource: `resource` is the URL it was built from.
    let mcp = get_json(&proxy.url("/.well-known/oauth-protected-resource/mcp")).await;
    assert_eq!(mcp["resource"], format!("{origin}/mcp"));
    assert_eq!(mcp["authorization_servers"], serde_json::json!([origin]));
    // A path that is not a configured resource has no metadata.
    let response = client()
        .get(proxy.url("/.well-known/oauth-protected-resource/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_401_challenge_points_at_the_metadata_of_the_resource_called() {
    let proxy = TestProxy::example(None).await;
    for (path, metadata, resource) in [
        (
            "/mcp/tools",
            "/.well-known/oauth-protected-resource/mcp",
            "/mcp",
        ),
        (
            "/api/v1/offers/1/contact",
            "/.well-known/oauth-protected-resource",
            "",
        ),
    ] {
        let response = client().get(proxy.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401);
        let www = support::www(&response);
        assert!(www.starts_with("Bearer "), "Bearer must come first: {www}");
        let url = www
            .split("resource_metadata=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        assert_eq!(url, proxy.url(metadata));
        let prm = get_json(url).await;
        assert_eq!(prm["resource"], proxy.url(resource));
        assert!(
            www.contains("scope=\""),
            "MCP clients want the scope: {www}"
        );
    }
}

#[tokio::test]
async fn authorization_server_metadata_follows_rfc_8414() {
    let proxy = TestProxy::example(None).await;
    let origin = &proxy.url;
    let asm = get_json(&proxy.url("/.well-known/oauth-authorization-server")).await;
    // RFC 8414 3.3: the issuer is identical to the one the URL was built from.
    assert_eq!(asm["issuer"], *origin);
    // Fields the MCP SDK's schema requires, and the ones the issue asks for.
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "response_types_supported",
        "grant_types_supported",
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint",
        "scopes_supported",
    ] {
        assert!(asm.get(field).is_some(), "missing {field}");
    }
    let agent_auth = &asm["agent_auth"];
    assert_eq!(agent_auth["skill"], format!("{origin}/auth.md"));
    assert!(agent_auth["identity_types_supported"].is_array());
    // The OpenID alias serves the same document.
    let oidc = get_json(&proxy.url("/.well-known/openid-configuration")).await;
    assert_eq!(oidc, asm);
}

/// No URL in any document answers 404: every endpoint that is advertised exists.
/// (Identifiers such as `resource` and `issuer` name things; they are not endpoints.)
#[tokio::test]
async fn every_advertised_url_exists() {
    let proxy = TestProxy::example(None).await;
    let mut urls = Vec::new();
    for doc in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/.well-known/api-catalog",
    ] {
        let response = client().get(proxy.url(doc)).send().await.unwrap();
        collect_urls(&json(response).await, &proxy.url, &mut urls);
    }
    assert!(urls.len() >= 6, "{urls:?}");
    for url in urls {
        let status = client().get(&url).send().await.unwrap().status();
        assert_ne!(status, 404, "{url} is advertised but answers 404");
        assert!(!status.is_server_error(), "{url}: {status}");
    }
}

fn collect_urls(value: &Value, origin: &str, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.starts_with(origin) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_urls(v, origin, out)),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| {
                !["resource", "issuer", "anchor", "authorization_servers"].contains(&k.as_str())
            })
            .for_each(|(_, v)| collect_urls(v, origin, out)),
        _ => {}
    }
}

#[tokio::test]
async fn api_catalog_follows_rfc_9727() {
    let proxy = TestProxy::example(None).await;
    let url = proxy.url("/.well-known/api-catalog");
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/linkset+json; profile=\"https://www.rfc-editor.org/info/rfc9727\""
    );
    let link = format!("<{url}>; rel=\"api-catalog\"");
    assert_eq!(response.headers()["link"], link.as_str());
    let catalog = json(response).await;
    let entry = &catalog["linkset"][0];
    assert_eq!(entry["anchor"], proxy.url);
    assert_eq!(entry["service-doc"][0]["href"], proxy.url("/auth.md"));
    assert_eq!(
        entry["service-meta"][0]["href"],
        proxy.url("/.well-known/oauth-protected-resource")
    );
    // HEAD: the Link header, no body.
    let response = client().head(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["link"], link.as_str());
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn documents_are_cacheable_stable_and_readable_cross_origin() {
    let proxy = TestProxy::example(None).await;
    let url = proxy.url("/.well-known/oauth-protected-resource");
    let first = client().get(&url).send().await.unwrap();
    assert_eq!(first.headers()["cache-control"], "public, max-age=3600");
    assert_eq!(first.headers()["access-control-allow-origin"], "*");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body = first.bytes().await.unwrap();
    let second = client().get(&url).send().await.unwrap();
    assert_eq!(second.headers()["etag"], etag.as_str());
    assert_eq!(second.bytes().await.unwrap(), body, "byte-for-byte stable");

    let not_modified = client()
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"], etag.as_str());
    assert!(not_modified.bytes().await.unwrap().is_empty());

    let preflight = client()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://agent.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "mcp-protocol-version")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("mcp-protocol-version"), "{allowed}");

    let post = client().post(&url).send().await.unwrap();
    assert_eq!(post.status(), 405);

    // A second proxy from the same config serves the same bytes.
    let again = TestProxy::example(None).await;
    let other = client()
        .get(again.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ours = client()
        .get(proxy.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        ours.replace(&proxy.url, "ORIGIN"),
        other.replace(&again.url, "ORIGIN")
    );
}

const HOSTS: &str = r#"
public_url: https://api.example.com
upstream: {url: builtin:echo}
discovery:
  hosts: [https://api.example.org]
scopes: {a:read: Read}
routes:
  - {path: /a, scopes: [a:read]}
"#;

/// Documents follow the request's Host only when it is a configured origin: a forged
/// Host cannot inject a URL into metadata or challenges.
#[tokio::test]
async fn documents_follow_the_host_only_when_it_is_configured() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = authmd_proxy::config::Config::from_yaml_str(
        HOSTS,
        "hosts.yaml",
        &authmd_proxy::config::Overrides::default(),
        &|_| None,
    )
    .unwrap();
    let running = authmd_proxy::server::Running::start(
        authmd_proxy::gateway::Gateway::start(config, None)
            .await
            .unwrap(),
        listener,
        None,
        None,
    );
    for (host, origin) in [
        ("api.example.com", "https://api.example.com"),
        ("api.example.org", "https://api.example.org"),
        ("API.EXAMPLE.ORG:443", "https://api.example.org"),
        ("evil.example", "https://api.example.com"),
    ] {
        let response = support::raw(
            addr,
            &format!("GET /.well-known/oauth-protected-resource HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(response.json()["resource"], origin, "{host}");
        let response = support::raw(
            addr,
            &format!("GET /a HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(response.status, 401);
        let www = response.header("www-authenticate").unwrap();
        assert!(
            www.contains(&format!("resource_metadata=\"{origin}/.well-known/")),
            "{host}: {www}"
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn cards_are_served_as_configured() {
    let proxy = TestProxy::example(None).await;
    let card = get_json(&proxy.url("/.well-known/mcp/server-card.json")).await;
    assert_eq!(card["transport"]["endpoint"], "/mcp");
    assert_eq!(get_json(&proxy.url("/.well-known/mcp.json")).await, card);
    // Not configured: no document.
    let response = client()
        .get(proxy.url("/.well-known/agent-card.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn oauth_endpoints_answer_as_rfc_6749_and_7009_say() {
    // Without people signing in (the example's demo account goes), the
    // authorization endpoint answers as an OAuth endpoint that offers no code.
    let proxy = TestProxy::start(&crate::support::example_without("login"), None).await;
    let http = client();
    let token = proxy.url("/oauth2/token");
    let response = http
        .post(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=a&password=b")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body = json(response).await;
    assert_eq!(body["error"], "unsupported_grant_type");
    assert!(body["error_description"].is_string());
    // BotVisibility-style JSON body: an anonymous token, as the example config offers.
    let response = http
        .post(&token)
        .json(&serde_json::json!({"grant_type": "client_credentials", "scope": "offers:read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body = json(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "offers:read");
    assert!(body["access_token"].as_str().unwrap().starts_with("eyJ"));
    let body = json(http.post(&token).body("scope=x").send().await.unwrap()).await;
    assert_eq!(body["error"], "invalid_request");
    let body = json(
        http.post(&token)
            .body("grant_type=a&grant_type=b")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(http.get(&token).send().await.unwrap().status(), 405);

    let revoke = proxy.url("/oauth2/revoke");
    let response = http
        .post(&revoke)
        .body("token=never-issued")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "RFC 7009: unknown tokens are 200");
    let body = json(
        http.post(&revoke)
            .body(format!("token={WRITER_KEY}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["error"], "unsupported_token_type");
    let body = json(http.post(&revoke).body("").send().await.unwrap()).await;
    assert_eq!(body["error"], "invalid_request");

    let body = json(
        http.get(proxy.url("/oauth2/authorize?response_type=code&client_id=x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["error"], "unsupported_response_type");
}

/// The generated auth.md: its sections in the convention's order, and every example
/// request in it, run against the proxy, answers as the document says.
#[tokio::test]
async fn auth_md_is_complete_and_its_examples_are_true() {
    let proxy = TestProxy::example(None).await;
    let response = client().get(proxy.url("/auth.md")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    let md = response.text().await.unwrap();
    assert!(
        md.lines().next().unwrap().starts_with("# ")
            && md.lines().next().unwrap().contains("auth.md")
    );
    let mut at = 0;
    for section in [
        "## Discover",
        "## Pick a method",
        "## Register",
        "## Claim",
        "## Use the credential",
        "## Scopes",
        "## Errors",
        "## Rate limits",
        "## Revocation",
        "## Links",
    ] {
        let found = md[at..]
            .find(section)
            .unwrap_or_else(|| panic!("{section} missing or out of order"));
        at += found;
    }
    for scope in [
        "offers:read",
        "offers:write",
        "offers:delete",
        "contacts:reveal",
    ] {
        assert!(md.contains(&format!("| `{scope}` |")), "{scope}");
    }
    for code in authmd_proxy::rejection::error_codes() {
        // The example configures no x402 payments, no trusted issuer and no
        // fleet-wide limits that refuse while Redis is down: those codes are not
        // listed.
        if code.code.starts_with("PAYMENT_")
            || code.code == "ISSUER_JWKS_UNAVAILABLE"
            || code.code == "RATE_LIMIT_UNAVAILABLE"
        {
            assert!(!md.contains(&format!("`{}`", code.code)), "{}", code.code);
            continue;
        }
        assert!(md.contains(&format!("`{}`", code.code)), "{}", code.code);
    }

    // Run every `curl` example and compare with its `# -> NNN` line.
    let mut examples = 0;
    let mut lines = md.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(command) = line.strip_prefix("curl ") else {
            continue;
        };
        let expected: u16 = lines
            .peek()
            .and_then(|l| l.strip_prefix("# -> "))
            .and_then(|l| l.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no expected answer after {line}"));
        let (method, url, headers, body) = parse_curl(command);
        assert!(url.starts_with(&proxy.url), "{url}");
        let mut request = client().request(method.parse().unwrap(), &url);
        for (name, value) in headers {
            let value = value.replace("<key>", WRITER_KEY);
            request = request.header(name, value);
        }
        if let Some(body) = body {
            let body = body
                .replace("<key id>", "example-writer")
                .replace("<key>", WRITER_KEY);
            request = request.body(body);
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, expected, "{line}");
        examples += 1;
    }
    assert!(examples >= 3, "{examples} examples");
}

/// Parses the `curl -i [-X M] URL [-H 'N: V']...` lines auth.md writes.
fn parse_curl(command: &str) -> (String, String, Vec<(String, String)>, Option<String>) {
    let mut method = "GET".to_owned();
    let mut url = String::new();
    let mut headers = Vec::new();
    let mut body = None;
    let mut rest = command.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("-i").or_else(|| rest.strip_prefix("-s")) {
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix("-d '") {
            let (b, r) = r.split_once('\'').unwrap();
            body = Some(b.to_owned());
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix("-X ") {
            let (m, r) = r.split_once(' ').unwrap_or((r, ""));
            method = m.to_owned();
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix("-H '") {
            let (h, r) = r.split_once('\'').unwrap();
            let (name, value) = h.split_once(": ").unwrap();
            headers.push((name.to_owned(), value.to_owned()));
            rest = r.trim_start();
        } else {
            let (u, r) = rest.split_once(' ').unwrap_or((rest, ""));
            url = u.to_owned();
            rest = r.trim_start();
        }
    }
    (method, url, headers, body)
}

#[tokio::test]
async fn an_operator_supplied_auth_md_is_served_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("AUTH.md");
    std::fs::write(&file, "# Hand-written auth.md\n\nBytes as written.\n").unwrap();
    let yaml = format!(
        "upstream: {{url: builtin:echo}}\ndiscovery: {{auth_md_file: {}}}\n",
        file.display()
    );
    let proxy = TestProxy::start(&yaml, None).await;
    let text = client()
        .get(proxy.url("/auth.md"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "# Hand-written auth.md\n\nBytes as written.\n");
}
