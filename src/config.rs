//! Configuration: YAML file -> raw structs ([`raw`]) -> a validated [`Config`].
//!
//! Loading never stops at the first problem. The document is parsed once into a YAML
//! value; `${VAR}` references in strings are substituted from the environment; each
//! top-level section and each list item is then deserialized and validated on its own,
//! so one mistake does not hide the next. Every problem becomes a [`ConfigError`] with
//! file, line, column and field path ([`locate`] maps paths to positions). Values that
//! came from the environment, and fields named like secrets, are never echoed.

mod lifecycle;
mod limits;
mod locate;
mod ops;
mod raw;
mod tokens;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Uri};
use serde::de::DeserializeOwned;
use serde_norway::Value;

use crate::credentials::key_table::KeyProfile;
use crate::credentials::{CredentialHeader, CredentialRules, KeyEntry, KeyHash, api_key};
use crate::limits::LimitSet;
use crate::policy::{
    Access, DefaultRule, HostId, MethodSet, Route, RouteSpec, RouteTable, Template, normalize_path,
};
use crate::rejection::{Challenges, PROTECTED_RESOURCE, Responder};
use crate::scope::{self, ScopeError, ScopeRegistry, ScopeSet};
use crate::tier::{Tier, TierId, Tiers};
pub use lifecycle::{KeyManagement, Lifecycle, Registration};
use locate::{Locations, join};
use raw::{RawAccess, RawDefault, RawLogFormat};
pub use tokens::{AnonymousGrant, SigningSource, TokenSettings, TrustedIssuer};

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
    /// Rejection answers, one responder per public origin (indexed by [`HostId`]).
    pub responders: Vec<Responder>,
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
    /// Logging.
    pub log: LogSettings,
    /// How rate limits and quotas are applied and reported.
    pub limits: crate::limits::LimitSettings,
}

/// `discovery:`.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Public origins, `public_url` first, then `discovery.hosts`. Documents are built
    /// for each; a request's `Host` selects one only when it is in this list.
    pub origins: Vec<String>,
    /// `host[:port]` of each origin, lower-case, default port omitted.
    authorities: Vec<String>,
    /// Path prefixes that are protected resources of their own (such as `/mcp`), with
    /// path-inserted metadata.
    pub resources: Vec<String>,
    /// Also serve the authorization-server metadata at
    /// `/.well-known/openid-configuration`.
    pub openid_configuration: bool,
    /// The API's OpenAPI description (`service-desc` in the api-catalog).
    pub openapi_url: Option<String>,
    /// An operator-written auth.md, served unchanged instead of the generated one.
    pub auth_md: Option<String>,
    /// `Cache-Control: max-age` of the documents.
    pub max_age: Duration,
    /// MCP server card, served at `/.well-known/mcp/server-card.json`.
    pub mcp_server_card: Option<serde_json::Value>,
    /// A2A agent card, served at `/.well-known/agent-card.json`.
    pub agent_card: Option<serde_json::Value>,
}

impl Discovery {
    /// The origin a request addressed, by its `Host` (or HTTP/2 `:authority`); the
    /// primary origin when the host is not one of ours, so a forged `Host` cannot
    /// change any URL the proxy publishes.
    #[must_use]
    pub fn host_of<B>(&self, request: &http::Request<B>) -> HostId {
        if self.authorities.len() == 1 {
            return HostId(0);
        }
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(Authority::as_str));
        host.and_then(|host| {
            self.authorities.iter().position(|a| {
                a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(strip_default_port(host))
            })
        })
        .map_or(HostId(0), HostId)
    }
}

impl Discovery {
    /// The protected resource a route belongs to: the longest configured resource
    /// prefix its literal prefix starts with (`""` for the root resource).
    fn resource_of(&self, template: &Template) -> &str {
        let literal = template.literal_prefix();
        self.resources
            .iter()
            .filter(|prefix| {
                literal
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|prefix| prefix.len())
            .map_or("", String::as_str)
    }
}

fn strip_default_port(host: &str) -> &str {
    host.strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
        .unwrap_or(host)
}

/// `endpoints:`: paths of the proxy's own endpoints.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// OAuth authorization endpoint.
    pub authorize: String,
    /// OAuth token endpoint.
    pub token: String,
    /// OAuth revocation endpoint (RFC 7009).
    pub revoke: String,
    /// Agent registration (`register_uri`).
    pub register: String,
    /// Claim of a registration (`claim_uri`); the human claim page is under it.
    pub claim: String,
    /// Agent-facing revocation with `{credential}` (`revocation_uri`).
    pub agent_revoke: String,
    /// Key management collection; `{id}` and `{id}/rotate` below it.
    pub keys: String,
    /// The scope list.
    pub scopes: String,
    /// The JWKS of the proxy's token-signing keys (`jwks_uri`).
    pub jwks: String,
}

/// `service:`.
#[derive(Debug, Clone)]
pub struct Service {
    /// Display name of the API.
    pub name: String,
    /// One-paragraph description.
    pub description: Option<String>,
    /// Human documentation.
    pub documentation_url: Option<String>,
    /// Where to reach the operator (URL or e-mail address).
    pub contact: Option<String>,
    /// Terms of service.
    pub terms_url: Option<String>,
    /// Privacy policy.
    pub privacy_url: Option<String>,
}

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

/// The size limits of a request, checked before anything else looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Bytes of the request target (path and query).
    pub uri: usize,
    /// Header fields.
    pub headers: usize,
    /// Bytes of all header names and values.
    pub header_bytes: usize,
    /// Bytes of a body that declares its length (`Content-Length`).
    pub body: u64,
}

impl RequestLimits {
    /// The refusal of a request beyond a limit, if it is.
    pub fn check<B>(&self, request: &http::Request<B>) -> Result<(), crate::rejection::Oversize> {
        use crate::rejection::Oversize;
        let uri = request.uri();
        let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len());
        if target > self.uri {
            return Err(Oversize::Uri);
        }
        let headers = request.headers();
        if headers.len() > self.headers {
            return Err(Oversize::Headers);
        }
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if bytes > self.header_bytes {
            return Err(Oversize::Headers);
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.body) {
            return Err(Oversize::Body);
        }
        Ok(())
    }
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

/// `upstream.tls:`: how the proxy trusts an `https://` upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM CA bundle trusted instead of the public roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate chain presented to the upstream (with `key_file`).
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<std::path::PathBuf>,
}

/// How `/readyz` decides that the upstream is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// It does not check.
    None,
    /// A TCP connection to the upstream opens.
    Tcp,
    /// `GET <path>` answers below 500.
    Http(String),
}

/// Where the upstream is.
#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// The built-in echo server: answers with what it received.
    Echo,
    /// An HTTP server.
    Http {
        /// `http` or `https`.
        scheme: Scheme,
        /// `host:port`.
        authority: Authority,
    },
}

/// `upstream:`.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Target.
    pub target: UpstreamTarget,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers.
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// Send the client's `Host` rather than the upstream's authority.
    pub preserve_host: bool,
    /// Speak HTTP/2 (prior knowledge over plain TCP; by ALPN over TLS).
    pub http2: bool,
    /// TLS settings of an `https://` upstream.
    pub tls: UpstreamTls,
    /// How readiness checks the upstream.
    pub health_check: HealthCheck,
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

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Field path, e.g. `routes[3].scopes[0]`; empty for the whole document.
    pub path: String,
    /// Line and column (1-based), when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// The file (or label) they were found in.
    pub file: String,
    /// The problems, in document order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file)?;
            if let Some((line, column)) = e.position {
                write!(f, ":{line}:{column}")?;
            }
            if e.path.is_empty() {
                write!(f, ": {}", e.message)?;
            } else {
                write!(f, ": {}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const TOP_LEVEL: &[&str] = &[
    "listen",
    "admin_listen",
    "public_url",
    "service",
    "server",
    "upstream",
    "credentials",
    "scopes",
    "tiers",
    "keys",
    "routes",
    "default",
    "paths",
    "log",
    "discovery",
    "endpoints",
    "store",
    "registration",
    "key_management",
    "tokens",
    "trusted_issuers",
    "limits",
    "payments",
    "tls",
];

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
        let mut loader = Loader {
            base: Path::new(file)
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default(),
            locations: Locations::index(text),
            errors: Vec::new(),
            secret_paths: HashSet::new(),
            secret_values: Vec::new(),
        };
        let config = loader.load(text, overrides, env);
        let mut errors = loader.errors;
        match config {
            Some(config) if errors.is_empty() => Ok(config),
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

    /// The trusted issuers whose identity assertions are accepted.
    pub fn identity_issuers(&self) -> impl Iterator<Item = &TrustedIssuer> {
        self.trusted_issuers
            .iter()
            .filter(|i| i.identity_assertions)
    }

    /// Number of routes in the policy.
    #[must_use]
    pub fn route_count(&self) -> usize {
        self.policy.routes().count()
    }
}

/// The shortest value from the environment that is hidden wherever it appears.
const MIN_SECRET_LEN: usize = 4;

/// Collects errors while the document is taken apart.
struct Loader {
    /// Directory that relative file names in the config are resolved against.
    base: std::path::PathBuf,
    locations: Locations,
    errors: Vec<ConfigError>,
    /// Paths whose values came from the environment: never echoed.
    secret_paths: HashSet<String>,
    /// The values that came from the environment: never echoed either, not even
    /// in an error about another field (a route conflict naming another route's
    /// id, a "did you mean" suggesting another tier's name). Values shorter than
    /// [`MIN_SECRET_LEN`] are left out: hiding a `2` would garble every message
    /// that says `HTTP/2`, and no secret is that short (their own field is still
    /// never shown).
    secret_values: Vec<String>,
}

/// The top-level sections, each deserialized on its own.
#[derive(Default)]
struct Sections {
    listen: Option<String>,
    admin_listen: Option<Option<String>>,
    public_url: Option<String>,
    service: raw::RawService,
    server: raw::RawServer,
    upstream: Option<raw::RawUpstream>,
    credentials: raw::RawCredentials,
    scopes: Vec<(String, String)>,
    tiers: Vec<(String, raw::RawTier)>,
    keys: Vec<(String, raw::RawKey)>,
    routes: Vec<(String, raw::RawRoute)>,
    default: RawDefault,
    paths: raw::RawPaths,
    log: raw::RawLog,
    discovery: raw::RawDiscovery,
    endpoints: raw::RawEndpoints,
    store: raw::RawStore,
    registration: raw::RawRegistration,
    key_management: raw::RawKeyManagement,
    tokens: Option<raw::RawTokens>,
    trusted_issuers: Vec<(String, raw::RawTrustedIssuer)>,
    limits: raw::RawLimits,
    payments: Option<raw::RawPayments>,
    tls: Option<raw::RawTls>,
}

impl Loader {
    /// Records a problem at `path`; the first problem at a path is the one reported
    /// (a value that failed substitution is not then also called malformed).
    fn error(&mut self, path: &str, message: impl Into<String>) {
        if self
            .errors
            .iter()
            .any(|e| e.path == path && !path.is_empty())
        {
            return;
        }
        let message = if self.is_secret(path) {
            "invalid value (not shown: it may be a secret)".to_owned()
        } else {
            let mut message = message.into();
            for value in &self.secret_values {
                if message.contains(value.as_str()) {
                    message = message.replace(value.as_str(), "(a value from the environment)");
                }
            }
            message
        };
        self.errors.push(ConfigError {
            path: path.to_owned(),
            position: self.locations.find(path),
            message,
        });
    }

    fn is_secret(&self, path: &str) -> bool {
        let field = path.rsplit(['.', '[']).next().unwrap_or(path);
        ["secret", "password", "private"]
            .iter()
            .any(|word| field.contains(word))
            || self.secret_paths.iter().any(|p| {
                path == p
                    || path.starts_with(&format!("{p}."))
                    || path.starts_with(&format!("{p}["))
            })
    }

    fn load(
        &mut self,
        text: &str,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Config> {
        let mut document: Value = match serde_norway::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                let message = e.to_string();
                let message = message
                    .rfind(" at line ")
                    .map_or(message.as_str(), |cut| &message[..cut]);
                self.errors.push(ConfigError {
                    path: String::new(),
                    position: e.location().map(|l| (l.line(), l.column())),
                    message: format!("not valid YAML: {message}"),
                });
                return None;
            }
        };
        self.substitute(&mut document, "", env);
        let sections = self.sections(document)?;
        self.validate(sections, overrides)
    }

    /// Replaces `${VAR}` in every string value (`$${` writes a literal `${`).
    fn substitute(&mut self, value: &mut Value, path: &str, env: &dyn Fn(&str) -> Option<String>) {
        match value {
            Value::String(s) if s.contains("${") => {
                let mut out = String::with_capacity(s.len());
                let mut rest = s.as_str();
                let mut substituted = false;
                while let Some(start) = rest.find("${") {
                    if rest[..start].ends_with('$') {
                        out.push_str(&rest[..start - 1]);
                        out.push_str("${");
                        rest = &rest[start + 2..];
                        continue;
                    }
                    out.push_str(&rest[..start]);
                    let Some(end) = rest[start..].find('}') else {
                        self.error(path, "unterminated `${` (write `$${` for a literal `${`)");
                        return;
                    };
                    let name = &rest[start + 2..start + end];
                    let valid = !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !valid {
                        self.error(path, format!("`${{{name}}}` is not a valid variable name"));
                        return;
                    }
                    match env(name) {
                        Some(v) => {
                            out.push_str(&v);
                            if v.len() >= MIN_SECRET_LEN {
                                self.secret_values.push(v);
                            }
                        }
                        None => {
                            self.error(path, format!("environment variable `{name}` is not set"));
                            return;
                        }
                    }
                    substituted = true;
                    rest = &rest[start + end + 1..];
                }
                out.push_str(rest);
                if substituted {
                    self.secret_paths.insert(path.to_owned());
                }
                *s = out;
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.substitute(item, &format!("{path}[{i}]"), env);
                }
            }
            Value::Mapping(map) => {
                for (key, item) in map.iter_mut() {
                    if let Value::String(key) = key {
                        let child = join(path, key);
                        self.substitute(item, &child, env);
                    }
                }
            }
            Value::Tagged(tagged) => self.substitute(&mut tagged.value, path, env),
            _ => {}
        }
    }

    /// Deserializes one value into `T`, recording an error at its exact path.
    fn take<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut full = path.to_owned();
                for segment in e.path().iter() {
                    match segment {
                        serde_path_to_error::Segment::Seq { index } => {
                            full.push_str(&format!("[{index}]"));
                        }
                        serde_path_to_error::Segment::Map { key }
                        | serde_path_to_error::Segment::Enum { variant: key } => {
                            full = join(&full, key);
                        }
                        serde_path_to_error::Segment::Unknown => {}
                    }
                }
                self.error(&full, e.into_inner().to_string());
                None
            }
        }
    }

    /// Deserializes a list item by item, so every bad item is reported.
    fn take_list<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Vec<(String, T)> {
        let Some(items) = self.take::<Vec<Value>>(value, path) else {
            return Vec::new();
        };
        items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item_path = format!("{path}[{i}]");
                self.take(item, &item_path).map(|v| (item_path, v))
            })
            .collect()
    }

    fn sections(&mut self, document: Value) -> Option<Sections> {
        let map = match document {
            Value::Mapping(map) => map,
            Value::Null => {
                self.error("", "the config is empty");
                return None;
            }
            _ => {
                self.error("", "the config must be a mapping of sections");
                return None;
            }
        };
        let mut s = Sections::default();
        for (key, value) in map {
            let Value::String(key) = key else {
                self.error("", "section names must be strings");
                continue;
            };
            let path = key.as_str();
            match path {
                "listen" => s.listen = self.take(value, path),
                "admin_listen" => s.admin_listen = self.take(value, path),
                "public_url" => s.public_url = self.take(value, path),
                "service" => s.service = self.take(value, path).unwrap_or_default(),
                "server" => s.server = self.take(value, path).unwrap_or_default(),
                "upstream" => s.upstream = self.take(value, path),
                "credentials" => s.credentials = self.take(value, path).unwrap_or_default(),
                "scopes" => {
                    if let Some(map) = self.take::<serde_norway::Mapping>(value, path) {
                        for (name, description) in map {
                            let Value::String(name) = name else {
                                self.error(path, "scope names must be strings");
                                continue;
                            };
                            let item = join(path, &name);
                            let description = self.take::<Option<String>>(description, &item);
                            s.scopes
                                .push((name, description.flatten().unwrap_or_default()));
                        }
                    }
                }
                "tiers" => s.tiers = self.take_list(value, path),
                "keys" => s.keys = self.take_list(value, path),
                "routes" => s.routes = self.take_list(value, path),
                "default" => s.default = self.take(value, path).unwrap_or_default(),
                "paths" => s.paths = self.take(value, path).unwrap_or_default(),
                "log" => s.log = self.take(value, path).unwrap_or_default(),
                "discovery" => s.discovery = self.take(value, path).unwrap_or_default(),
                "endpoints" => s.endpoints = self.take(value, path).unwrap_or_default(),
                "store" => s.store = self.take(value, path).unwrap_or_default(),
                "registration" => s.registration = self.take(value, path).unwrap_or_default(),
                "key_management" => {
                    s.key_management = self.take(value, path).unwrap_or_default();
                }
                "tokens" => s.tokens = Some(self.take(value, path).unwrap_or_default()),
                "trusted_issuers" => s.trusted_issuers = self.take_list(value, path),
                "limits" => s.limits = self.take(value, path).unwrap_or_default(),
                "payments" => s.payments = self.take(value, path),
                "tls" => s.tls = self.take(value, path),
                other => {
                    let hint = scope::closest(other, TOP_LEVEL.iter().copied())
                        .map(|c| format!("; did you mean `{c}`?"))
                        .unwrap_or_default();
                    self.error(other, format!("unknown section `{other}`{hint}"));
                }
            }
        }
        Some(s)
    }

    fn duration(&mut self, value: Option<String>, path: &str, default: Duration) -> Duration {
        let Some(text) = value else {
            return default;
        };
        match humantime::parse_duration(&text) {
            Ok(d) => d,
            Err(_) => {
                self.error(
                    path,
                    format!("`{text}` is not a duration; write e.g. `5s` or `250ms`"),
                );
                default
            }
        }
    }

    /// A size in bytes: `4096`, `64KiB`, `16MiB` or `1GiB`.
    fn size(&mut self, value: Option<raw::RawSize>, path: &str, default: usize) -> usize {
        let text = match value {
            None => return default,
            Some(raw::RawSize::Bytes(n)) if n > 0 => {
                return usize::try_from(n).unwrap_or(usize::MAX);
            }
            Some(raw::RawSize::Bytes(n)) => n.to_string(),
            Some(raw::RawSize::Text(text)) => text,
        };
        let trimmed = text.trim();
        let (digits, unit) = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .map_or((trimmed, ""), |at| trimmed.split_at(at));
        let unit = match unit.trim() {
            "" | "B" => Some(1usize),
            "KiB" => Some(1 << 10),
            "MiB" => Some(1 << 20),
            "GiB" => Some(1 << 30),
            _ => None,
        };
        match (digits.parse::<usize>().ok(), unit) {
            (Some(n), Some(unit)) if n > 0 => n.saturating_mul(unit),
            _ => {
                self.error(
                    path,
                    format!(
                        "`{text}` is not a size; write e.g. `8KiB`, `16MiB` or a number of bytes"
                    ),
                );
                default
            }
        }
    }

    fn address(&mut self, text: &str, path: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!("`{text}` is not an address such as `127.0.0.1:8080`"),
                );
                None
            }
        }
    }

    fn unknown_scope(&mut self, path: &str, name: &str, error: &ScopeError) {
        let ScopeError::Unknown { suggestion } = error;
        let hint = suggestion
            .as_ref()
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_else(|| "; declare it under `scopes:`".into());
        self.error(path, format!("unknown scope `{name}`{hint}"));
    }

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

        let server = ServerSettings {
            worker_threads: s.server.worker_threads.unwrap_or(0),
            header_read_timeout: self.duration(
                s.server.header_read_timeout,
                "server.header_read_timeout",
                Duration::from_secs(10),
            ),
            shutdown_grace: self.duration(
                s.server.shutdown_grace,
                "server.shutdown_grace",
                Duration::from_secs(30),
            ),
            shutdown_delay: self.duration(
                s.server.shutdown_delay,
                "server.shutdown_delay",
                Duration::ZERO,
            ),
            watch_interval: Some(self.duration(
                s.server.watch_interval,
                "server.watch_interval",
                Duration::from_secs(2),
            ))
            .filter(|d| !d.is_zero()),
            max_connections: s.server.max_connections.unwrap_or(10_000).max(1),
            max_streams: s.server.max_streams.unwrap_or(100).max(1),
            request_limits: RequestLimits {
                uri: self.size(s.server.max_uri, "server.max_uri", 8 << 10),
                headers: s.server.max_headers.unwrap_or(100).max(1),
                header_bytes: self.size(
                    s.server.max_header_bytes,
                    "server.max_header_bytes",
                    32 << 10,
                ),
                body: u64::try_from(self.size(s.server.max_body, "server.max_body", 16 << 20))
                    .unwrap_or(u64::MAX),
            },
        };
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
            None => {
                self.error(
                    "upstream",
                    "missing section `upstream` (e.g. `upstream: {url: http://127.0.0.1:3000}`)",
                );
                None
            }
        };

        let mut registry = ScopeRegistry::default();
        for (name, description) in &s.scopes {
            let path = join("scopes", name);
            if !scope::is_valid_name(name) {
                self.error(&path, format!("`{name}` is not a valid scope name (lowercase letters, digits, `_.:-`, optionally ending in `:*`)"));
            } else if !registry.declare(name, description) {
                self.error(
                    &path,
                    format!("too many scopes (at most {})", scope::MAX_SCOPES),
                );
            }
        }
        let registry = Arc::new(registry);

        let tiers = Arc::new(self.tiers(&s.tiers, &registry));
        let credentials = self.credentials(&s.credentials);
        let keys = self.keys(s.keys, &registry, &tiers);
        let discovery = self.discovery(s.discovery, public_url.as_deref());
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
        let mut limits = self.limits(s.limits);
        limits.payments = s.payments.and_then(|raw| self.payments(raw));
        let log = LogSettings {
            level: s.log.level.unwrap_or_else(|| "info".into()),
            json: matches!(s.log.format, Some(RawLogFormat::Json)),
            access: self.access_level(s.log.access.as_deref()),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
            self.error("log.level", format!("not a valid log filter: {e}"));
        }
        let service = Service {
            name: s.service.name.unwrap_or_else(|| "API".into()),
            description: s.service.description,
            documentation_url: s.service.documentation_url,
            contact: s.service.contact,
            terms_url: s.service.terms_url,
            privacy_url: s.service.privacy_url,
        };

        let (Some(listen), Some(public_url), Some(upstream), Some(policy)) =
            (listen, public_url, upstream, policy)
        else {
            return None;
        };
        if !self.errors.is_empty() {
            return None;
        }
        let responders = discovery
            .origins
            .iter()
            .map(|origin| Responder::new(origin, registry.clone(), tiers.clone()))
            .collect();
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
            responders,
            discovery,
            endpoints,
            lifecycle,
            tokens,
            trusted_issuers,
            log,
            limits,
        })
    }

    fn discovery(&mut self, raw: raw::RawDiscovery, public_url: Option<&str>) -> Discovery {
        let mut origins: Vec<String> = public_url.map(str::to_owned).into_iter().collect();
        for (i, host) in raw.hosts.iter().enumerate() {
            let path = format!("discovery.hosts[{i}]");
            if let Some(origin) = self.public_url(host, &path) {
                if origins.contains(&origin) {
                    self.error(&path, format!("`{origin}` is listed twice"));
                } else {
                    origins.push(origin);
                }
            }
        }
        let authorities = origins
            .iter()
            .map(|o| {
                let authority = o.split_once("://").map_or(o.as_str(), |(_, a)| a);
                strip_default_port(&authority.to_ascii_lowercase()).to_owned()
            })
            .collect();
        let mut resources: Vec<String> = Vec::new();
        for (i, prefix) in raw.resources.iter().enumerate() {
            let path = format!("discovery.resources[{i}]");
            let trimmed = prefix.trim_end_matches('/');
            match normalize_path(trimmed) {
                Ok(normal)
                    if normal == trimmed
                        && !trimmed.is_empty()
                        && !trimmed.contains(['{', '}', '%']) =>
                {
                    resources.push(trimmed.to_owned());
                }
                _ => self.error(
                    &path,
                    format!("`{prefix}` is not a plain path prefix such as `/mcp`"),
                ),
            }
        }
        let openapi_url = raw.openapi_url.filter(|url| {
            let ok = url
                .parse::<Uri>()
                .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some());
            if !ok {
                self.error(
                    "discovery.openapi_url",
                    format!("`{url}` is not an absolute URL"),
                );
            }
            ok
        });
        let auth_md = raw.auth_md_file.and_then(|file| {
            let resolved = self.resolve(&file);
            match std::fs::read_to_string(&resolved) {
                Ok(text) => Some(text),
                Err(e) => {
                    self.error(
                        "discovery.auth_md_file",
                        format!("cannot read `{}`: {e}", resolved.display()),
                    );
                    None
                }
            }
        });
        let mcp_server_card = raw
            .mcp_server_card
            .and_then(|v| self.card(v, "discovery.mcp_server_card"));
        let agent_card = raw
            .agent_card
            .and_then(|v| self.card(v, "discovery.agent_card"));
        Discovery {
            origins,
            authorities,
            resources,
            openid_configuration: raw.openid_configuration,
            openapi_url,
            auth_md,
            max_age: self.duration(raw.max_age, "discovery.max_age", Duration::from_secs(3600)),
            mcp_server_card,
            agent_card,
        }
    }

    /// A card given inline (a YAML mapping) or as the path of a JSON file.
    fn card(&mut self, value: Value, path: &str) -> Option<serde_json::Value> {
        let json = match value {
            Value::String(file) => {
                let resolved = self.resolve(&file);
                let text = match std::fs::read_to_string(&resolved) {
                    Ok(text) => text,
                    Err(e) => {
                        self.error(path, format!("cannot read `{}`: {e}", resolved.display()));
                        return None;
                    }
                };
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(json) => json,
                    Err(e) => {
                        self.error(path, format!("`{}` is not JSON: {e}", resolved.display()));
                        return None;
                    }
                }
            }
            other => match serde_json::to_value(&other) {
                Ok(json) => json,
                Err(e) => {
                    self.error(path, format!("cannot be written as JSON: {e}"));
                    return None;
                }
            },
        };
        if !json.is_object() {
            self.error(
                path,
                "a card must be a mapping (a JSON object), or the path of a JSON file",
            );
            return None;
        }
        Some(json)
    }

    /// A file named in the config, relative to the config file's directory.
    fn resolve(&self, file: &str) -> std::path::PathBuf {
        let path = Path::new(file);
        if path.is_absolute() {
            return path.to_owned();
        }
        self.base.join(path)
    }

    fn endpoints(&mut self, raw: &raw::RawEndpoints) -> Endpoints {
        let mut seen: Vec<String> = Vec::new();
        let mut endpoint =
            |loader: &mut Loader, value: &Option<String>, field: &str, default: &str| {
                let path = value.clone().unwrap_or_else(|| default.to_owned());
                let at = join("endpoints", field);
                if !matches!(normalize_path(&path), Ok(normal) if normal == path)
                    || path.len() < 2
                    || path.ends_with('/')
                {
                    loader.error(
                        &at,
                        format!("`{path}` is not a normalised absolute path such as `{default}`"),
                    );
                } else if seen.contains(&path) {
                    loader.error(&at, format!("`{path}` is used by another endpoint"));
                }
                seen.push(path.clone());
                path
            };
        Endpoints {
            authorize: endpoint(self, &raw.authorize, "authorize", "/oauth2/authorize"),
            token: endpoint(self, &raw.token, "token", "/oauth2/token"),
            revoke: endpoint(self, &raw.revoke, "revoke", "/oauth2/revoke"),
            register: endpoint(self, &raw.register, "register", "/agent/auth/register"),
            claim: endpoint(self, &raw.claim, "claim", "/agent/auth/claim"),
            agent_revoke: endpoint(
                self,
                &raw.agent_revoke,
                "agent_revoke",
                "/agent/auth/revoke",
            ),
            keys: endpoint(self, &raw.keys, "keys", "/api/v1/auth/keys"),
            scopes: endpoint(self, &raw.scopes, "scopes", "/api/v1/auth/scopes"),
            jwks: endpoint(self, &raw.jwks, "jwks", crate::discovery::JWKS),
        }
    }

    fn public_url(&mut self, text: &str, path: &str) -> Option<String> {
        let trimmed = text.trim_end_matches('/');
        let ok = trimmed.parse::<Uri>().ok().filter(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some()
                && uri
                    .path_and_query()
                    .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/")
        });
        if ok.is_none() {
            self.error(
                path,
                format!("`{text}` is not an origin such as `https://api.example.com` (no path, query or fragment)"),
            );
            return None;
        }
        Some(trimmed.to_owned())
    }

    fn upstream(&mut self, raw: raw::RawUpstream) -> Option<UpstreamSettings> {
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
            ),
            response_timeout: self.duration(
                raw.response_timeout,
                "upstream.response_timeout",
                Duration::from_secs(60),
            ),
            idle_timeout: self.duration(
                raw.idle_timeout,
                "upstream.idle_timeout",
                Duration::from_secs(90),
            ),
            preserve_host: raw.preserve_host,
            http2: raw.http2,
            tls: self.upstream_tls(raw.tls, target.as_ref()),
            health_check: self.health_check(raw.health_check.as_deref()),
        };
        Some(settings)
    }

    fn tiers(&mut self, raw: &[(String, raw::RawTier)], registry: &ScopeRegistry) -> Tiers {
        let mut tiers: Vec<Tier> = Vec::new();
        for (i, (path, tier)) in raw.iter().enumerate() {
            let name_path = join(path, "name");
            let valid = !tier.name.is_empty()
                && tier.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !valid {
                self.error(
                    &name_path,
                    format!(
                        "`{}` is not a valid tier name (lowercase letters, digits, `_`, `-`)",
                        tier.name
                    ),
                );
                continue;
            }
            if tiers.iter().any(|t| t.name == tier.name) {
                self.error(
                    &name_path,
                    format!("tier `{}` is declared twice", tier.name),
                );
                continue;
            }
            if tier.name == "anonymous" && i != 0 {
                self.error(&name_path, "`anonymous` must be the first (lowest) tier");
                continue;
            }
            let scopes = match registry.granted(tier.scopes.iter().map(String::as_str)) {
                Ok(set) => set,
                Err((name, e)) => {
                    let at = tier.scopes.iter().position(|s| s == name).unwrap_or(0);
                    self.unknown_scope(&format!("{path}.scopes[{at}]"), name, &e);
                    ScopeSet::EMPTY
                }
            };
            let limits = self.limit_set(&tier.name, &tier.rate_limits, tier.quota.as_deref(), path);
            tiers.push(make_tier(&tier.name, scopes, registry, limits));
        }
        if tiers.first().is_none_or(|t| t.name != "anonymous") {
            tiers.insert(
                0,
                make_tier("anonymous", ScopeSet::EMPTY, registry, LimitSet::default()),
            );
        }
        if tiers.len() == 1 {
            tiers.push(make_tier(
                "default",
                ScopeSet::EMPTY,
                registry,
                LimitSet::default(),
            ));
        }
        if tiers.len() > usize::from(u8::MAX) {
            self.error("tiers", "too many tiers (at most 255)");
            tiers.truncate(usize::from(u8::MAX));
        }
        Tiers(tiers)
    }

    fn credentials(&mut self, raw: &raw::RawCredentials) -> CredentialRules {
        let mut headers: Vec<CredentialHeader> = Vec::new();
        for (i, header) in raw.headers.iter().enumerate() {
            let path = format!("credentials.headers[{i}].name");
            let Ok(name) = HeaderName::try_from(header.name.as_str()) else {
                self.error(
                    &path,
                    format!("`{}` is not a valid header name", header.name),
                );
                continue;
            };
            if name == http::header::AUTHORIZATION {
                self.error(
                    &path,
                    "`Authorization` is read through `credentials.bearer`",
                );
            } else if name.as_str().starts_with("x-authmd-") {
                self.error(
                    &path,
                    "`X-Authmd-*` headers are set by the proxy; choose another name",
                );
            } else if headers.iter().any(|h| h.name == name) {
                self.error(&path, format!("header `{}` is listed twice", header.name));
            } else {
                headers.push(CredentialHeader {
                    name,
                    display: header.name.clone(),
                    anonymous: header.anonymous,
                });
            }
        }
        let mut key_prefixes = Vec::new();
        for (i, prefix) in raw.key_prefixes.iter().enumerate() {
            let prefix = prefix.strip_suffix('_').unwrap_or(prefix);
            if api_key::is_valid_prefix(prefix) {
                key_prefixes.push(prefix.to_owned());
            } else {
                self.error(
                    &format!("credentials.key_prefixes[{i}]"),
                    format!("`{prefix}` is not a key prefix (lowercase words joined by `_`, e.g. `ak_live`)"),
                );
            }
        }
        CredentialRules {
            bearer: raw.bearer,
            headers,
            key_prefixes,
            require_checksum: raw.require_checksum,
        }
    }

    fn keys(
        &mut self,
        raw: Vec<(String, raw::RawKey)>,
        registry: &ScopeRegistry,
        tiers: &Tiers,
    ) -> Vec<Arc<KeyEntry>> {
        let mut keys: Vec<Arc<KeyEntry>> = Vec::new();
        for (path, key) in raw {
            let valid_id = !key.id.is_empty()
                && key.id.len() <= 64
                && key
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_id {
                self.error(
                    &join(&path, "id"),
                    format!("`{}` is not a key id (letters, digits, `_`, `-`)", key.id),
                );
                continue;
            }
            if keys.iter().any(|k| k.id() == key.id) {
                self.error(
                    &join(&path, "id"),
                    format!("key id `{}` is used twice", key.id),
                );
                continue;
            }
            let Some(hash) = KeyHash::parse(&key.hash) else {
                self.error(&join(&path, "hash"), "not a BLAKE3 hash; write `blake3:<64 hex digits>` as printed by `authmd-proxy keys hash`");
                continue;
            };
            if keys.iter().any(|k| k.hash == hash) {
                self.error(&join(&path, "hash"), "this hash belongs to another key too");
                continue;
            }
            let scopes = match registry.granted(key.scopes.iter().map(String::as_str)) {
                Ok(set) => set,
                Err((name, e)) => {
                    let at = key.scopes.iter().position(|s| s == name).unwrap_or(0);
                    self.unknown_scope(&format!("{path}.scopes[{at}]"), name, &e);
                    continue;
                }
            };
            let tier = match &key.tier {
                None => TierId(1),
                Some(name) => match tiers.find(name) {
                    Some(TierId::ANONYMOUS) => {
                        self.error(
                            &join(&path, "tier"),
                            "a key cannot be in the `anonymous` tier",
                        );
                        continue;
                    }
                    Some(id) => id,
                    None => {
                        self.unknown_tier(&join(&path, "tier"), name, tiers);
                        continue;
                    }
                },
            };
            let limits = (key.rate_limits.is_some() || key.quota.is_some()).then(|| {
                let rates = key.rate_limits.as_deref().map(|r| self.rates(r, &path));
                let quota = key.quota.as_deref().and_then(|q| self.quota(q, &path));
                let base = &tiers.get(tier).limits;
                Arc::new(LimitSet::with_own(base, &key.id, rates, quota))
            });
            let profile = Arc::new(KeyProfile {
                scopes,
                tier,
                scopes_header: crate::credentials::key_table::scopes_header(registry, &scopes),
                limits,
                is_static: true,
            });
            // The id was checked above: letters, digits, `_` and `-` make a header value.
            if let Some(entry) = KeyEntry::new(&key.id, hash, profile) {
                keys.push(Arc::new(entry));
            }
        }
        keys
    }

    fn unknown_tier(&mut self, path: &str, name: &str, tiers: &Tiers) {
        let hint = scope::closest(name, tiers.all().iter().map(|t| t.name.as_str()))
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        self.error(path, format!("unknown tier `{name}`{hint}"));
    }

    fn policy(
        &mut self,
        raw: Vec<(String, raw::RawRoute)>,
        default: RawDefault,
        ignore_case: bool,
        registry: &ScopeRegistry,
        tiers: &Tiers,
        discovery: &Discovery,
    ) -> Option<RouteTable> {
        let mut specs = Vec::new();
        let mut paths = Vec::new();
        let mut ids: HashSet<String> = HashSet::new();
        for (path, route) in raw {
            let template = match Template::parse(&route.path, ignore_case) {
                Ok(t) => t,
                Err(message) => {
                    self.error(&join(&path, "path"), format!("`{}` {message}", route.path));
                    continue;
                }
            };
            let mut methods = MethodSet::default();
            for (i, name) in route.methods.iter().enumerate() {
                match MethodSet::parse(name) {
                    Some(m) => methods.insert(m),
                    None => self.error(
                        &format!("{path}.methods[{i}]"),
                        format!("`{name}` is not an HTTP method"),
                    ),
                }
            }
            if route.methods.is_empty() {
                methods = MethodSet::ANY;
            }
            let required = match registry.required(route.scopes.iter().map(String::as_str)) {
                Ok(set) => set,
                Err((name, e)) => {
                    let at = route.scopes.iter().position(|s| s == name).unwrap_or(0);
                    self.unknown_scope(&format!("{path}.scopes[{at}]"), name, &e);
                    continue;
                }
            };
            let access = match route.access {
                RawAccess::Public => Access::Public,
                RawAccess::Anonymous => Access::Anonymous,
                RawAccess::Credential => Access::Credential,
            };
            if access == Access::Public && (!required.is_empty() || route.min_tier.is_some()) {
                self.error(&join(&path, "access"), "a public route cannot require scopes or a tier; use `anonymous` or `credential`");
                continue;
            }
            let min_tier = match &route.min_tier {
                None => None,
                Some(name) => match tiers.find(name) {
                    Some(id) => Some(id),
                    None => {
                        self.unknown_tier(&join(&path, "min_tier"), name, tiers);
                        continue;
                    }
                },
            };
            let id = route.id.clone().unwrap_or_else(|| {
                if route.methods.is_empty() {
                    route.path.clone()
                } else {
                    format!("{} {}", route.methods.join(","), route.path)
                }
            });
            if id.starts_with("authmd.") {
                self.error(
                    &join(&path, "id"),
                    format!("route id `{id}`: ids starting with `authmd.` name the proxy's own endpoints in metrics"),
                );
                continue;
            }
            if !ids.insert(id.clone()) {
                self.error(&join(&path, "id"), format!("route id `{id}` is used twice"));
                continue;
            }
            let scope_names = registry.names(&required);
            let resource = discovery.resource_of(&template);
            let challenges = discovery
                .origins
                .iter()
                .map(|origin| {
                    Challenges::new(
                        &format!("{origin}{PROTECTED_RESOURCE}{resource}"),
                        &scope_names,
                    )
                })
                .collect();
            specs.push(RouteSpec {
                template,
                route: Route {
                    id,
                    index: 0,
                    path: route.path.clone(),
                    methods,
                    access,
                    scopes: required,
                    min_tier,
                    metered: route.metered.unwrap_or(true),
                    challenges,
                },
            });
            paths.push(path);
        }
        let default = match default {
            RawDefault::Deny => DefaultRule::Deny,
            RawDefault::Public => DefaultRule::Public(Box::new(Route {
                id: "default".into(),
                index: 0,
                path: "/{*rest}".into(),
                methods: MethodSet::ANY,
                access: Access::Public,
                scopes: ScopeSet::EMPTY,
                min_tier: None,
                metered: true,
                challenges: Box::new([]),
            })),
        };
        match RouteTable::build(specs, default) {
            Ok(table) => Some(table),
            Err(conflicts) => {
                for conflict in conflicts {
                    let path = paths
                        .get(conflict.index)
                        .cloned()
                        .unwrap_or_else(|| "routes".into());
                    self.error(&join(&path, "path"), conflict.message);
                }
                None
            }
        }
    }
}

fn make_tier(name: &str, scopes: ScopeSet, registry: &ScopeRegistry, limits: LimitSet) -> Tier {
    Tier {
        limits: Arc::new(limits),
        name: name.to_owned(),
        scopes,
        header: HeaderValue::from_str(name).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        scopes_header: HeaderValue::from_str(&registry.names(&scopes))
            .unwrap_or_else(|_| HeaderValue::from_static("")),
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

#[cfg(test)]
mod public_url_tests {
    use super::default_public_url;

    #[test]
    fn an_unspecified_listen_address_is_published_as_localhost() {
        let url = |addr: &str| default_public_url(addr.parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(url("0.0.0.0:8080"), "http://localhost:8080");
        assert_eq!(url("[::]:9000"), "http://localhost:9000");
        assert_eq!(url("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("[::1]:8080"), "http://[::1]:8080");
    }
}
