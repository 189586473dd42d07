//! What the generated auth.md tells agents about scopes and limits, where a wrong
//! sentence would send an agent the wrong way: a wildcard must be declared before it
//! can be asked for, and rate windows are per instance when several share a store.

#![allow(clippy::unwrap_used, reason = "tests: a failed step fails the test")]

use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::discovery::auth_md;

const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"));

fn auth_md_of(yaml: &str) -> String {
    let config =
        Config::from_yaml_str(yaml, "test.yaml", &Overrides::default(), &|_| None).unwrap();
    auth_md::render(&config, &config.public_url)
}

#[test]
fn a_wildcard_is_explained_as_needing_its_declaration() {
    let md = auth_md_of(EXAMPLE);
    assert!(
        md.contains("cannot be asked for unless it is declared"),
        "{md}"
    );
}

#[test]
fn rate_windows_are_said_to_be_per_instance_only_with_a_shared_store() {
    let single = auth_md_of(EXAMPLE);
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
