//! Third-party OAuth client libraries (not ours) against a running proxy serving
//! `config.example.yaml`: `tests/clients/discovery.mjs` drives panva's `oauth4webapi`
//! and the MCP TypeScript SDK (`@modelcontextprotocol/sdk`) from a 401 on a protected
//! path to the authorization-server metadata; `tests/clients/token.mjs` has
//! `oauth4webapi` obtain tokens with client_credentials (client_secret_basic and
//! client_secret_post), call the API with each, and see a wrong secret refused.
//!
//! Needs `node` and `npm ci --prefix tests/clients`. Without them the test says
//! "skipped" and passes, unless `AUTHMD_REQUIRE_NODE_CLIENTS` is set (as CI does),
//! where it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test helpers: a failed step fails the test; skips and summaries are reported"
)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::TestProxy;
use tokio::process::Command;

const REQUIRE: &str = "AUTHMD_REQUIRE_NODE_CLIENTS";
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

/// Runs `node <script> <proxy url>` against a proxy serving `config.example.yaml`
/// and returns the script's one-line JSON summary, or `None` when Node or the
/// packages are missing (and not required).
async fn run_script(script: &str) -> Option<serde_json::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(why) = missing_prerequisite(root).await {
        assert!(
            std::env::var_os(REQUIRE).is_none(),
            "{REQUIRE} is set but {why}: run `{INSTALL}` (with Node.js on PATH) first"
        );
        eprintln!("skipped: {why}; run `{INSTALL}` to check third-party OAuth clients");
        return None;
    }

    let proxy = TestProxy::example(None).await;
    let url = proxy.url.clone();
    let child = Command::new("node")
        .arg(script)
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
        .unwrap_or_else(|_| panic!("node {script} did not finish within 120s"))
        .expect("wait for node");
    proxy.shutdown().await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node {script} {url} failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        status = output.status,
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the script's summary is not one JSON line ({e}):\n{stdout}"));
    assert_eq!(summary["ok"], true, "{summary}");
    eprintln!("{}", stdout.trim());
    Some(summary)
}

#[tokio::test]
async fn oauth4webapi_and_the_mcp_sdk_walk_from_a_401_to_the_authorization_server_metadata() {
    run_script("tests/clients/discovery.mjs").await;
}

/// oauth4webapi gets tokens with client_credentials, authenticating with
/// `client_secret_basic` and with `client_secret_post`, calls `POST /api/v1/offers` with
/// each (the echo upstream sees the key's principal), and sees a wrong secret refused
/// with `invalid_client` (`tests/clients/token.mjs`).
#[tokio::test]
async fn oauth4webapi_gets_tokens_with_client_secret_basic_and_post_and_calls_the_api() {
    let Some(summary) = run_script("tests/clients/token.mjs").await else {
        return;
    };
    for method in ["client_secret_basic", "client_secret_post"] {
        let result = &summary["methods"][method];
        assert_eq!(result["token_type"], "bearer", "{method}: {summary}");
        assert_eq!(
            result["scope"], "offers:read offers:write",
            "{method}: {summary}"
        );
        assert_eq!(result["jwt"]["typ"], "at+jwt", "{method}: {summary}");
        assert_eq!(result["api"]["status"], 200, "{method}: {summary}");
        assert_eq!(
            result["api"]["principal"], "key:example-writer",
            "{method}: {summary}"
        );
    }
    assert_eq!(
        summary["wrong_secret"]["error"], "invalid_client",
        "{summary}"
    );
    assert_eq!(summary["wrong_secret"]["status"], 401, "{summary}");
}
