//! The documents name only what the policy serves (issue 24): a `discovery.resources`
//! prefix no route is under, and a card whose endpoint no route serves, are in no
//! document, for a fresh start and after a reload; `check` and the reload warn,
//! naming the file and the field. Driven through the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step fails the test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Binary, WRITER_KEY, client, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");

/// The example config's `/mcp` route.
const MCP_ROUTE: &str = "  - id: mcp\n    path: /mcp/{*rest}\n    methods: [GET, POST, DELETE]\n    scopes: [offers:read]\n";

/// The example config, without its `/mcp` route when `mcp_route` is false.
fn example(mcp_route: bool) -> String {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    assert!(
        text.contains(MCP_ROUTE),
        "the example config no longer has its /mcp route"
    );
    if mcp_route {
        text
    } else {
        text.replace(MCP_ROUTE, "")
    }
}

/// Writes `text` to `dir/authmd.yaml` as an editor does (a temporary file renamed
/// over), so a running proxy never reads half of it.
fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("authmd.yaml");
    let temporary = dir.join(".authmd.yaml.tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, &path).unwrap();
    path
}

async fn serve(config: &Path) -> Binary {
    Binary::start(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .await
}

/// Status and body of `GET url`.
async fn get(url: &str) -> (u16, String) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The status of the token endpoint asked for a token for `resource` with the
/// example writer key.
async fn token_status(base: &str, resource: &str) -> u16 {
    let mut form = "grant_type=client_credentials&resource=".to_owned();
    form.extend(form_urlencoded::byte_serialize(resource.as_bytes()));
    client()
        .post(format!("{base}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .basic_auth("example-writer", Some(WRITER_KEY))
        .body(form)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// No document of the proxy at `base` names `/mcp`, and nothing is served for it.
async fn mcp_is_in_no_document(base: &str) {
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/mcp/server-card.json",
        "/.well-known/mcp.json",
    ] {
        let (status, body) = get(&format!("{base}{path}")).await;
        assert_eq!(status, 404, "{path} is still served: {body}");
    }
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server",
        "/.well-known/api-catalog",
        "/auth.md",
    ] {
        let (status, body) = get(&format!("{base}{path}")).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.contains("/mcp"), "{path} names /mcp:\n{body}");
        assert!(
            !body.contains("server-card"),
            "{path} names the card:\n{body}"
        );
    }
    // Nor is it a token audience.
    assert_eq!(token_status(base, &format!("{base}/mcp")).await, 400);
}

#[tokio::test]
async fn a_resource_and_a_card_no_route_serves_are_in_no_document() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), &example(false));
    let proxy = serve(&config).await;
    mcp_is_in_no_document(&proxy.url).await;
    // What the policy still serves is still advertised.
    let (status, prm) = get(&format!(
        "{}/.well-known/oauth-protected-resource",
        proxy.url
    ))
    .await;
    assert_eq!(status, 200);
    assert!(
        prm.contains(&format!("\"resource\": \"{}\"", proxy.url)),
        "{prm}"
    );
    assert_eq!(token_status(&proxy.url, &proxy.url).await, 200);
}

#[tokio::test]
async fn a_card_on_another_host_or_served_by_a_route_stays() {
    let dir = tempfile::tempdir().unwrap();
    let card = "  # agent_card: agent-card.json          # served at /.well-known/agent-card.json";
    let text = example(false);
    assert!(
        text.contains(card),
        "the example config no longer has {card:?}"
    );
    // An agent card whose endpoint is another host's is not this policy's to judge;
    // one whose endpoint a route serves is served.
    let text = text.replace(
        card,
        "  agent_card: {name: Offers, url: \"https://agents.example.net/a2a\"}",
    );
    let proxy = serve(&write(dir.path(), &text)).await;
    let (status, body) = get(&format!("{}/.well-known/agent-card.json", proxy.url)).await;
    assert_eq!(status, 200, "{body}");
    drop(proxy);

    let text = example(false).replace(card, "  agent_card: {name: Offers, url: /api/v1/offers}");
    let proxy = serve(&write(dir.path(), &text)).await;
    let (status, body) = get(&format!("{}/.well-known/agent-card.json", proxy.url)).await;
    assert_eq!(status, 200, "{body}");
    drop(proxy);

    let text = example(false).replace(card, "  agent_card: {name: Offers, url: /a2a}");
    let proxy = serve(&write(dir.path(), &text)).await;
    let (status, body) = get(&format!("{}/.well-known/agent-card.json", proxy.url)).await;
    assert_eq!(status, 404, "{body}");
}

#[test]
fn check_warns_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), &example(false));
    let out = Command::new(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // A warning, not an error: the config still loads.
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("ok (7 routes"), "{stdout}");
    // The example's claims are completed by a signed-in person (its `login:`), so
    // it no longer warns that they cannot be (the self-claim tests' business).
    assert!(stdout.contains("2 warnings"), "{stdout}");
    let file = config.display().to_string();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|w| w.contains(": discovery."))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    let resource = warnings
        .iter()
        .find(|w| w.contains("discovery.resources[0]"))
        .unwrap_or_else(|| panic!("no warning about the resource:\n{stderr}"));
    assert!(
        resource.starts_with(&format!("authmd-proxy: warning: {file}:")),
        "{resource}"
    );
    assert!(resource.contains("`/mcp`"), "{resource}");
    let card = warnings
        .iter()
        .find(|w| w.contains("discovery.mcp_server_card.transport.endpoint"))
        .unwrap_or_else(|| panic!("no warning about the card:\n{stderr}"));
    assert!(card.contains(&format!("{file}:")), "{card}");
    assert!(card.contains("`/mcp`"), "{card}");

    // The example itself, which serves /mcp, has nothing to warn about there.
    let out = Command::new(BIN)
        .args(["check", "--config", EXAMPLE])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains(": discovery."), "{stderr}");
}

#[tokio::test]
async fn a_reload_that_removes_the_route_stops_advertising_it_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), &example(true));
    let proxy = serve(&config).await;
    let prm = format!("{}/.well-known/oauth-protected-resource/mcp", proxy.url);
    assert_eq!(get(&prm).await.0, 200, "served while the route is");

    write(dir.path(), &example(false));
    proxy.signal("HUP");
    eventually(Duration::from_secs(10), || async {
        get(&prm).await.0 == 404
    })
    .await;
    mcp_is_in_no_document(&proxy.url).await;
    let mut log = String::new();
    eventually(Duration::from_secs(10), || {
        for line in proxy.log_lines() {
            log.push_str(&line);
            log.push('\n');
        }
        let warned = log.contains("discovery.resources[0]")
            && log.contains("discovery.mcp_server_card.transport.endpoint");
        async move { warned }
    })
    .await;
}
