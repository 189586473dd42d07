//! Third-party OAuth client libraries (not ours) walk a running proxy from a 401 on a
//! protected path to its authorization-server metadata: `tests/clients/discovery.mjs`
//! drives panva's `oauth4webapi` and the MCP TypeScript SDK (`@modelcontextprotocol/sdk`)
//! against a proxy serving `config.example.yaml`.
//!
//! Needs `node` and `npm ci --prefix tests/clients`. Without them the test says
//! "skipped" and passes, unless `AUTHMD_REQUIRE_NODE_CLIENTS` is set (as CI does),
//! where it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed step fails the test"
)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::TestProxy;
use tokio::process::Command;

const REQUIRE: &str = "AUTHMD_REQUIRE_NODE_CLIENTS";
const SCRIPT: &str = "tests/clients/discovery.mjs";
const INSTALL: &str = "npm ci --prefix tests/clients";

/// Why the Node clients cannot run here, if they cannot.
async fn missing_prerequisite(root: &Path) -> Option<String> {
    let version = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    match version {
        Ok(output) if output.status.success() => {}
        Ok(output) => return Some(format!("`node --version` failed: {}", output.status)),
        Err(e) => return Some(format!("`node` is not runnable ({e})")),
    }
    ["oauth4webapi", "@modelcontextprotocol/sdk"]
        .iter()
        .map(|package| root.join("tests/clients/node_modules").join(package))
        .find(|dir| !dir.join("package.json").is_file())
        .map(|dir| format!("{} is not installed", dir.display()))
}

#[tokio::test]
async fn oauth4webapi_and_the_mcp_sdk_walk_from_a_401_to_the_authorization_server_metadata() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(why) = missing_prerequisite(root).await {
        assert!(
            std::env::var_os(REQUIRE).is_none(),
            "{REQUIRE} is set but {why}: run `{INSTALL}` (with Node.js on PATH) first"
        );
        eprintln!("skipped: {why}; run `{INSTALL}` to check third-party OAuth clients");
        return;
    }

    let proxy = TestProxy::example(None).await;
    let url = proxy.url.clone();
    let child = Command::new("node")
        .arg(SCRIPT)
        .arg(&url)
        .current_dir(root)
        // Loopback only: never through a proxy, even where Node honours the env's.
        .env_remove("NODE_USE_ENV_PROXY")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("node tests/clients/discovery.mjs did not finish within 120s")
        .expect("wait for node");
    proxy.shutdown().await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node {SCRIPT} {url} failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        status = output.status,
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the script's summary is not one JSON line ({e}):\n{stdout}"));
    assert_eq!(summary["ok"], true, "{summary}");
    eprintln!("{}", stdout.trim());
}
