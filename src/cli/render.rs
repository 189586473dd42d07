//! `authmd-proxy render`: print a document the proxy generates.

use std::path::PathBuf;
use std::process::ExitCode;

use authmd_proxy::config::{Config, Overrides};
use clap::Subcommand;

use super::{EX_USAGE, fail, out, warn};

/// The documents `render` prints.
#[derive(Debug, Subcommand)]
pub(crate) enum RenderCommand {
    /// The auth.md the proxy serves at `/auth.md` (for the primary public URL).
    #[command(name = "auth-md")]
    AuthMd {
        /// The YAML config file.
        #[arg(long, short, env = "AUTHMD_CONFIG")]
        config: PathBuf,
        /// Public base URL, overriding `public_url`.
        #[arg(long)]
        public_url: Option<String>,
    },
}

/// Prints the document, or the config's problems (exit 64).
pub(crate) fn render(command: RenderCommand) -> ExitCode {
    match command {
        RenderCommand::AuthMd { config, public_url } => {
            let overrides = Overrides {
                public_url,
                ..Overrides::default()
            };
            match Config::load(&config, &overrides) {
                Ok(config) => {
                    for warning in &config.warnings {
                        warn(warning);
                    }
                    let text = config.discovery.auth_md.clone().unwrap_or_else(|| {
                        authmd_proxy::discovery::auth_md::render(&config, &config.public_url)
                    });
                    out(&text)
                }
                Err(errors) => fail(&errors.to_string(), EX_USAGE),
            }
        }
    }
}
