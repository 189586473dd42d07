//! Third-party client libraries (not ours) through the interactive flow of a proxy
//! with `login:` (the static account `ada`) and `oauth:`: the MCP TypeScript SDK's
//! `auth()` (`tests/clients/authcode.mjs`) and panva's `oauth4webapi`
//! (`tests/clients/authcode_oauth4webapi.mjs`) discover from the 401 on `/mcp`,
//! register by RFC 7591, send the person (`tests/clients/person.mjs`: signs in on
//! the static form, allows the consent page) through the authorization request with
//! PKCE S256, exchange the code, refresh (the refresh token rotates), and call `/mcp`,
//! where the echo upstream sees the person; the SDK also connects with a Client ID
//! Metadata Document as its `client_id`, served over HTTPS. Authlib's RFC 8414 validator
//! (`tests/clients/validate_metadata.py`) passes the authorization-server metadata
//! with and without `login:`.
//!
//! The Node part needs `node` and `npm ci --prefix tests/clients` (else "skipped",
//! unless `AUTHMD_REQUIRE_NODE_CLIENTS` is set). The Python part runs
//! `$AUTHMD_AUTHLIB_PYTHON` (default `python3`) and needs Authlib there (else
//! "skipped", unless `AUTHMD_REQUIRE_AUTHLIB` is set), e.g.
//! `python3 -m venv v && v/bin/pip install Authlib==1.9.10`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test helpers: a failed step fails the test; skips and summaries are reported"
)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::login::{static_demo, yaml};
use crate::support::document_host::{Answer, DocumentHost};
use crate::support::{self, TestProxy};

const PYTHON: &str = "AUTHMD_AUTHLIB_PYTHON";
const REQUIRE_AUTHLIB: &str = "AUTHMD_REQUIRE_AUTHLIB";
const PRINCIPAL: &str = "user:demo:ada";

/// The example config with people signing in (`ada`, `login::PASSWORD`, which the
/// scripts use) and the interactive flow.
fn config() -> String {
    format!(
        "{}oauth:\n  refresh_reuse_grace: 10s\n",
        yaml(&static_demo())
    )
}

/// Runs a Node script of `tests/clients` against a proxy with people signing in,
/// and returns its summary, or `None` when Node or the packages are missing (and
/// not required).
async fn run_node(script: &str) -> Option<Value> {
    if !support::node::ready(&["oauth4webapi", "@modelcontextprotocol/sdk"]).await {
        return None;
    }
    let proxy = TestProxy::start(&config(), None).await;
    let summary = support::node::run(script, &[&proxy.url]).await;
    proxy.shutdown().await;
    Some(summary)
}

/// What every client saw of the flow: the person's tokens for `offers:read` at the
/// `/mcp` resource, a rotated refresh token, and the person at the upstream.
fn assert_flow(summary: &Value, proxy_url: &str) {
    assert_eq!(summary["issuer"], proxy_url, "{summary}");
    let client_id = summary["jwt"]["client_id"].as_str().unwrap();
    assert!(
        client_id.starts_with("dcr_"),
        "a registered client: {summary}"
    );
    let pages: Vec<&str> = summary["person"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["page"].as_str())
        .collect();
    assert_eq!(pages, ["sign-in", "consent"], "{summary}");
    assert_eq!(
        summary["tokens"]["token_type"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        "bearer"
    );
    assert_eq!(summary["tokens"]["scope"], "offers:read", "{summary}");
    assert_eq!(summary["tokens"]["refresh_token"], true, "{summary}");
    assert_eq!(summary["refresh"]["rotated"], true, "{summary}");
    assert_eq!(summary["refresh"]["new_access_token"], true, "{summary}");
    assert_eq!(summary["refresh"]["scope"], "offers:read", "{summary}");
    assert_eq!(summary["jwt"]["sub"], PRINCIPAL, "{summary}");
    assert_eq!(
        summary["jwt"]["aud"],
        format!("{proxy_url}/mcp"),
        "{summary}"
    );
    assert_eq!(summary["jwt"]["scope"], "offers:read", "{summary}");
}

fn assert_upstream(upstream: &Value) {
    assert_eq!(upstream["status"], 200, "{upstream}");
    assert_eq!(upstream["path"], "/mcp", "{upstream}");
    assert_eq!(upstream["principal"], PRINCIPAL, "{upstream}");
    assert_eq!(upstream["scopes"], "offers:read", "{upstream}");
    assert_eq!(upstream["tier"], "verified", "ada@example.com: {upstream}");
}

/// The MCP SDK's `auth()` registers, sends the person through sign-in and consent,
/// exchanges the code, refreshes, and the token opens `/mcp`.
#[tokio::test]
async fn the_mcp_sdk_gets_a_persons_tokens_refreshes_them_and_calls_mcp() {
    let Some(summary) = run_node("tests/clients/authcode.mjs").await else {
        return;
    };
    let base = summary["base"].as_str().unwrap().trim_end_matches('/');
    assert_flow(&summary, base);
    assert_eq!(summary["client"]["kind"], "registered", "{summary}");
    assert_eq!(
        summary["challenge"]["resource_metadata"],
        format!("{base}/.well-known/oauth-protected-resource/mcp")
    );
    assert_eq!(summary["challenge"]["scope"], "offers:read");
    let grants: Vec<&str> = summary["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["grant_type"].as_str())
        .collect();
    assert_eq!(grants, ["authorization_code", "refresh_token"], "{summary}");
    assert_upstream(&summary["upstream"]);
}

/// The MCP SDK's `auth()` with a Client ID Metadata Document: its `client_id` is
/// the document's https URL (no registration); the proxy fetches the document
/// from the host (a test CA and 127.0.0.1, both allowed by the config), and the
/// rest of the flow is the same.
#[tokio::test]
async fn the_mcp_sdk_connects_with_a_client_id_metadata_document() {
    if !support::node::ready(&["@modelcontextprotocol/sdk"]).await {
        return;
    }
    let host = DocumentHost::start().await;
    let client_id = host.url("/mcp-client.json");
    let document = serde_json::json!({
        "client_id": client_id,
        "client_name": "SDK test client",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    host.serve("/mcp-client.json", Answer::json(document.to_string()));
    let yaml = format!(
        "{}  client_id_metadata_documents:\n    ca_file: {}\n    allow_networks: [127.0.0.1/32]\n",
        config(),
        host.ca_file.display()
    );
    let proxy = TestProxy::start(&yaml, None).await;
    let summary = support::node::run(
        "tests/clients/authcode.mjs",
        &[&proxy.url, "--client-metadata-url", &client_id],
    )
    .await;
    proxy.shutdown().await;
    assert_eq!(summary["client"]["kind"], "metadata_document", "{summary}");
    assert_eq!(summary["jwt"]["client_id"], client_id.as_str(), "{summary}");
    assert_eq!(summary["jwt"]["sub"], PRINCIPAL, "{summary}");
    assert_eq!(summary["refresh"]["rotated"], true, "{summary}");
    assert_upstream(&summary["upstream"]);
    assert_eq!(
        host.hits("/mcp-client.json"),
        1,
        "fetched once, then cached"
    );
}

/// oauth4webapi's own authorization-code functions, RFC 9207 `iss` check included.
#[tokio::test]
async fn oauth4webapi_gets_a_persons_tokens_refreshes_them_and_calls_mcp() {
    let Some(summary) = run_node("tests/clients/authcode_oauth4webapi.mjs").await else {
        return;
    };
    let base = summary["base"].as_str().unwrap().trim_end_matches('/');
    assert_flow(&summary, base);
    assert_eq!(summary["resource"], format!("{base}/mcp"));
    assert_eq!(summary["authorization_response"]["iss"], base);
    assert_eq!(summary["authorization_response"]["state_matches"], true);
    assert_eq!(summary["client"]["token_endpoint_auth_method"], "none");
    assert_upstream(&summary["upstream"]["first"]);
    assert_upstream(&summary["upstream"]["refreshed"]);
}

/// The Python with Authlib, or `None` (with "skipped" said) when it is missing and
/// not required.
async fn authlib_python() -> Option<String> {
    let python = std::env::var(PYTHON).unwrap_or_else(|_| "python3".to_owned());
    let check = Command::new(&python)
        .args(["-c", "import authlib"])
        .stdin(Stdio::null())
        .output()
        .await;
    let why = match check {
        Ok(output) if output.status.success() => return Some(python),
        Ok(output) => format!(
            "`{python} -c 'import authlib'` failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .trim()
        ),
        Err(e) => format!("`{python}` is not runnable ({e})"),
    };
    assert!(
        std::env::var_os(REQUIRE_AUTHLIB).is_none(),
        "{REQUIRE_AUTHLIB} is set but {why}: install Authlib (`pip install Authlib==1.9.10`) and point {PYTHON} at that Python"
    );
    eprintln!("skipped: {why}; set {PYTHON} to a Python with Authlib to check the metadata");
    None
}

/// Runs `validate_metadata.py` against `proxy` and returns its summary, asserting
/// that it says ok.
async fn validate_metadata(python: &str, proxy: &TestProxy) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/validate_metadata.py"
    );
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg(&proxy.url)
        .env_remove("AUTHLIB_INSECURE_TRANSPORT");
    support::script::run_json(command, "validate_metadata.py", Duration::from_secs(60)).await
}

/// Authlib's RFC 8414 validator passes the metadata with people signing in (the
/// interactive flow advertised) and without (`response_types_supported` still there,
/// as RFC 8414 §2 requires).
#[tokio::test]
async fn authlib_validates_the_authorization_server_metadata_with_and_without_login() {
    let Some(python) = authlib_python().await else {
        return;
    };
    let proxy = TestProxy::start(&config(), None).await;
    let with_login = validate_metadata(&python, &proxy).await;
    assert_eq!(with_login["issuer"], proxy.url.as_str());
    assert_eq!(
        with_login["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        with_login["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        with_login["authorization_response_iss_parameter_supported"],
        true
    );
    assert_eq!(
        with_login["registration_endpoint"],
        proxy.url("/oauth2/register")
    );
    let grants = with_login["grant_types_supported"].as_array().unwrap();
    assert!(
        grants.contains(&"authorization_code".into()) && grants.contains(&"refresh_token".into()),
        "{with_login}"
    );
    proxy.shutdown().await;

    let proxy = TestProxy::start(&support::example_without("login"), None).await;
    let without = validate_metadata(&python, &proxy).await;
    assert_eq!(without["issuer"], proxy.url.as_str());
    assert_eq!(
        without["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(without["registration_endpoint"], Value::Null, "{without}");
    assert_eq!(
        without["code_challenge_methods_supported"],
        Value::Null,
        "{without}"
    );
    let grants = without["grant_types_supported"].as_array().unwrap();
    assert!(!grants.contains(&"authorization_code".into()), "{without}");
    proxy.shutdown().await;
}
