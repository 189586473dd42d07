//! Taking the file apart: YAML text -> a YAML value with `${VAR}` substituted ->
//! one raw struct per top-level section ([`Sections`]), and the [`Loader`] that
//! collects every problem on the way with its place in the file.
//!
//! Secrets are masked here, where errors are recorded: a value that came from the
//! environment, or a field named like a secret, is never echoed in any message.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::locate::{Locations, join};
use super::raw::{self, RawDefault};
use crate::scope;

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

impl ConfigError {
    /// The problem as one line: `file:line:column: path: message`.
    #[must_use]
    pub fn located(&self, file: &str) -> String {
        let mut line = file.to_owned();
        if let Some((row, column)) = self.position {
            line.push_str(&format!(":{row}:{column}"));
        }
        if !self.path.is_empty() {
            line.push_str(": ");
            line.push_str(&self.path);
        }
        line.push_str(": ");
        line.push_str(&self.message);
        line
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&e.located(&self.file))?;
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
    "oauth",
    "tokens",
    "trusted_issuers",
    "limits",
    "payments",
    "tls",
    "login",
];

/// The shortest value from the environment that is hidden wherever it appears.
const MIN_SECRET_LEN: usize = 4;

/// Collects errors while the document is taken apart.
pub(super) struct Loader {
    /// Directory that relative file names in the config are resolved against.
    base: PathBuf,
    locations: Locations,
    pub(super) errors: Vec<ConfigError>,
    /// What the config does that is allowed but probably not meant (the config
    /// still loads): `check` prints them, `run` and a reload log them.
    pub(super) warnings: Vec<ConfigError>,
    /// Paths whose values came from the environment, with the value they ended up
    /// with: never echoed, though an error there still says what is wrong.
    secret_paths: HashMap<String, String>,
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
pub(super) struct Sections {
    pub(super) listen: Option<String>,
    pub(super) admin_listen: Option<Option<String>>,
    pub(super) public_url: Option<String>,
    pub(super) service: raw::RawService,
    pub(super) server: raw::RawServer,
    pub(super) upstream: Option<raw::RawUpstream>,
    /// The file has an `upstream:` section, even one that failed to parse (whose
    /// error is then reported instead of "missing section").
    pub(super) upstream_written: bool,
    pub(super) credentials: raw::RawCredentials,
    pub(super) scopes: Vec<(String, String)>,
    pub(super) tiers: Vec<(String, raw::RawTier)>,
    pub(super) keys: Vec<(String, raw::RawKey)>,
    pub(super) routes: Vec<(String, raw::RawRoute)>,
    pub(super) default: RawDefault,
    pub(super) paths: raw::RawPaths,
    pub(super) log: raw::RawLog,
    pub(super) discovery: raw::RawDiscovery,
    pub(super) endpoints: raw::RawEndpoints,
    pub(super) store: raw::RawStore,
    pub(super) registration: raw::RawRegistration,
    pub(super) key_management: raw::RawKeyManagement,
    pub(super) oauth: raw::RawInteractive,
    pub(super) tokens: Option<raw::RawTokens>,
    pub(super) trusted_issuers: Vec<(String, raw::RawTrustedIssuer)>,
    pub(super) limits: raw::RawLimits,
    pub(super) payments: Option<raw::RawPayments>,
    pub(super) tls: Option<raw::RawTls>,
    pub(super) login: Option<raw::RawLogin>,
}

impl Loader {
    /// A loader for `text`, read from `file` (relative file names in the config are
    /// resolved against its directory).
    pub(super) fn new(text: &str, file: &str) -> Loader {
        Loader {
            base: Path::new(file)
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default(),
            locations: Locations::index(text),
            errors: Vec::new(),
            warnings: Vec::new(),
            secret_paths: HashMap::new(),
            secret_values: Vec::new(),
        }
    }

    /// Records a problem at `path`; the first problem at a path is the one reported
    /// (a value that failed substitution is not then also called malformed).
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        if self
            .errors
            .iter()
            .any(|e| e.path == path && !path.is_empty())
        {
            return;
        }
        let message = self.mask(path, message.into());
        self.errors.push(ConfigError {
            path: path.to_owned(),
            position: self.locations.find(path),
            message,
        });
    }

    /// Records a warning at `path`: the config loads, but does something its
    /// author probably did not mean. Masked as errors are.
    pub(super) fn warn(&mut self, path: &str, message: impl Into<String>) {
        let message = self.mask(path, message.into());
        self.warnings.push(ConfigError {
            path: path.to_owned(),
            position: self.locations.find(path),
            message,
        });
    }

    /// The message with every value from the environment taken out. The field's
    /// own value, where the message quotes it, becomes "the value from the
    /// environment (not shown)", so that the reason it is wrong still shows; a
    /// message that would still contain it is replaced as a whole.
    fn mask(&self, path: &str, mut message: String) -> String {
        let field = path.rsplit(['.', '[']).next().unwrap_or(path);
        if ["secret", "password", "private"]
            .iter()
            .any(|word| field.contains(word))
        {
            return "invalid value (not shown: it may be a secret)".to_owned();
        }
        let own = self.secret_paths.iter().find_map(|(p, value)| {
            let inside = path == p
                || path.starts_with(&format!("{p}."))
                || path.starts_with(&format!("{p}["));
            inside.then_some(value.as_str())
        });
        if let Some(value) = own {
            let escaped = format!("{value:?}");
            for quoted in [
                format!("string {escaped}"),
                escaped.clone(),
                format!("`{value}`"),
            ] {
                message = message.replace(&quoted, "the value from the environment (not shown)");
            }
            let inner = escaped.trim_matches('"');
            if value.len() >= MIN_SECRET_LEN && (message.contains(value) || message.contains(inner))
            {
                return "invalid value from the environment (not shown)".to_owned();
            }
        }
        for value in &self.secret_values {
            if message.contains(value.as_str()) {
                message = message.replace(value.as_str(), "(a value from the environment)");
            }
        }
        message
    }

    /// Parses the document, substitutes the environment and splits it into its
    /// sections; `None` when it is not YAML or not a mapping.
    pub(super) fn read(
        &mut self,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Sections> {
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
        self.sections(document)
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
                    self.secret_paths.insert(path.to_owned(), out.clone());
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
    pub(super) fn take<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
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
                self.error(&full, plain(&e.into_inner().to_string()));
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
                "upstream" => {
                    s.upstream_written = true;
                    s.upstream = self.take(value, path);
                }
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
                "oauth" => s.oauth = self.take(value, path).unwrap_or_default(),
                "tokens" => s.tokens = Some(self.take(value, path).unwrap_or_default()),
                "trusted_issuers" => s.trusted_issuers = self.take_list(value, path),
                "limits" => s.limits = self.take(value, path).unwrap_or_default(),
                "payments" => s.payments = self.take(value, path),
                "tls" => s.tls = self.take(value, path),
                "login" => s.login = Some(self.take(value, path).unwrap_or_default()),
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

    /// A file named in the config, relative to the config file's directory.
    pub(super) fn resolve(&self, file: &str) -> PathBuf {
        let path = Path::new(file);
        if path.is_absolute() {
            return path.to_owned();
        }
        self.base.join(path)
    }
}

/// A deserializer's message in the file's terms: what the field expects first, in
/// YAML words (a mapping, a list, a whole number up to its limit) rather than the
/// Rust type's name, then what was found.
fn plain(message: &str) -> String {
    if message.starts_with("data did not match any variant of untagged enum RawSize") {
        return "expected a size such as `16MiB` or a number of bytes".to_owned();
    }
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    let Some((found, expected)) = rest.and_then(|rest| rest.rsplit_once(", expected ")) else {
        return message.to_owned();
    };
    let expected = match expected {
        "struct RawUpstream" => "a mapping such as `{url: http://127.0.0.1:3000}`",
        e if e.starts_with("struct ") => "a mapping of settings",
        "a sequence" => "a list",
        "a boolean" => "`true` or `false`",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number, 0 or more",
        e => e,
    };
    format!("expected {expected}, found {found}")
}
