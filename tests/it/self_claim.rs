//! Agents must not promote themselves ("self-claim"). Where a claim must carry an
//! identity assertion or a sign-in, no trusted issuer carries one and no one signs
//! in (the example config without its `login:` section), no
//! claim can be completed: the registration answer offers none and the metadata
//! names no claim endpoint, and `check` says so. Where the claim token alone claims
//! (`require_identity_to_claim: false`), the agent holds that token too: `check` and
//! `run` warn that any agent can claim itself.

#![allow(clippy::unwrap_used, reason = "tests: a failed step fails the test")]

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Binary, TestProxy, assert_envelope, client};

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");
const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"));

/// The fields of a registration answer that offer a claim.
const CLAIM_OFFER: [&str; 5] = [
    "claim_url",
    "claim_token",
    "claim_token_expires",
    "post_claim_scopes",
    "post_claim_tier",
];

const REQUIRED: &str = "require_identity_to_claim: true";

/// The example config with a trusted issuer of identity assertions (its keys are
/// never fetched here).
fn with_issuer() -> String {
    format!(
        "{EXAMPLE}\ntrusted_issuers:\n  - issuer: https://idp.test\n    jwks_uri: http://127.0.0.1:1/jwks\n"
    )
}

/// The example config without sign-in (`login:`), where no claim can be
/// completed; `claims_signed_in` has the claims the example's sign-in makes.
fn no_sign_in() -> String {
    crate::support::example_without("login")
}

/// The example config where the claim token alone claims.
fn token_alone() -> String {
    assert!(EXAMPLE.contains(REQUIRED));
    EXAMPLE.replace(REQUIRED, "require_identity_to_claim: false")
}

async fn register(proxy: &TestProxy) -> Value {
    let response = client()
        .post(proxy.url("/agent/auth/register"))
        .json(&json!({"type": "anonymous", "client_name": "bot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn agent_auth_block(proxy: &TestProxy) -> Value {
    let metadata: Value = client()
        .get(proxy.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    metadata["agent_auth"].clone()
}

#[tokio::test]
async fn without_a_trusted_issuer_the_registration_answer_offers_no_claim() {
    let proxy = TestProxy::start(&no_sign_in(), None).await;
    let answer = register(&proxy).await;
    assert!(
        answer["credential"]
            .as_str()
            .unwrap()
            .starts_with("ak_live_")
    );
    assert_eq!(answer["tier"], "free");
    for field in CLAIM_OFFER {
        assert!(answer.get(field).is_none(), "{field} in {answer}");
    }

    // The metadata names no claim endpoint; auth.md describes no claim step.
    let block = agent_auth_block(&proxy).await;
    assert_eq!(block["register_uri"], proxy.url("/agent/auth/register"));
    assert!(block.get("claim_uri").is_none(), "{block}");
    assert!(block.get("claim_endpoint").is_none(), "{block}");
    let md = proxy.auth_md().await;
    assert!(
        md.contains("Claiming is not available on this deployment"),
        "{md}"
    );
    assert!(!md.contains("claim_url"), "{md}");

    // And the registration cannot be claimed another way.
    let response = client()
        .post(proxy.url("/agent/auth/claim"))
        .json(&json!({
            "registration_id": answer["registration_id"],
            "identity_assertion": "eyJ.e30.sig",
        }))
        .send()
        .await
        .unwrap();
    assert_envelope(response, 403, "access_denied", "ISSUER_NOT_ENABLED").await;
}

#[tokio::test]
async fn with_a_trusted_issuer_the_claim_is_still_offered() {
    let proxy = TestProxy::start(&with_issuer(), None).await;
    let answer = register(&proxy).await;
    for field in CLAIM_OFFER {
        assert!(answer.get(field).is_some(), "{field} missing in {answer}");
    }
    assert!(
        answer["claim_url"]
            .as_str()
            .unwrap()
            .starts_with(&proxy.url("/agent/auth/claim?token=clm_"))
    );
    assert_eq!(answer["post_claim_tier"], "verified");
    let block = agent_auth_block(&proxy).await;
    assert_eq!(block["claim_uri"], proxy.url("/agent/auth/claim"));
    assert_eq!(block["claim_endpoint"], block["claim_uri"]);
}

/// What `check` printed on stderr for `yaml`; asserts that it passed.
fn check_stderr(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": ok ("), "{stdout}");
    stderr.replace(path.to_str().unwrap(), "FILE")
}

#[test]
fn check_warns_that_no_claim_can_be_completed_without_a_trusted_issuer() {
    let example = no_sign_in();
    let stderr = check_stderr(&example);
    let line = example
        .lines()
        .position(|l| l.trim_start().starts_with(REQUIRED))
        .unwrap()
        + 1;
    let expected =
        format!("authmd-proxy: warning: FILE:{line}:3: registration.require_identity_to_claim: ");
    assert!(stderr.contains(&expected), "{expected:?} in\n{stderr}");
    for words in [
        "no claim can be completed",
        "stay in the `free` tier",
        "`trusted_issuers`",
    ] {
        assert!(stderr.contains(words), "{words:?} in\n{stderr}");
    }
}

#[test]
fn check_warns_that_agents_can_claim_themselves_with_the_token_alone() {
    let stderr = check_stderr(&token_alone());
    for words in [
        "authmd-proxy: warning: FILE:",
        "registration.require_identity_to_claim: `false` lets any agent claim itself into the `verified` tier",
        "(two requests)",
        "set `true` and let people sign in on the claim page (`login.providers`) or trust an identity provider under `trusted_issuers`",
    ] {
        assert!(stderr.contains(words), "{words:?} in\n{stderr}");
    }
    // With a trusted issuer too, the token alone still claims.
    let both = with_issuer().replace(REQUIRED, "require_identity_to_claim: false");
    assert!(check_stderr(&both).contains("lets any agent claim itself"));
}

#[test]
fn check_is_quiet_when_only_an_identity_assertion_claims() {
    let stderr = check_stderr(&with_issuer());
    assert!(!stderr.contains("warning"), "{stderr}");
    // Nor is there anything to warn about when a claim raises nothing.
    let flat = token_alone().replace("claimed_tier: verified", "claimed_tier: free");
    let stderr = check_stderr(&flat);
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[tokio::test]
async fn run_logs_the_self_claim_warning_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, token_alone()).unwrap();
    let proxy = Binary::start(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .await;
    let warned = proxy.startup.iter().any(|l| {
        l.contains("WARN")
            && l.contains("registration.require_identity_to_claim")
            && l.contains("lets any agent claim itself")
    });
    assert!(warned, "{:#?}", proxy.startup);
}
