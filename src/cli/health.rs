//! `authmd-proxy health`: the container image's health check, which asks a running
//! proxy's admin listener.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use authmd_proxy::server;
use clap::Args;

use super::{current_thread, fail, out};

/// The arguments of `health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// The admin listener's address (`0.0.0.0` means this host).
    #[arg(long, env = "AUTHMD_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// Ask `/readyz` instead of `/healthz`.
    #[arg(long)]
    ready: bool,
}

/// Exits 0 if the proxy answers `/healthz` (or `/readyz`) with a success, 1 if not.
pub(crate) fn health(args: &HealthArgs) -> ExitCode {
    const TIMEOUT: Duration = Duration::from_secs(3);
    let HealthArgs { admin, ready } = *args;
    let path = if ready { "/readyz" } else { "/healthz" };
    let runtime = match current_thread() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let answer = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, server::probe(admin, path))
            .await
            .unwrap_or_else(|_| Err(format!("{admin}{path}: no answer within {TIMEOUT:?}")))
    });
    match answer {
        Ok(status) if status.is_success() => out(&format!("{path}: {status}\n")),
        Ok(status) => fail(&format!("{path}: {status}"), 1),
        Err(message) => fail(&message, 1),
    }
}
