//! `authmd-proxy tokens`: the keys that sign the proxy's access tokens.

use std::process::ExitCode;

use authmd_proxy::clock::unix_now;
use authmd_proxy::config::SigningSource;
use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey, SigningKeys};
use clap::Subcommand;

use super::source::Source;
use super::{EX_USAGE, fail, out};

/// The `tokens` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Print a new PKCS#8 PEM signing key (for `tokens.signing_keys`, e.g. a
    /// Kubernetes Secret shared by every replica).
    #[command(name = "generate-key")]
    GenerateKey {
        /// `EdDSA` (Ed25519) or `ES256` (P-256).
        #[arg(long, default_value = "EdDSA")]
        algorithm: String,
    },
    /// Start signing with a new key in the managed directory; the old key keeps
    /// verifying until its tokens expire, and keys no token needs are deleted.
    /// Running proxies pick the new key up when restarted.
    #[command(name = "rotate-key")]
    RotateKey {
        /// The config file and the data directory, as `run` takes them.
        #[command(flatten)]
        source: Source,
    },
}

/// Runs a `tokens` command.
pub(crate) fn tokens(command: TokensCommand) -> ExitCode {
    match command {
        TokensCommand::GenerateKey { algorithm } => generate_key(&algorithm),
        TokensCommand::RotateKey { source } => rotate_key(&source),
    }
}

fn generate_key(algorithm: &str) -> ExitCode {
    let algorithm = match algorithm {
        "EdDSA" => SigningAlgorithm::EdDsa,
        "ES256" => SigningAlgorithm::Es256,
        other => return fail(&format!("`{other}` is not `EdDSA` or `ES256`"), EX_USAGE),
    };
    match SigningKey::generate(algorithm) {
        Ok((_, pem)) => out(&pem),
        Err(error) => fail(&error.to_string(), 1),
    }
}

fn rotate_key(source: &Source) -> ExitCode {
    let config = match source.load() {
        Ok(config) => config,
        Err(errors) => return fail(&errors.to_string(), EX_USAGE),
    };
    let tokens = &config.tokens;
    let SigningSource::Dir(dir) = &tokens.signing else {
        return fail(
            "`tokens.signing_keys` names the keys: rotate by putting a new key first in that list",
            EX_USAGE,
        );
    };
    let ttl = i64::try_from(tokens.ttl.as_secs()).unwrap_or(3600);
    match SigningKeys::rotate_dir(dir, tokens.algorithm, ttl, unix_now()) {
        Ok((kid, pruned)) => {
            let mut text = format!("signing key: {kid}\n");
            for old in pruned {
                text.push_str(&format!("deleted: {old} (no live token needs it)\n"));
            }
            out(&text)
        }
        Err(error) => fail(&error.to_string(), 1),
    }
}
