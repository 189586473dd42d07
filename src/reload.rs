//! Config hot reload: on SIGHUP, and when the config file's content changes; and on
//! the same poll, the token signing keys when their files change.
//!
//! The file is polled (its BLAKE3 hash every `server.watch_interval`) rather than
//! watched with inotify: Kubernetes updates a mounted ConfigMap by swapping a
//! `..data` symlink, which a watch on the file misses, while a content hash sees
//! every kind of update (an edit in place, a rename over it, a symlink swap) with
//! one code path and no platform differences. Reading a small file every two
//! seconds costs nothing measurable.
//!
//! A new config is validated in full and then swapped in atomically
//! ([`Gateway::reload`]); an invalid one is refused with a log line and the
//! `authmd_config_reloads_total{outcome="failure"}` metric, and the old one keeps
//! serving. Settings bound at start (listen addresses, TLS files, the store,
//! worker threads, the limiter's size) are reported and keep their old values
//! until a restart.
//!
//! When the config itself is not reloaded, each poll also looks at the token signing
//! key files ([`Gateway::refresh_signing_keys`]: names, sizes, modification times,
//! inodes), so that `authmd-proxy tokens rotate-key` or an updated Secret signs the
//! next token without a signal; a reloaded config reads them anyway.

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::unix_now;
use crate::config::{Config, Overrides};
use crate::gateway::Gateway;

/// Reloads one gateway's config from its file.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    overrides: Overrides,
    gateway: Arc<Gateway>,
    /// The hash of the file content last seen (loaded or refused), so a refused
    /// file is reported once, not at every poll.
    seen: tokio::sync::Mutex<blake3::Hash>,
}

/// Why a config was not put in service.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The config is invalid (every problem, with file and line).
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigErrors),
    /// The gateway could not be built from it.
    #[error("{0}")]
    Start(#[from] crate::gateway::StartError),
}

/// The hash a config file's content is known by (in `authmd_config_info`).
#[must_use]
pub fn short_hash(hash: &blake3::Hash) -> String {
    hash.to_hex()[..16].to_owned()
}

impl Reloader {
    /// A reloader for `gateway`, whose config was loaded from `path` with
    /// `overrides`, the file then hashing to `loaded`.
    #[must_use]
    pub fn new(
        path: PathBuf,
        overrides: Overrides,
        gateway: Arc<Gateway>,
        loaded: blake3::Hash,
    ) -> Reloader {
        gateway
            .metrics()
            .config_loaded(&short_hash(&loaded), unix_now(), false);
        Reloader {
            path,
            overrides,
            gateway,
            seen: tokio::sync::Mutex::new(loaded),
        }
    }

    /// Reloads the file if its content changed (or always, when `forced`: a SIGHUP
    /// may be about a file the config names, such as an auth.md). Returns whether a
    /// new config is in service.
    pub async fn reload(&self, forced: bool) -> Result<bool, ReloadError> {
        let mut seen = self.seen.lock().await;
        let file = self.path.display().to_string();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            // Mid-swap, the file may be briefly missing: the next poll sees it.
            Err(source) if !forced => {
                tracing::debug!(%source, file, "config file not readable; will look again");
                return Ok(false);
            }
            Err(source) => {
                self.gateway.metrics().config_reload_failed();
                return Err(ReloadError::Read { file, source });
            }
        };
        let hash = blake3::hash(text.as_bytes());
        if hash == *seen && !forced {
            return Ok(false);
        }
        *seen = hash;
        let result = match Config::from_yaml_str(&text, &file, &self.overrides, &|name| {
            std::env::var(name).ok()
        }) {
            Ok(config) => {
                for warning in &config.warnings {
                    tracing::warn!("{warning}");
                }
                self.warn_restart_only(&config);
                self.gateway.reload(config).await.map_err(ReloadError::from)
            }
            Err(errors) => Err(ReloadError::from(errors)),
        };
        let metrics = self.gateway.metrics();
        match result {
            Ok(()) => {
                let hash = short_hash(&hash);
                metrics.config_loaded(&hash, unix_now(), true);
                tracing::info!(file, hash, "config reloaded");
                Ok(true)
            }
            Err(error) => {
                metrics.config_reload_failed();
                Err(error)
            }
        }
    }

    /// Logs the changed settings that only a restart applies.
    fn warn_restart_only(&self, new: &Config) {
        let old = self.gateway.config();
        let mut changed = Vec::new();
        if old.listen != new.listen {
            changed.push("listen");
        }
        if old.admin_listen != new.admin_listen {
            changed.push("admin_listen");
        }
        if old.tls != new.tls {
            changed.push("tls");
        }
        if old.lifecycle.store != new.lifecycle.store {
            changed.push("store");
        }
        if old.server.worker_threads != new.server.worker_threads {
            changed.push("server.worker_threads");
        }
        if old.limits.max_principals != new.limits.max_principals
            || old.limits.quota_flush != new.limits.quota_flush
        {
            changed.push("limits.max_principals / limits.quota_flush");
        }
        if old.limits.global != new.limits.global {
            changed.push("limits.global");
        }
        if !changed.is_empty() {
            tracing::warn!(
                settings = changed.join(", "),
                "these settings changed but take effect only at a restart"
            );
        }
    }

    /// Reloads on SIGHUP and, every `server.watch_interval` (as configured at
    /// start), when the file changed. Runs until aborted.
    pub async fn run(self: Arc<Self>) {
        let interval = self.gateway.config().server.watch_interval;
        let mut hangups = hangups();
        let mut tick = interval.map(|every| {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        loop {
            let forced = tokio::select! {
                () = next_hangup(&mut hangups) => true,
                () = next_tick(&mut tick) => false,
            };
            let reloaded = match self.reload(forced).await {
                Ok(reloaded) => reloaded,
                Err(error) => {
                    tracing::warn!("config reload refused; the running config stays:\n{error}");
                    false
                }
            };
            if !reloaded {
                self.refresh_signing_keys().await;
            }
        }
    }

    /// Reads the token signing keys again if their files changed, and logs what
    /// came of it; true when new keys are in use.
    pub async fn refresh_signing_keys(&self) -> bool {
        match self.gateway.refresh_signing_keys().await {
            Ok(Some(kid)) => {
                tracing::info!(
                    kid,
                    "token signing keys reloaded; new tokens are signed with this key"
                );
                true
            }
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(%error, "token signing keys not reloaded; the keys in use stay until the files change again");
                false
            }
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

async fn next_hangup(hangups: &mut Hangups) {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        if signal.recv().await.is_some() {
            return;
        }
    }
    let _ = hangups;
    std::future::pending::<()>().await;
}

async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}
