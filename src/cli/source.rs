//! Where a command finds its config and its store: the `--config` and
//! `--data-dir` flags, with their environment variables, that `run` and every
//! command that opens the store share. One definition, so that `keys create` under
//! `AUTHMD_DATA_DIR` (as in the container image and an injected sidecar) writes to
//! the very store the proxy serves from.

use std::path::PathBuf;

use authmd_proxy::config::{Config, ConfigErrors, Overrides};
use clap::Args;

/// The config file and the data directory of a command.
#[derive(Debug, Args)]
pub(crate) struct Source {
    /// The YAML config file.
    #[arg(long, short, env = "AUTHMD_CONFIG")]
    pub(crate) config: PathBuf,
    /// Data directory of the SQLite store and the managed signing keys, overriding
    /// `store.data_dir`.
    #[arg(long, env = "AUTHMD_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

impl Source {
    /// The overrides these flags make (the data directory; nothing else).
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            ..Overrides::default()
        }
    }

    /// Reads and validates the config, with the data directory overridden.
    pub(crate) fn load(&self) -> Result<Config, ConfigErrors> {
        Config::load(&self.config, &self.overrides())
    }
}
