//! Running the third-party Node clients of `tests/clients` (installed with
//! `npm ci --prefix tests/clients`): without Node or the packages a test says
//! "skipped" and passes, unless `AUTHMD_REQUIRE_NODE_CLIENTS` is set (as CI does).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

const REQUIRE: &str = "AUTHMD_REQUIRE_NODE_CLIENTS";
const INSTALL: &str = "npm ci --prefix tests/clients";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Why the Node clients cannot run here, if they cannot.
async fn missing_prerequisite(packages: &[&str]) -> Option<String> {
    let version = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    match version {
        Ok(output) if output.status.success() => {}
        Ok(output) => return Some(format!("`node --version` failed: {}", output.status)),
        Err(e) => return Some(format!("`node` is not runnable ({e})")),
    }
    packages
        .iter()
        .map(|package| root().join("tests/clients/node_modules").join(package))
        .find(|dir| !dir.join("package.json").is_file())
        .map(|dir| format!("{} is not installed", dir.display()))
}

/// True when Node and `packages` are installed; otherwise says the test is skipped
/// (or fails it, when `AUTHMD_REQUIRE_NODE_CLIENTS` is set).
pub async fn ready(packages: &[&str]) -> bool {
    let Some(why) = missing_prerequisite(packages).await else {
        return true;
    };
    assert!(
        std::env::var_os(REQUIRE).is_none(),
        "{REQUIRE} is set but {why}: run `{INSTALL}` (with Node.js on PATH) first"
    );
    eprintln!("skipped: {why}; run `{INSTALL}` to check the third-party clients");
    false
}

/// Runs `node <script> <args...>` from the project root and returns its one-line
/// JSON summary, asserting that it says ok.
pub async fn run(script: &str, args: &[&str]) -> serde_json::Value {
    let mut command = Command::new("node");
    // Loopback only: never through a proxy, even where Node honours the env's.
    command
        .arg(script)
        .args(args)
        .env_remove("NODE_USE_ENV_PROXY");
    super::script::run_json(
        command,
        &format!("node {script} {args:?}"),
        Duration::from_secs(120),
    )
    .await
}
