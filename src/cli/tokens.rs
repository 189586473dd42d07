//! `authmd-proxy tokens`: the keys that sign the proxy's access tokens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use authmd_proxy::clock::unix_now;
use authmd_proxy::config::SigningSource;
use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey, SigningKeys};
use clap::Subcommand;
use zeroize::Zeroizing;

use super::source::Source;
use super::{EX_USAGE, fail, out, warn};

/// The `tokens` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Print a new PKCS#8 PEM signing key, or write it to a file of mode 0600 with
    /// `--out` (for `tokens.signing_keys`, e.g. a Kubernetes Secret shared by every
    /// replica).
    #[command(name = "generate-key")]
    GenerateKey {
        /// `EdDSA` (Ed25519) or `ES256` (P-256).
        #[arg(long, default_value = "EdDSA")]
        algorithm: String,
        /// Write the key to this new file, readable by its owner only (mode 0600),
        /// instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace the `--out` file if it exists.
        #[arg(long, requires = "out")]
        force: bool,
    },
    /// Start signing with a new key in the managed directory; the old key keeps
    /// verifying until its tokens expire, and keys no token needs are deleted.
    /// A proxy running on the same data directory signs with the new key from its
    /// next config poll (`server.watch_interval`) or SIGHUP, no restart needed.
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
        TokensCommand::GenerateKey {
            algorithm,
            out,
            force,
        } => generate_key(&algorithm, out.as_deref(), force),
        TokensCommand::RotateKey { source } => rotate_key(&source),
    }
}

fn generate_key(algorithm: &str, file: Option<&Path>, force: bool) -> ExitCode {
    let algorithm = match algorithm {
        "EdDSA" => SigningAlgorithm::EdDsa,
        "ES256" => SigningAlgorithm::Es256,
        other => return fail(&format!("`{other}` is not `EdDSA` or `ES256`"), EX_USAGE),
    };
    let pem = match SigningKey::generate(algorithm) {
        Ok((_, pem)) => Zeroizing::new(pem),
        Err(error) => return fail(&error.to_string(), 1),
    };
    let Some(file) = file else {
        // A shell redirection makes the file with the umask's mode, 0644 as a rule:
        // readable by every user of the machine.
        warn(
            "this is a private key: a file holding it should be readable by its owner only \
             (chmod 0600), which `--out FILE` does",
        );
        return out(&pem);
    };
    match write_private(file, &pem, force) {
        Ok(()) => out(&format!(
            "{}: signing key written (mode 0600)\n",
            file.display()
        )),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => fail(
            &format!(
                "{} exists; `--force` replaces it (tokens it signed stop verifying)",
                file.display()
            ),
            EX_USAGE,
        ),
        Err(error) => fail(&format!("cannot write {}: {error}", file.display()), 1),
    }
}

/// Writes `text` to a new file that only its owner may read. With `force`, an
/// existing file is removed first, so the key never lands in a file made with
/// looser permissions.
fn write_private(path: &Path, text: &str, force: bool) -> std::io::Result<()> {
    if force {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
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
