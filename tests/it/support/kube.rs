//! The offline Kubernetes schema validator, `kubernetes-validate` from PyPI.
#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "test support: a failed step should fail the test loudly"
)]

use std::ffi::OsStr;
use std::process::Command;

/// Names the validator; CI sets it, and then it must run.
const VALIDATE_ENV: &str = "AUTHMD_KUBE_VALIDATE";

/// The validator: `AUTHMD_KUBE_VALIDATE`, else `kubernetes-validate` on the PATH.
/// None (the caller skips) when it is missing and the variable is not set; a panic
/// when the variable is set but names nothing that runs.
pub fn validator() -> Option<String> {
    let configured = std::env::var(VALIDATE_ENV).ok();
    let candidate = configured
        .clone()
        .unwrap_or_else(|| "kubernetes-validate".into());
    let found = Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(candidate);
    }
    assert!(
        configured.is_none(),
        "{VALIDATE_ENV} is set but does not run"
    );
    eprintln!("skipped: kubernetes-validate is not installed (pip install kubernetes-validate)");
    None
}

/// Validates `files` strictly (unknown fields are errors) against Kubernetes 1.33;
/// whether they all passed, and the report.
pub fn validate<F: AsRef<OsStr>>(validator: &str, files: &[F]) -> (bool, String) {
    let out = Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.33"])
        .args(files)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && !report.contains("ERROR"), report)
}
