//! The operational sections: `tls`, `upstream.tls`, `upstream.health_check` and
//! `log.access`.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawTls, RawUpstreamTls};
use super::{HealthCheck, Loader, TlsSettings, UpstreamTarget, UpstreamTls};

impl Loader {
    /// `tls:`. The files must be readable now; their contents are checked when the
    /// listener starts (and on every reload, which keeps the old certificate when
    /// the new one is not valid).
    pub(super) fn tls(&mut self, raw: RawTls) -> TlsSettings {
        let before = self.errors.len();
        let cert_file = self.readable(&raw.cert_file, "tls.cert_file");
        let key_file = self.readable(&raw.key_file, "tls.key_file");
        let client_ca_file = raw
            .client_ca_file
            .map(|file| self.readable(&file, "tls.client_ca_file"));
        if self.errors.len() == before {
            // Checked now, so that `authmd-proxy check` and a reload catch a bad
            // certificate, key or CA before anything serves with it.
            let files = crate::tls::ServerFiles {
                cert: cert_file.clone(),
                key: key_file.clone(),
                client_ca: client_ca_file.clone(),
            };
            if let Err(error) = crate::tls::ServerTls::load(files) {
                self.error("tls", error.to_string());
            }
        }
        TlsSettings {
            cert_file,
            key_file,
            client_ca_file,
            reload_interval: self.duration(
                raw.reload_interval,
                "tls.reload_interval",
                Duration::from_secs(10),
            ),
        }
    }

    pub(super) fn upstream_tls(
        &mut self,
        raw: Option<RawUpstreamTls>,
        target: Option<&UpstreamTarget>,
    ) -> UpstreamTls {
        let Some(raw) = raw else {
            return UpstreamTls::default();
        };
        let https = matches!(target, Some(UpstreamTarget::Http { scheme, .. }) if scheme == &http::uri::Scheme::HTTPS);
        if !https {
            self.error(
                "upstream.tls",
                "`upstream.tls` needs an `https://` upstream url",
            );
        }
        if raw.cert_file.is_some() != raw.key_file.is_some() {
            let missing = if raw.cert_file.is_some() {
                "upstream.tls.key_file"
            } else {
                "upstream.tls.cert_file"
            };
            self.error(
                missing,
                "a client certificate needs both `cert_file` and `key_file`",
            );
        }
        UpstreamTls {
            ca_file: raw
                .ca_file
                .map(|f| self.readable(&f, "upstream.tls.ca_file")),
            cert_file: raw
                .cert_file
                .map(|f| self.readable(&f, "upstream.tls.cert_file")),
            key_file: raw
                .key_file
                .map(|f| self.readable(&f, "upstream.tls.key_file")),
        }
    }

    pub(super) fn health_check(&mut self, raw: Option<&str>) -> HealthCheck {
        match raw {
            None | Some("none") => HealthCheck::None,
            Some("tcp") => HealthCheck::Tcp,
            Some(path) if path.starts_with('/') && path.parse::<http::Uri>().is_ok() => {
                HealthCheck::Http(path.to_owned())
            }
            Some(other) => {
                self.error(
                    "upstream.health_check",
                    format!("`{other}` is not `none`, `tcp` or a path such as `/healthz`"),
                );
                HealthCheck::None
            }
        }
    }

    pub(super) fn access_level(&mut self, raw: Option<&str>) -> Option<tracing::Level> {
        match raw {
            None => Some(tracing::Level::DEBUG),
            Some("off") => None,
            Some(text) => match text.parse::<tracing::Level>() {
                Ok(level) => Some(level),
                Err(_) => {
                    self.error(
                        "log.access",
                        format!(
                            "`{text}` is not `off`, `error`, `warn`, `info`, `debug` or `trace`"
                        ),
                    );
                    None
                }
            },
        }
    }

    /// A file named in the config, resolved against the config's directory; an
    /// error at `path` when it cannot be read.
    fn readable(&mut self, file: &str, path: &str) -> PathBuf {
        let resolved = self.resolve(file);
        if let Err(e) = std::fs::metadata(&resolved).and_then(|m| {
            if m.is_file() {
                std::fs::File::open(&resolved).map(drop)
            } else {
                Err(std::io::Error::other("not a file"))
            }
        }) {
            self.error(path, format!("cannot read `{}`: {e}", resolved.display()));
        }
        resolved
    }
}
