//! Configuration: YAML file -> raw structs (`raw`) -> a validated [`Config`].
//!
//! Loading never stops at the first problem. The document is parsed once into a YAML
//! value; `${VAR}` references in strings are substituted from the environment; each
//! top-level section and each list item is then deserialized and validated on its own,
//! so one mistake does not hide the next (`load` does the taking apart). Every
//! problem becomes a [`ConfigError`] with file, line, column and field path
//! (`locate` maps paths to positions). Values that came from the environment, and
//! fields named like secrets, are never echoed.
//!
//! Each section is validated in its own module: `discovery`, `endpoints`,
//! `scopes` (and tiers), `credentials` (and keys), `policy` (the routes),
//! `lifecycle`, `tokens`, `limits` and `ops` (server, TLS, upstream, log).
//! This module puts the sections together into a [`Config`].

mod credentials;
mod discovery;
mod endpoints;
mod interactive;
mod lifecycle;
mod limits;
mod load;
mod locate;
mod login;
mod ops;
mod policy;
mod raw;
mod scopes;
mod tokens;
mod values;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::credentials::{CredentialRules, KeyEntry};
pub use crate::login::LoginSettings;
use crate::policy::RouteTable;
use crate::scope::ScopeRegistry;
use crate::tier::Tiers;
pub use discovery::{Discovery, Service};
pub use endpoints::Endpoints;
pub use interactive::{ClientRegistration, DeclaredClient, Interactive, MetadataDocuments};
pub use lifecycle::{ClaimRules, Claims, IssueCredential, KeyManagement, Lifecycle, Registration};
pub use load::{ConfigError, ConfigErrors};
use load::{Loader, Sections};
pub use ops::{
    HealthCheck, LogSettings, RequestLimits, ServerSettings, TlsSettings, UpstreamSettings,
    UpstreamTarget, UpstreamTls,
};
pub use tokens::{AnonymousGrant, SigningSource, TokenSettings, TrustedIssuer, VerifiedEmail};

/// Values given on the command line, which take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--public-url`.
    pub public_url: Option<String>,
    /// `--data-dir`: where the SQLite store lives.
    pub data_dir: Option<std::path::PathBuf>,
    /// `--upstream`: the upstream URL (what a sidecar injection sets).
    pub upstream: Option<String>,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Address of the proxy listener.
    pub listen: SocketAddr,
    /// Address of the admin listener (health), if enabled.
    pub admin_listen: Option<SocketAddr>,
    /// Public base URL, without a trailing slash; every URL in documents and
    /// challenges derives from it.
    pub public_url: String,
    /// True when the public URL was configured rather than derived from `listen`.
    pub public_url_explicit: bool,
    /// How the API presents itself.
    pub service: Service,
    /// Listener settings.
    pub server: ServerSettings,
    /// HTTPS on the proxy listener, when configured.
    pub tls: Option<TlsSettings>,
    /// Where allowed requests go.
    pub upstream: UpstreamSettings,
    /// Credential extraction rules.
    pub credentials: CredentialRules,
    /// Declared scopes.
    pub scopes: Arc<ScopeRegistry>,
    /// Trust tiers, lowest first.
    pub tiers: Arc<Tiers>,
    /// Keys declared in the file by hash.
    pub keys: Vec<Arc<KeyEntry>>,
    /// The compiled policy.
    pub policy: RouteTable,
    /// The well-known documents' settings.
    pub discovery: Discovery,
    /// Paths of the proxy's own endpoints.
    pub endpoints: Endpoints,
    /// The store, registration and key management.
    pub lifecycle: Lifecycle,
    /// The proxy's own tokens and the token endpoint.
    pub tokens: TokenSettings,
    /// Issuers whose access tokens or identity assertions are accepted.
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// The interactive flow: authorization code with PKCE, for people and MCP clients.
    pub interactive: Interactive,
    /// Logging.
    pub log: LogSettings,
    /// How rate limits and quotas are applied and reported.
    pub limits: crate::limits::LimitSettings,
    /// What the file does that is allowed but probably not meant, one line each
    /// (`file:line:column: field: message`), in document order: `check` prints
    /// them, `run` and each reload log them.
    pub warnings: Vec<String>,
    /// How people sign in (`login:`); off without providers.
    pub login: LoginSettings,
}

impl Config {
    /// Reads and validates a config file, substituting `${VAR}` from the process
    /// environment.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            errors: vec![ConfigError {
                path: String::new(),
                position: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Config::from_yaml_str(&text, &file, overrides, &|name| std::env::var(name).ok())
    }

    /// Validates a config from text; `env` resolves `${VAR}` references. `file` only
    /// labels the errors.
    pub fn from_yaml_str(
        text: &str,
        file: &str,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut loader = Loader::new(text, file);
        let config = loader
            .read(text, env)
            .and_then(|sections| loader.validate(sections, overrides));
        let mut errors = loader.errors;
        match config {
            Some(mut config) if errors.is_empty() => {
                let mut warnings = loader.warnings;
                warnings.sort_by_key(|w| w.position.unwrap_or((usize::MAX, 0)));
                config.warnings = warnings.iter().map(|w| w.located(file)).collect();
                Ok(config)
            }
            _ => {
                errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
                if errors.is_empty() {
                    errors.push(ConfigError {
                        path: String::new(),
                        position: None,
                        message: "the config is not valid".into(),
                    });
                }
                Err(ConfigErrors {
                    file: file.to_owned(),
                    errors,
                })
            }
        }
    }

    /// The resource identifiers of this API: each public origin, and each origin with
    /// each protected-resource prefix (`https://api.example.com/mcp`).
    #[must_use]
    pub fn resource_identifiers(&self) -> Vec<String> {
        self.discovery.resource_identifiers()
    }

    /// What the proxy's own tokens say: this API as issuer and audience, and their
    /// lifetime.
    #[must_use]
    pub fn own_tokens(&self) -> crate::tokens::OwnTokens {
        crate::tokens::OwnTokens {
            issuer: self.public_url.clone(),
            audiences: self.resource_identifiers(),
            ttl: self.tokens.ttl,
        }
    }

    /// The trusted issuers whose identity assertions are accepted: ID-JAGs,
    /// `verified_email` `id_token`s, or both.
    pub fn identity_issuers(&self) -> impl Iterator<Item = &TrustedIssuer> {
        self.trusted_issuers
            .iter()
            .filter(|i| i.vouches_for_people())
    }

    /// The assertion types registration and claims accept (`assertion_types_supported`).
    #[must_use]
    pub fn assertion_types(&self) -> Vec<&'static str> {
        let mut types = Vec::new();
        if self.trusted_issuers.iter().any(|i| i.identity_assertions) {
            types.push(crate::protocol::ID_JAG);
        }
        if self
            .trusted_issuers
            .iter()
            .any(|i| i.verified_email.is_some())
        {
            types.push(crate::protocol::VERIFIED_EMAIL);
        }
        types
    }

    /// How anonymous registrations are claimed on this deployment.
    #[must_use]
    pub fn claims(&self) -> Claims {
        if !self.lifecycle.registers() {
            return Claims::Nothing;
        }
        self.lifecycle.registration.claims(
            self.identity_issuers().next().is_some(),
            self.login.enabled(),
        )
    }

    /// Number of routes in the policy.
    #[must_use]
    pub fn route_count(&self) -> usize {
        self.policy.routes().count()
    }
}

impl Loader {
    /// Validates every section and puts them together; `None` when anything is
    /// wrong (the problems are in `self.errors`).
    fn validate(&mut self, s: Sections, overrides: &Overrides) -> Option<Config> {
        let listen = match (&overrides.listen, &s.listen) {
            (Some(addr), _) => Some(*addr),
            (None, Some(text)) => self.address(text, "listen"),
            (None, None) => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        };
        let admin_listen = match (&overrides.admin_listen, &s.admin_listen) {
            (Some(addr), _) => Some(*addr),
            (None, Some(Some(text))) => self.address(text, "admin_listen"),
            (None, Some(None)) => None,
            (None, None) => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        };
        let public_url_explicit = overrides.public_url.is_some() || s.public_url.is_some();
        let public_url = match (&overrides.public_url, &s.public_url, listen) {
            (Some(url), _, _) => self.public_url(url, "--public-url"),
            (None, Some(url), _) => self.public_url(url, "public_url"),
            (None, None, Some(addr)) => Some(default_public_url(addr)),
            (None, None, None) => None,
        };

        let server = self.server(s.server);
        let tls = s.tls.map(|raw| self.tls(raw));
        let raw_upstream = match (s.upstream, &overrides.upstream) {
            (Some(mut raw), Some(url)) => {
                raw.url.clone_from(url);
                Some(raw)
            }
            (None, Some(url)) => Some(raw::RawUpstream::at(url)),
            (raw, None) => raw,
        };
        let upstream = match raw_upstream {
            Some(raw) => self.upstream(raw),
            // Its own error says what is wrong with it.
            None if s.upstream_written => None,
            None => {
                self.error(
                    "upstream",
                    "missing section `upstream` (e.g. `upstream: {url: http://127.0.0.1:3000}`)",
                );
                None
            }
        };

        let registry = self.scopes(&s.scopes);

        let tiers = Arc::new(self.tiers(&s.tiers, &registry));
        let credentials = self.credentials(&s.credentials);
        let keys = self.keys(s.keys, &registry, &tiers);
        let served = discovery::Served::of(&s.routes, &s.default, s.paths.case_insensitive);
        let discovery = self.discovery(s.discovery, public_url.as_deref(), &served);
        let policy = self.policy(
            s.routes,
            s.default,
            s.paths.case_insensitive,
            &registry,
            &tiers,
            &discovery,
        );
        let endpoints = self.endpoints(&s.endpoints);
        let data_dir = overrides
            .data_dir
            .clone()
            .unwrap_or_else(|| self.resolve(s.store.data_dir.as_deref().unwrap_or("data")));
        let lifecycle = self.lifecycle(
            s.store,
            s.registration,
            s.key_management,
            &credentials,
            &registry,
            &tiers,
            &data_dir,
        );
        let trusted_issuers =
            self.trusted_issuers(s.trusted_issuers, &registry, &tiers, public_url.as_deref());
        let tokens = self.tokens(
            s.tokens,
            &registry,
            &tiers,
            &trusted_issuers,
            &lifecycle.store,
            &data_dir,
        );

        if lifecycle.registration.access_token && !tokens.enabled {
            self.error(
                "registration.access_token",
                "the proxy signs access tokens only with a `tokens:` section",
            );
        }
        let interactive = self.interactive(s.oauth, &registry);
        let mut limits = self.limits(s.limits, &tiers);
        limits.payments = s.payments.and_then(|raw| self.payments(raw));
        let log = self.log(s.log);
        let service = Service::new(s.service);
        let login = self.login(
            s.login,
            &login::LoginContext {
                tiers: &tiers,
                origins: &discovery.origins,
                store: &lifecycle.store,
                data_dir: &data_dir,
                endpoints: &endpoints,
                service_name: &service.name,
                claim_allowed: &lifecycle.registration.claim.allowed,
            },
        );

        let vouches = trusted_issuers
            .iter()
            .any(TrustedIssuer::vouches_for_people);
        self.claim_warnings(&lifecycle, vouches, login.enabled(), &tiers);
        if lifecycle.registration.issue_credential == IssueCredential::AtClaim {
            let claims = lifecycle.registration.claims(vouches, login.enabled());
            if !lifecycle.registers() || !claims.offered() {
                self.error(
                    "registration.issue_credential",
                    "`at_claim` hands the key out at the claim, and no anonymous registration can be claimed here \
                     (anonymous registration off, or a claim needs an identity assertion or a sign-in and neither \
                     is configured)",
                );
            }
            if lifecycle.registration.access_token {
                self.error(
                    "registration.access_token",
                    "with `issue_credential: at_claim` a registration answer holds no key to mint a token from: \
                     the agent gets a token from the token endpoint with the key the claim hands out",
                );
            }
        }
        let (Some(listen), Some(public_url), Some(upstream), Some(policy)) =
            (listen, public_url, upstream, policy)
        else {
            return None;
        };
        if !self.errors.is_empty() {
            return None;
        }
        Some(Config {
            listen,
            admin_listen,
            public_url,
            public_url_explicit,
            service,
            server,
            tls,
            upstream,
            credentials,
            scopes: registry,
            tiers,
            keys,
            policy,
            discovery,
            endpoints,
            lifecycle,
            tokens,
            trusted_issuers,
            interactive,
            log,
            limits,
            warnings: Vec::new(),
            login,
        })
    }
}

/// The public URL when none is configured: `http://<listen>`, with `localhost` for
/// an unspecified address (`0.0.0.0`, `::`), which no agent can connect to.
pub fn default_public_url(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("http://localhost:{}", listen.port())
    } else {
        format!("http://{listen}")
    }
}

#[cfg(test)]
mod tests;
