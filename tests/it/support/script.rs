//! Running a third-party client script (Node, Python) that prints one JSON line
//! summing up what it did: from the project root, loopback never through a proxy
//! of the environment, killed at its deadline.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

/// Runs `command` (its program, arguments and environment set by the caller)
/// and returns its summary, asserting that it exited 0 and says `"ok": true`.
/// `what` names it in failures.
pub async fn run_json(mut command: Command, what: &str, within: Duration) -> Value {
    let child = command
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let output = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {within:?}"))
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{what} did not print one JSON line ({e}, {status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            status = output.status
        )
    });
    assert!(
        output.status.success() && summary["ok"] == true,
        "{what} failed ({status}): {summary}\n--- stderr\n{stderr}",
        status = output.status
    );
    eprintln!("{}", stdout.trim());
    summary
}
