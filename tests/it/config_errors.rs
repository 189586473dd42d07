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
