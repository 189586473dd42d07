//! The `login:` section's refusals as an operator meets them at `authmd-proxy
//! check`: two providers with one id, a malformed argon2 hash, static accounts on
//! an origin that is not loopback (off, with a warning), no cookie key with a
//! shared store, a tier rule
//! naming an unknown tier, sign-in on plain http; each with its place in the file,
//! and never a secret.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step fails the test"
)]

use std::process::Command;

use authmd_proxy::config::{Config, Overrides};

use crate::login::{COOKIE_KEY, static_demo, yaml};

/// What `authmd-proxy check` says of `yaml` (which must fail).
fn check_fails(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authmd-proxy"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(64), "{text}");
    text.replace(path.to_str().unwrap(), "FILE")
}

#[test]
fn check_refuses_what_would_make_sign_in_unsafe_or_ambiguous() {
    let demo = static_demo();
    let oidc_corp = "    - id: corp
      kind: oidc
      issuer: https://login.example.com
      client_id: authmd
      client_secret: not-shown-anywhere
";
    let public = |yaml: String| format!("{yaml}\npublic_url: https://api.example.com\n");

    let twice = check_fails(&yaml(&format!(
        "{demo}{}",
        demo.replace("Demo accounts", "Again")
    )));
    assert!(
        twice.contains("login.providers[1].id: `demo` is the id of another provider"),
        "{twice}"
    );

    let malformed = check_fails(&yaml(&demo.replacen(
        "$argon2id$v=19$m=256",
        "$argon2id$v=19$m=oops",
        1,
    )));
    assert!(
        malformed.contains(
            "login.providers[0].users[0]: `password_hash` has argon2 parameters out of range"
        ) || malformed.contains("login.providers[0].users[0]: `password_hash` is not a PHC string"),
        "{malformed}"
    );
    assert!(
        malformed.contains("FILE:"),
        "with the place in the file: {malformed}"
    );

    // Behind a public URL, static accounts are off (a warning), and with no other
    // provider nobody signs in.
    let exposed = config_from(&public(yaml(&demo))).unwrap();
    assert!(
        exposed.warnings.iter().any(|w| w.contains("login.providers[0].kind: static accounts are for trying things out on loopback, and `https://api.example.com` is not loopback, so this provider is off")),
        "{:?}",
        exposed.warnings
    );
    assert!(!exposed.login.enabled());
    let allowed = public(yaml(&demo.replace(
        "kind: static",
        "kind: static\n      allow_non_loopback: true",
    )));
    assert!(config_from(&allowed).is_ok());

    let shared = check_fails(
        &public(yaml(oidc_corp))
            .replace(&format!("  cookie_key: {COOKIE_KEY}\n"), "")
            .replace(
                "  kind: sqlite ",
                "  url: \"postgres://authmd@db.internal/authmd\"\n  kind: postgres ",
            )
            .replace("  data_dir: data ", "  # data_dir: data "),
    );
    assert!(
        shared.contains(
            "login.cookie_key: with `store.kind: postgres` the replicas must share one cookie key"
        ),
        "{shared}"
    );

    let tier = check_fails(
        &yaml(oidc_corp).replace("{org: acme, tier: verified}", "{org: acme, tier: gold}"),
    );
    assert!(
        tier.contains("login.tiers.rules[1].tier: unknown tier `gold`"),
        "{tier}"
    );

    let plain = check_fails(&(yaml(oidc_corp) + "public_url: http://api.example.com\n"));
    assert!(plain.contains("must be an https origin"), "{plain}");
    let exposed = exposed.warnings.join("\n");
    for text in [&twice, &malformed, &exposed, &shared, &tier, &plain] {
        assert!(!text.contains("not-shown-anywhere"), "{text}");
        assert!(!text.contains(COOKIE_KEY), "{text}");
    }
}

fn config_from(yaml: &str) -> Result<Config, authmd_proxy::config::ConfigErrors> {
    Config::from_yaml_str(yaml, "test.yaml", &Overrides::default(), &|_| None)
}
