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

use crate::support;
use crate::support::TestProxy;

/// Runs `node <script> <proxy url>` against a proxy serving `config.example.yaml`
/// and returns the script's one-line JSON summary, or `None` when Node or the
/// packages are missing (and not required).
async fn run_script(script: &str) -> Option<serde_json::Value> {
    if !support::node::ready(&["oauth4webapi", "@modelcontextprotocol/sdk"]).await {
        return None;
    }
    let proxy = TestProxy::example(None).await;
    let summary = support::node::run(script, &[&proxy.url]).await;
    proxy.shutdown().await;
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
