//! `authmd-proxy check`: validate a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use authmd_proxy::config::{Config, Overrides};
use clap::Args;

use super::{EX_USAGE, fail, out, warn};

/// The arguments of `check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The YAML config file.
    #[arg(long, short, env = "AUTHMD_CONFIG")]
    config: PathBuf,
}

/// Exits 0 with a summary (and any warnings on standard error), or prints every
/// problem and exits 64.
pub(crate) fn check(args: &CheckArgs) -> ExitCode {
    let path = &args.config;
    match Config::load(path, &Overrides::default()) {
        Ok(config) => {
            let file = path.display().to_string();
            for warning in &config.warnings {
                warn(&warning.in_file(&file));
            }
            out(&format!(
                "{file}: ok ({} routes, {} scopes, {} keys{})\n",
                config.route_count(),
                config.scopes.len(),
                config.keys.len(),
                match config.warnings.len() {
                    0 => String::new(),
                    n => format!(", {n} warning(s)"),
                }
            ))
        }
        Err(errors) => {
            let count = errors.errors.len();
            fail(
                &format!("{errors}\n{count} problem(s) in {}", path.display()),
                EX_USAGE,
            )
        }
    }
}
