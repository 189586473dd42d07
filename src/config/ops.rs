//! The operational sections: `server`, `tls`, `upstream` and `log`: how the proxy
//! listens, where it forwards, and what it logs.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use http::uri::Scheme;

use super::load::Loader;
use super::raw::{self, RawLogFormat, RawTls, RawUpstreamTls};
use super::values::{DAY, HOUR, MILLISECOND, MINUTE};
pub use crate::proxy::{HealthCheck, RequestLimits, UpstreamSettings, UpstreamTarget, UpstreamTls};

/// `server:`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Runtime worker threads; 0 means one per core, 1 a single-threaded runtime.
    pub worker_threads: usize,
    /// How long a client may take to send request headers.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// How long the proxy keeps accepting after SIGTERM while `/readyz` fails, so
    /// that load balancers stop routing to it before it stops listening.
    pub shutdown_delay: Duration,
    /// How often the config file is checked for a change (`None`: never; SIGHUP
    /// always reloads).
    pub watch_interval: Option<Duration>,
    /// Open client connections at most; past it a new connection is closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
    /// What one request may carry before it is refused (414, 431, 413).
    pub request_limits: RequestLimits,
}

/// `tls:`: HTTPS on the proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// PEM private key.
    pub key_file: std::path::PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed.
    pub client_ca_file: Option<std::path::PathBuf>,
    /// How often the files are checked for a new certificate.
    pub reload_interval: Duration,
}

/// `log:`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A tracing filter, e.g. `info` or `authmd_proxy=debug`.
    pub level: String,
    /// JSON lines instead of text.
    pub json: bool,
    /// The level of the per-request access log line (target
    /// `authmd_proxy::access`); `None` for no access log.
    pub access: Option<tracing::Level>,
}

impl Loader {
    /// `server:`.
    pub(super) fn server(&mut self, raw: raw::RawServer) -> ServerSettings {
        ServerSettings {
            worker_threads: raw.worker_threads.unwrap_or(0),
            header_read_timeout: self.duration(
                raw.header_read_timeout,
                "server.header_read_timeout",
                Duration::from_secs(10),
                MILLISECOND * 100..=MINUTE * 10,
            ),
            shutdown_grace: self.duration(
                raw.shutdown_grace,
                "server.shutdown_grace",
                Duration::from_secs(30),
                Duration::ZERO..=HOUR,
            ),
            shutdown_delay: self.duration(
                raw.shutdown_delay,
                "server.shutdown_delay",
                Duration::ZERO,
                Duration::ZERO..=MINUTE * 10,
            ),
            watch_interval: Some(self.duration(
                raw.watch_interval,
                "server.watch_interval",
                Duration::from_secs(2),
                Duration::ZERO..=DAY,
            ))
            .filter(|d| !d.is_zero()),
            max_connections: raw.max_connections.unwrap_or(10_000).max(1),
            max_streams: raw.max_streams.unwrap_or(100).max(1),
            request_limits: RequestLimits {
                uri: self.size(raw.max_uri, "server.max_uri", 8 << 10),
                headers: raw.max_headers.unwrap_or(100).max(1),
                header_bytes: self.size(raw.max_header_bytes, "server.max_header_bytes", 32 << 10),
                body: u64::try_from(self.size(raw.max_body, "server.max_body", 16 << 20))
                    .unwrap_or(u64::MAX),
            },
        }
    }

    pub(super) fn upstream(&mut self, raw: raw::RawUpstream) -> Option<UpstreamSettings> {
        let target = if raw.url == "builtin:echo" {
            Some(UpstreamTarget::Echo)
        } else {
            let parsed = raw.url.parse::<Uri>().ok();
            match parsed
                .as_ref()
                .map(|u| (u.scheme_str(), u.authority(), u.path()))
            {
                Some((Some("http"), Some(authority), "" | "/")) => Some(UpstreamTarget::Http {
                    scheme: Scheme::HTTP,
                    authority: authority.clone(),
                }),
                Some((Some("https"), Some(authority), "" | "/")) => Some(UpstreamTarget::Http {
                    scheme: Scheme::HTTPS,
                    authority: authority.clone(),
                }),
                _ => {
                    self.error(
                        "upstream.url",
                        format!("`{}` is not `builtin:echo` or an origin such as `http://127.0.0.1:3000`", raw.url),
                    );
                    None
                }
            }
        };
        let settings = UpstreamSettings {
            target: target.clone()?,
            connect_timeout: self.duration(
                raw.connect_timeout,
                "upstream.connect_timeout",
                Duration::from_secs(5),
                MILLISECOND..=MINUTE * 5,
            ),
            response_timeout: self.duration(
                raw.response_timeout,
                "upstream.response_timeout",
                Duration::from_secs(60),
                MILLISECOND..=HOUR,
            ),
            idle_timeout: self.duration(
                raw.idle_timeout,
                "upstream.idle_timeout",
                Duration::from_secs(90),
                MILLISECOND..=HOUR,
            ),
            preserve_host: raw.preserve_host,
            http2: raw.http2,
            tls: self.upstream_tls(raw.tls, target.as_ref()),
            health_check: self.health_check(raw.health_check.as_deref()),
        };
        Some(settings)
    }

    /// `log:`; the level must be a filter `tracing` accepts.
    pub(super) fn log(&mut self, raw: raw::RawLog) -> LogSettings {
        let log = LogSettings {
            level: raw.level.unwrap_or_else(|| "info".into()),
            json: matches!(raw.format, Some(RawLogFormat::Json)),
            access: self.access_level(raw.access.as_deref()),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
            self.error("log.level", format!("not a valid log filter: {e}"));
        }
        log
    }

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
                MILLISECOND * 100..=DAY,
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
