//! Agents must not promote themselves ("self-claim"). Where a claim must carry an
//! identity assertion and no trusted issuer carries one (the example config), no
//! claim can be completed: the registration answer offers none, the metadata names
//! no claim endpoint, and auth.md describes no claim step.

#![allow(clippy::unwrap_used, reason = "tests: a failed step fails the test")]

use serde_json::{Value, json};

use crate::support::{TestProxy, assert_envelope, client};

const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"));

/// The fields of a registration answer that offer a claim.
const CLAIM_OFFER: [&str; 5] = [
    "claim_url",
    "claim_token",
    "claim_token_expires",
    "post_claim_scopes",
    "post_claim_tier",
];

/// The example config with a trusted issuer of identity assertions (its keys are
/// never fetched here).
fn with_issuer() -> String {
    format!(
        "{EXAMPLE}\ntrusted_issuers:\n  - issuer: https://idp.test\n    jwks_uri: http://127.0.0.1:1/jwks\n"
    )
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
    let proxy = TestProxy::example(None).await;
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
