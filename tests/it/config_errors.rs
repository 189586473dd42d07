//! Config errors as an operator meets them: `authmd-proxy check --config FILE` run
//! on a broken file exits 64 and prints one `file:line:column: field: message` line
//! per problem, every problem at once, each saying what the field expects, and
//! never a value that came from the environment.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");

/// What `check` printed on stderr for `yaml`, with the file's name replaced by
/// `FILE`; asserts the exit code is 64. `env` is given to the child process only.
fn check_fails(yaml: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut command = Command::new(BIN);
    command.args(["check", "--config", path.to_str().unwrap()]);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    format!("{stdout}{stderr}").replace(path.to_str().unwrap(), "FILE")
}

fn assert_lines(output: &str, expected: &[&str]) {
    for line in expected {
        assert!(output.contains(line), "missing {line:?} in\n{output}");
    }
}

#[test]
fn an_integer_for_the_upstream_names_the_field_and_the_type_expected() {
    let output = check_fails("upstream: 3000\n", &[]);
    assert_lines(
        &output,
        &[
            "FILE:1:1: upstream: expected a mapping such as `{url: http://127.0.0.1:3000}`, found integer `3000`",
        ],
    );
    assert!(!output.contains("missing section"), "{output}");

    let output = check_fails("upstream:\n  url: 3000\n", &[]);
    assert_lines(
        &output,
        &["FILE:2:3: upstream.url: expected a string, found integer `3000`"],
    );
    assert!(!output.contains("missing section"), "{output}");
    assert!(output.contains("1 problem(s)"), "{output}");
}

#[test]
fn durations_out_of_their_range_are_refused_with_the_range() {
    let yaml = "\
upstream:
  url: http://127.0.0.1:3000
  connect_timeout: 0s
  response_timeout: 1y
server:
  shutdown_grace: 99999999999h
  header_read_timeout: 1ms
tokens:
  ttl: 1y
registration:
  claim_ttl: 1s
store:
  resync_interval: 0s
limits:
  quota_flush: 1h
discovery:
  max_age: 1y
";
    let output = check_fails(yaml, &[]);
    assert_lines(
        &output,
        &[
            "FILE:3:3: upstream.connect_timeout: `0s` is out of range: must be from 1ms to 5m",
            "FILE:4:3: upstream.response_timeout: `1y` is out of range: must be from 1ms to 1h",
            "FILE:6:3: server.shutdown_grace: `99999999999h` is out of range: must be at most 1h",
            "FILE:7:3: server.header_read_timeout: `1ms` is out of range: must be from 100ms to 10m",
            "FILE:9:3: tokens.ttl: `1y` is out of range: must be from 10s to 1day",
            "FILE:11:3: registration.claim_ttl: `1s` is out of range: must be from 1m to 30days",
            "FILE:13:3: store.resync_interval: `0s` is out of range: must be from 100ms to 1day",
            "FILE:15:3: limits.quota_flush: `1h` is out of range: must be from 100ms to 5m",
            "FILE:17:3: discovery.max_age: `1y` is out of range: must be at most 7days",
        ],
    );
}

#[test]
fn a_bad_value_from_the_environment_says_why_without_showing_it() {
    let yaml = "\
listen: 127.0.0.1:${PORT}
upstream:
  url: http://127.0.0.1:3000
  connect_timeout: ${CONNECT_TIMEOUT}
server:
  max_streams: ${STREAMS}
";
    let secrets = [
        ("PORT", "hunter2-port-s3cret"),
        ("CONNECT_TIMEOUT", "hunter2-timeout-s3cret"),
        ("STREAMS", "hunter2-streams-s3cret"),
    ];
    let output = check_fails(yaml, &secrets);
    assert_lines(
        &output,
        &[
            "FILE:1:1: listen: the value from the environment (not shown) is not an address: its port is not a number between 0 and 65535",
            "FILE:4:3: upstream.connect_timeout: the value from the environment (not shown) is not a duration",
            "FILE:6:3: server.max_streams: expected a whole number from 0 to 4294967295, found the value from the environment (not shown)",
        ],
    );
    assert!(!output.contains("hunter2"), "a secret leaked:\n{output}");
    assert!(!output.contains("s3cret"), "a secret leaked:\n{output}");
}

#[test]
fn an_unknown_tier_lists_the_known_ones() {
    let yaml = "\
upstream: {url: http://127.0.0.1:3000}
tiers:
  - name: free
  - name: pro
routes:
  - path: /a
    min_tier: pros
  - path: /b
    min_tier: gold
";
    let output = check_fails(yaml, &[]);
    assert_lines(
        &output,
        &[
            "FILE:7:5: routes[0].min_tier: unknown tier `pros`; did you mean `pro`? (known: `anonymous`, `free`, `pro`)",
            "FILE:9:5: routes[1].min_tier: unknown tier `gold` (known: `anonymous`, `free`, `pro`)",
        ],
    );
}

#[test]
fn every_problem_of_a_route_is_reported_at_once() {
    let yaml = "\
upstream: {url: http://127.0.0.1:3000}
scopes:
  offers:read: Read offers
tiers:
  - name: free
routes:
  - id: authmd.mine
    path: /a
    methods: [GTE]
    scopes: [ofers:read, nope]
    min_tier: fre
";
    let output = check_fails(yaml, &[]);
    assert_lines(
        &output,
        &[
            "FILE:7:5: routes[0].id: route id `authmd.mine`",
            "FILE:9:15: routes[0].methods[0]: `GTE` is not an HTTP method",
            "FILE:10:14: routes[0].scopes[0]: unknown scope `ofers:read`; did you mean `offers:read`? (declared: `offers:read`)",
            "FILE:10:26: routes[0].scopes[1]: unknown scope `nope` (declared: `offers:read`)",
            "FILE:11:5: routes[0].min_tier: unknown tier `fre`; did you mean `free`?",
            "5 problem(s)",
        ],
    );
}
