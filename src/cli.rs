//! The commands of the `authmd-proxy` binary, one module per command group, and
//! what they share: how a command prints its answer or its failure, its runtime,
//! and the log setup of the two that serve.

use std::io::Write;
use std::process::ExitCode;

pub(crate) mod check;
pub(crate) mod health;
pub(crate) mod inject;
pub(crate) mod keys;
pub(crate) mod login;
pub(crate) mod render;
pub(crate) mod run;
pub(crate) mod source;
pub(crate) mod tokens;

/// Exit status for a bad configuration or usage (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

/// Writes a command's answer to standard output.
fn out(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Writes why a command failed to standard error, and exits with `code`.
fn fail(message: &str, code: u8) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "authmd-proxy: {message}");
    ExitCode::from(code)
}

/// Writes a warning to standard error; the command goes on.
fn warn(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "authmd-proxy: warning: {message}");
}

/// A single-threaded runtime for a command, or the exit code of its failure.
fn current_thread() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| fail(&format!("cannot start the runtime: {error}"), 1))
}

/// Logs to standard error at `level` (unless `RUST_LOG` says otherwise), as JSON
/// lines when `json` is set.
fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
