//! What the generated auth.md tells agents about scopes, limits and claims, where a
//! wrong sentence would send an agent the wrong way: a wildcard must be declared
//! before it can be asked for, rate windows are per instance when several share a
//! store, and a claim is a person's to make, never the agent's with its own claim
//! token.

#![allow(clippy::unwrap_used, reason = "tests: a failed step fails the test")]

use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::discovery::auth_md;

/// The example without its demo sign-in (a shared store needs a cookie key set,
/// and these texts are about agents).
static EXAMPLE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::support::example_without("login"));

fn auth_md_of(yaml: &str) -> String {
    let config =
        Config::from_yaml_str(yaml, "test.yaml", &Overrides::default(), &|_| None).unwrap();
    auth_md::render(&config, &config.public_url)
}

#[test]
fn a_wildcard_is_explained_as_needing_its_declaration() {
    let md = auth_md_of(&EXAMPLE);
    assert!(
        md.contains("cannot be asked for unless it is declared"),
        "{md}"
    );
}

#[test]
fn rate_windows_are_said_to_be_per_instance_only_with_a_shared_store() {
    let single = auth_md_of(&EXAMPLE);
    assert!(!single.contains("counted by each instance"), "{single}");

    let store = "store:\n  kind: sqlite               # sqlite (embedded, the default) | postgres (several replicas) | none\n  data_dir: data ";
    assert!(EXAMPLE.contains(store));
    // PostgreSQL replicas must share their signing keys: name a file (it is read
    // when the proxy starts, not when the document is rendered).
    let keys = "  # signing_keys: [/run/secrets/authmd/signing.pem]";
    assert!(EXAMPLE.contains(keys));
    let shared = EXAMPLE
        .replace(
            store,
            "store:\n  kind: postgres\n  url: postgres://authmd@db.example/authmd\n  #",
        )
        .replace(keys, "  signing_keys: [/run/secrets/authmd/signing.pem]");
    let md = auth_md_of(&shared);
    assert!(
        md.contains("counted by each instance of this server separately"),
        "{md}"
    );
}

const REQUIRED: &str = "require_identity_to_claim: true";

/// The example with a trusted issuer of identity assertions.
fn with_issuer(yaml: &str) -> String {
    format!(
        "{yaml}\ntrusted_issuers:\n  - issuer: https://idp.test\n    jwks_uri: https://idp.test/jwks\n"
    )
}

/// The `## Claim` section of `md`.
fn claim_section(md: &str) -> &str {
    let start = md.find("## Claim\n").unwrap();
    let end = md[start..].find("\n## Get an access token").unwrap();
    &md[start..start + end]
}

#[test]
fn auth_md_never_tells_an_agent_to_claim_itself() {
    let token_alone = EXAMPLE.replace(REQUIRED, "require_identity_to_claim: false");
    assert_ne!(token_alone, *EXAMPLE);
    for yaml in [
        EXAMPLE.clone(),
        with_issuer(&EXAMPLE),
        token_alone.clone(),
        with_issuer(&token_alone),
    ] {
        let md = auth_md_of(&yaml);
        for words in ["\"claim_token\": \"", "claim it yourself", "or claim it"] {
            assert!(!md.contains(words), "{words:?} in\n{md}");
        }
    }
}

#[test]
fn without_a_trusted_issuer_no_claim_step_is_described() {
    let md = auth_md_of(&EXAMPLE);
    let claim = claim_section(&md);
    assert!(
        claim.contains("Claiming is not available on this deployment")
            && claim.contains("keeps the `free` tier"),
        "{claim}"
    );
    assert!(!md.contains("claim_url"), "{md}");
    assert!(!md.contains("/agent/auth/claim"), "{md}");
}

#[test]
fn with_a_trusted_issuer_the_agent_claims_with_an_identity_assertion() {
    let md = auth_md_of(&with_issuer(&EXAMPLE));
    let claim = claim_section(&md);
    assert!(
        claim.contains("`{\"registration_id\": \"...\", \"identity_assertion\": \"<ID-JAG>\"}`")
            && claim.contains("from a trusted issuer (`https://idp.test`)"),
        "{claim}"
    );
    assert!(!claim.contains("claim_token"), "{claim}");
}

#[test]
fn with_the_token_alone_the_operator_opens_the_claim_url() {
    let md = auth_md_of(&EXAMPLE.replace(REQUIRED, "require_identity_to_claim: false"));
    let claim = claim_section(&md);
    assert!(
        claim.contains("Give the `claim_url` to your operator, who opens it and confirms")
            && claim.contains("Do not open it or send its `claim_token` yourself"),
        "{claim}"
    );
    assert!(!claim.contains("identity_assertion"), "{claim}");
}
