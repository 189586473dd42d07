//! The commented-out `limits.global` block of `config.example.yaml`: uncommented
//! as its comment says, it loads; it names every setting; and every value it shows
//! is the default the loader applies when the setting is left out. So the example
//! cannot drift from the loader without this failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use authmd_proxy::config::{Config, Overrides};

use crate::support::commented::uncomment;

const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"));

/// Every setting of `limits.global` (and of its `breaker`).
const SETTINGS: &[&str] = &[
    "backend",
    "url",
    "nodes",
    "cluster",
    "ca_file",
    "timeout",
    "mode",
    "max_lease",
    "lease_ttl",
    "on_unavailable",
    "breaker",
    "failures",
    "cooldown",
    "heartbeat",
    "key_prefix",
    "quotas",
    "quota_batch",
];

/// A password-bearing URL, as a deployment's `REDIS_URL` would be.
const URL: &str = "redis://:hunter2hunter2@redis.example.invalid:6379/0";

fn load(text: &str) -> Config {
    let env = |name: &str| (name == "REDIS_URL").then(|| URL.to_owned());
    Config::from_yaml_str(text, "config.example.yaml", &Overrides::default(), &env)
        .unwrap_or_else(|errors| panic!("{errors}"))
}

/// The lines of the uncommented block: `  global:` and the lines under it.
fn block(text: &str) -> Vec<&str> {
    let start = text
        .lines()
        .position(|l| l == "  global:")
        .expect("the uncommented block");
    text.lines()
        .skip(start)
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("    "))
        .map(|(_, l)| l)
        .collect()
}

#[test]
fn the_commented_global_block_loads_names_every_setting_and_shows_the_defaults() {
    // As shipped, the example has no fleet-wide limits.
    assert_eq!(load(EXAMPLE).limits.global, None);

    let enabled = uncomment(EXAMPLE, "global");
    let lines = block(&enabled);
    assert!(lines.len() > SETTINGS.len() / 2, "{lines:?}");
    for setting in SETTINGS {
        assert!(
            lines.iter().any(
                |l| l.contains(&format!(" {setting}:")) || l.contains(&format!("{{{setting}:"))
            ),
            "`{setting}` is not in the example's limits.global block: {lines:?}"
        );
    }
    let shown = load(&enabled)
        .limits
        .global
        .expect("the uncommented block is limits.global");

    // The same config with only the URL: what the loader fills in.
    let mut minimal = String::new();
    let mut skipped = 0;
    for line in enabled.lines() {
        let keep =
            !lines.contains(&line) || line == "  global:" || line.trim_start().starts_with("url:");
        if keep {
            minimal.push_str(line);
            minimal.push('\n');
        } else {
            skipped += 1;
        }
    }
    assert!(skipped >= 10, "{skipped}");
    let defaults = load(&minimal).limits.global.expect("limits.global");
    assert_eq!(
        shown, defaults,
        "a value the example shows is not the default"
    );
    assert_eq!(shown.target.urls, [URL]);
    // The URL holds a password: never shown, not even in a debug print.
    assert!(!format!("{shown:?}").contains("hunter2"));
}
