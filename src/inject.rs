//! Sidecar injection: adds authmd-proxy next to the API container of every
//! Kubernetes workload annotated `authmd.dev/inject: enabled`.
//!
//! The input is multi-document YAML. A document that is not an annotated workload,
//! or that already has the sidecar, is written back byte for byte; an annotated one
//! is rewritten with the sidecar (as a native sidecar: an init container with
//! `restartPolicy: Always`, unless asked for a regular container), its config and
//! data volumes, and the Prometheus annotations. Injecting twice changes nothing.
//!
//! The proxy only protects what reaches it: a Service of the same input that
//! selects an injected workload and sends traffic to the API's own port is pointed
//! at the proxy's port instead ([`services`]). What cannot be fixed from the input
//! (no such Service, no public URL, a guessed API port) comes back as a
//! [`Warning`], which `authmd-proxy inject` prints on standard error.
//!
//! Annotations, on the workload or its pod template (the template's win):
//!
//! | annotation | default |
//! |---|---|
//! | `authmd.dev/inject` | `enabled` (or `true`) turns injection on |
//! | `authmd.dev/port` | `8080`: the pod port agents reach the API on |
//! | `authmd.dev/admin-port` | `9090`: health and metrics |
//! | `authmd.dev/upstream-port` | the first container's first port, else `3000` (with a warning) |
//! | `authmd.dev/public-url` | none (with a warning): the URL agents use, the proxy's `--public-url` |
//! | `authmd.dev/config` | `authmd-proxy`: the ConfigMap holding `config.yaml` |
//! | `authmd.dev/secret` | none: a Secret mounted at `/etc/authmd-secrets` (signing keys), whose `database-url` becomes `AUTHMD_DATABASE_URL` |
//! | `authmd.dev/image` | the `--image` of the command |
//! | `authmd.dev/native-sidecar` | `true`; `false` for clusters before 1.29 |

use std::fmt;

use serde_norway::{Mapping, Value};

mod services;

/// The image a sidecar runs unless told otherwise.
pub const DEFAULT_IMAGE: &str = concat!("authmd-proxy:", env!("CARGO_PKG_VERSION"));

/// The sidecar container's name; a pod with a container of this name is left alone.
pub const SIDECAR: &str = "authmd-proxy";

const PREFIX: &str = "authmd.dev/";

/// What an annotation does not say.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The sidecar image.
    pub image: String,
    /// Native sidecar (init container with `restartPolicy: Always`).
    pub native: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            image: DEFAULT_IMAGE.to_owned(),
            native: true,
        }
    }
}

/// Why the input could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A document is not YAML.
    #[error("document {document} (line {line}): not valid YAML: {message}")]
    Yaml {
        /// 1-based document number.
        document: usize,
        /// 1-based line in the whole input.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// An annotation's value cannot be used.
    #[error("{workload}: annotation `{annotation}`: {message}")]
    Annotation {
        /// `Kind/name`.
        workload: String,
        /// The annotation.
        annotation: String,
        /// What is wrong.
        message: String,
    },
    /// The workload's shape is not what its kind promises.
    #[error("{workload}: {message}")]
    Workload {
        /// `Kind/name`.
        workload: String,
        /// What is wrong.
        message: String,
    },
    /// The injected document could not be written back.
    #[error("cannot write YAML: {0}")]
    Write(String),
}

/// Something about an injected workload that leaves its API less protected than
/// it looks, and that the input alone cannot fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// No Service of the input selects the workload: its Service, wherever it is,
    /// must target the proxy's port, or traffic skips the proxy.
    NoService {
        /// `Kind/name`.
        workload: String,
        /// The proxy's port.
        proxy: u16,
        /// The API's port.
        api: u16,
    },
    /// A Service port reaches a port of an injected pod that the proxy does not
    /// front.
    Bypass {
        /// `Service/name`.
        service: String,
        /// The Service port, with its name when it has one.
        port: String,
        /// The container port it reaches.
        target: u16,
        /// `Kind/name` of the workload.
        workload: String,
    },
    /// No `authmd.dev/public-url`: the proxy names a localhost URL in its
    /// challenges and discovery documents unless its config sets `public_url`.
    NoPublicUrl {
        /// `Kind/name`.
        workload: String,
        /// The proxy's port.
        proxy: u16,
    },
    /// No `authmd.dev/upstream-port` and no declared container port: the proxy
    /// forwards to a guessed port.
    AssumedApiPort {
        /// `Kind/name`.
        workload: String,
        /// The port it forwards to.
        api: u16,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::NoService {
                workload,
                proxy,
                api,
            } => write!(
                f,
                "{workload}: no Service in this input selects it; its Service must use targetPort {proxy} (the proxy), not {api} (the API), or traffic skips the proxy"
            ),
            Warning::Bypass {
                service,
                port,
                target,
                workload,
            } => write!(
                f,
                "{service}: port {port} reaches port {target} of {workload} directly: the proxy does not front it, so that traffic skips it"
            ),
            Warning::NoPublicUrl { workload, proxy } => write!(
                f,
                "{workload}: no `{PREFIX}public-url` annotation: unless the proxy's config sets `public_url`, its challenges and discovery documents send agents to http://localhost:{proxy}"
            ),
            Warning::AssumedApiPort { workload, api } => write!(
                f,
                "{workload}: no container declares a port, so the proxy forwards to {api}; set `{PREFIX}upstream-port` to the port the API listens on"
            ),
        }
    }
}

/// The injected text and what to warn about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// The input with every annotated workload injected and its Services pointed
    /// at the proxy; other documents byte for byte.
    pub yaml: String,
    /// The workloads' own, in the order of the input; then the Services'.
    pub warnings: Vec<Warning>,
}

/// Injects every annotated workload of a multi-document YAML text, and points the
/// text's Services that select one at its proxy.
pub fn inject(text: &str, defaults: &Defaults) -> Result<Injected, InjectError> {
    let documents = documents(text);
    // Each document's value, with whether it was changed.
    let mut values: Vec<(Value, bool)> = Vec::with_capacity(documents.len());
    let mut workloads = Vec::new();
    let mut warnings = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        let value: Value = match serde_norway::from_str(document.body) {
            Ok(value) => value,
            Err(error) => {
                let message = error.to_string();
                let message = message
                    .rfind(" at line ")
                    .map_or(message.as_str(), |cut| &message[..cut])
                    .to_owned();
                return Err(InjectError::Yaml {
                    document: index + 1,
                    line: document.line + error.location().map_or(1, |l| l.line()) - 1,
                    message,
                });
            }
        };
        let mut value = value;
        let injected = inject_workload(&mut value, defaults, &mut warnings)?;
        let changed = injected.is_some();
        workloads.extend(injected);
        values.push((value, changed));
    }
    let mut selected = vec![false; workloads.len()];
    for (value, changed) in &mut values {
        if value.get("kind").and_then(Value::as_str) == Some("Service") {
            *changed |= services::retarget(value, &workloads, &mut selected, &mut warnings);
        }
    }
    for (workload, selected) in workloads.iter().zip(selected) {
        if !selected {
            warnings.push(Warning::NoService {
                workload: workload.name.clone(),
                proxy: workload.proxy,
                api: workload.api,
            });
        }
    }

    let mut yaml = String::with_capacity(text.len() + 2048);
    for (document, (value, changed)) in documents.iter().zip(values) {
        yaml.push_str(document.separator);
        if changed {
            let written =
                serde_norway::to_string(&value).map_err(|e| InjectError::Write(e.to_string()))?;
            yaml.push_str(&written);
        } else {
            yaml.push_str(document.body);
        }
    }
    Ok(Injected { yaml, warnings })
}

/// One document of a YAML stream: its `---` line (if any) and what follows it.
struct Document<'a> {
    separator: &'a str,
    body: &'a str,
    /// 1-based line of the body's first line.
    line: usize,
}

/// Splits a stream at its `---` lines, keeping every byte.
fn documents(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let (mut start, mut separator_end, mut line, mut body_line) = (0, 0, 1, 1);
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let is_separator =
            raw.starts_with("---") && raw[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator {
            if offset > 0 {
                documents.push(Document {
                    separator: &text[start..separator_end],
                    body: &text[separator_end..offset],
                    line: body_line,
                });
            }
            start = offset;
            separator_end = offset + raw.len();
            body_line = line + 1;
        }
        offset += raw.len();
        line += 1;
    }
    documents.push(Document {
        separator: &text[start..separator_end],
        body: &text[separator_end..],
        line: body_line,
    });
    documents
}

/// Injects one document; false when it is left as it was. The admission webhook's
/// way in: a pod under admission has no Service beside it, so there is nothing to
/// retarget, and no one reads warnings about pods that controllers create.
pub fn inject_document(document: &mut Value, defaults: &Defaults) -> Result<bool, InjectError> {
    Ok(inject_workload(document, defaults, &mut Vec::new())?.is_some())
}

/// Injects one document; what a Service needs to know about the workload when it
/// was injected, `None` when it is left as it was.
fn inject_workload(
    document: &mut Value,
    defaults: &Defaults,
    warnings: &mut Vec<Warning>,
) -> Result<Option<services::Workload>, InjectError> {
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // A pod under admission may have only a `generateName` (`api-7d4b9-`).
    let metadata = document.get("metadata");
    let name = match (
        metadata.and_then(|m| m.get("name")).and_then(Value::as_str),
        metadata
            .and_then(|m| m.get("generateName"))
            .and_then(Value::as_str),
    ) {
        (Some(name), _) => name.to_owned(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "<unnamed>".to_owned(),
    };
    let workload = format!("{kind}/{name}");
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut annotations = annotations_of(document);
    let Some(template) = pod_template(document, &kind) else {
        return Ok(None);
    };
    annotations.extend(annotations_of(template));
    let enabled = annotations
        .iter()
        .find(|(k, _)| k == "authmd.dev/inject")
        .is_some_and(|(_, v)| v == "enabled" || v == "true");
    if !enabled {
        return Ok(None);
    }
    let Some(settings) = inject_template(template, &annotations, defaults, &workload)? else {
        return Ok(None);
    };
    if settings.assumed_upstream {
        warnings.push(Warning::AssumedApiPort {
            workload: workload.clone(),
            api: settings.upstream_port,
        });
    }
    if settings.public_url.is_none() {
        warnings.push(Warning::NoPublicUrl {
            workload: workload.clone(),
            proxy: settings.port,
        });
    }
    Ok(Some(services::Workload::of(
        workload, namespace, template, &settings,
    )))
}

/// The `authmd.dev/*` annotations of a value's `metadata`.
fn annotations_of(value: &Value) -> Vec<(String, String)> {
    let Some(Value::Mapping(map)) = value.get("metadata").and_then(|m| m.get("annotations")) else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let key = k.as_str()?;
            key.starts_with(PREFIX).then(|| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                (key.to_owned(), value)
            })
        })
        .collect()
}

/// The pod template of a workload kind (the pod itself for a Pod).
fn pod_template<'v>(document: &'v mut Value, kind: &str) -> Option<&'v mut Value> {
    match kind {
        "Pod" => Some(document),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            document.get_mut("spec")?.get_mut("template")
        }
        "CronJob" => document
            .get_mut("spec")?
            .get_mut("jobTemplate")?
            .get_mut("spec")?
            .get_mut("template"),
        _ => None,
    }
}

/// The settings an injection uses, from the annotations and defaults.
struct Settings {
    port: u16,
    admin_port: u16,
    upstream_port: u16,
    /// No annotation and no declared port said where the API listens.
    assumed_upstream: bool,
    public_url: Option<String>,
    config: String,
    secret: Option<String>,
    image: String,
    native: bool,
}

fn settings(
    annotations: &[(String, String)],
    defaults: &Defaults,
    workload: &str,
    first_port: Option<u16>,
) -> Result<Settings, InjectError> {
    let get = |name: &str| {
        annotations
            .iter()
            .rev()
            .find(|(k, _)| k.strip_prefix(PREFIX) == Some(name))
            .map(|(_, v)| v.as_str())
    };
    let bad = |name: &str, message: String| InjectError::Annotation {
        workload: workload.to_owned(),
        annotation: format!("{PREFIX}{name}"),
        message,
    };
    let port = |name: &str, default: u16| -> Result<u16, InjectError> {
        match get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(name, format!("`{text}` is not a port (1-65535)"))),
        }
    };
    let settings = Settings {
        port: port("port", 8080)?,
        admin_port: port("admin-port", 9090)?,
        upstream_port: port("upstream-port", first_port.unwrap_or(3000))?,
        assumed_upstream: get("upstream-port").is_none() && first_port.is_none(),
        public_url: match get("public-url") {
            None => None,
            Some(text) => Some(
                origin(text).ok_or_else(|| {
                    bad(
                        "public-url",
                        format!("`{text}` is not an origin such as `https://api.example.com` (no path, query or fragment)"),
                    )
                })?,
            ),
        },
        config: get("config").unwrap_or("authmd-proxy").to_owned(),
        secret: get("secret").map(str::to_owned),
        image: get("image").unwrap_or(&defaults.image).to_owned(),
        native: match get("native-sidecar") {
            None => defaults.native,
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(bad(
                    "native-sidecar",
                    format!("`{other}` is not `true` or `false`"),
                ));
            }
        },
    };
    if settings.port == settings.upstream_port {
        return Err(bad(
            "port",
            format!(
                "the proxy and the API would both listen on {}; set `{PREFIX}port` or `{PREFIX}upstream-port`",
                settings.port
            ),
        ));
    }
    if settings.port == settings.admin_port || settings.admin_port == settings.upstream_port {
        return Err(bad(
            "admin-port",
            format!("{} is already used", settings.admin_port),
        ));
    }
    if settings.secret.as_deref() == Some("") {
        return Err(bad("secret", "the Secret name cannot be empty".into()));
    }
    if settings.config.is_empty() || settings.image.is_empty() {
        return Err(bad(
            "config",
            "the ConfigMap and image names cannot be empty".into(),
        ));
    }
    Ok(settings)
}

/// `text` without its trailing `/` when it is an http(s) origin, as the proxy's
/// `--public-url` wants it: the pod would not start otherwise.
fn origin(text: &str) -> Option<String> {
    let trimmed = text.trim_end_matches('/');
    let uri = trimmed.parse::<http::Uri>().ok()?;
    let origin = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some()
        && uri
            .path_and_query()
            .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/");
    origin.then(|| trimmed.to_owned())
}

/// Adds the sidecar to a pod template (a value with `metadata` and `spec`); its
/// settings, or `None` when it already has one.
fn inject_template(
    template: &mut Value,
    annotations: &[(String, String)],
    defaults: &Defaults,
    workload: &str,
) -> Result<Option<Settings>, InjectError> {
    let shape = |message: &str| InjectError::Workload {
        workload: workload.to_owned(),
        message: message.to_owned(),
    };
    let spec = template
        .get("spec")
        .ok_or_else(|| shape("the pod template has no `spec`"))?;
    let containers = spec
        .get("containers")
        .and_then(Value::as_sequence)
        .ok_or_else(|| shape("the pod spec has no `containers` list"))?;
    let named = |list: Option<&Value>| {
        list.and_then(Value::as_sequence).is_some_and(|items| {
            items
                .iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR))
        })
    };
    if named(spec.get("containers")) || named(spec.get("initContainers")) {
        return Ok(None);
    }
    let first_port = containers
        .first()
        .and_then(|c| c.get("ports"))
        .and_then(Value::as_sequence)
        .and_then(|ports| ports.first())
        .and_then(|p| p.get("containerPort"))
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok());
    let settings = settings(annotations, defaults, workload, first_port)?;
    let taken = containers.iter().any(|c| {
        c.get("ports")
            .and_then(Value::as_sequence)
            .is_some_and(|ports| {
                ports.iter().any(|p| {
                    let port = p.get("containerPort").and_then(Value::as_u64);
                    port == Some(u64::from(settings.port))
                        || port == Some(u64::from(settings.admin_port))
                })
            })
    });
    if taken {
        return Err(InjectError::Annotation {
            workload: workload.to_owned(),
            annotation: format!("{PREFIX}port"),
            message: format!(
                "a container already uses port {} or {}",
                settings.port, settings.admin_port
            ),
        });
    }

    let sidecar = sidecar(&settings)?;
    let Value::Mapping(template) = template else {
        return Err(shape("the pod template is not a mapping"));
    };
    let spec = mapping_in(template, "spec", workload)?;
    if settings.native {
        sequence(spec, "initContainers", workload)?.insert(0, sidecar);
    } else {
        sequence(spec, "containers", workload)?.push(sidecar);
    }
    let volumes = sequence(spec, "volumes", workload)?;
    for volume in self::volumes(&settings)? {
        let name = volume.get("name").and_then(Value::as_str);
        let exists = volumes
            .iter()
            .any(|v| v.get("name").and_then(Value::as_str) == name);
        if !exists {
            volumes.push(volume);
        }
    }
    // Room for the proxy's shutdown delay and grace period.
    let grace = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(30);
    if grace < 45 {
        spec.insert(
            Value::from("terminationGracePeriodSeconds"),
            Value::from(45u64),
        );
    }
    let metadata = mapping_in(template, "metadata", workload)?;
    let annotations = mapping_in(metadata, "annotations", workload)?;
    for (key, value) in [
        ("authmd.dev/status", "injected".to_owned()),
        ("prometheus.io/scrape", "true".to_owned()),
        ("prometheus.io/port", settings.admin_port.to_string()),
        ("prometheus.io/path", "/metrics".to_owned()),
    ] {
        annotations
            .entry(Value::from(key))
            .or_insert_with(|| Value::from(value));
    }
    Ok(Some(settings))
}

/// The sidecar container, in the order a person would write it.
fn sidecar(settings: &Settings) -> Result<Value, InjectError> {
    // Strings from annotations are written as JSON string literals, which YAML
    // reads back verbatim whatever they contain.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let (port, admin, upstream) = (settings.port, settings.admin_port, settings.upstream_port);
    let restart = if settings.native {
        "restartPolicy: Always\n"
    } else {
        ""
    };
    let yaml = format!(
        "name: {SIDECAR}
image: {image}
args: [run, --config, /etc/authmd/config.yaml, --listen, \"0.0.0.0:{port}\", --admin-listen, \"0.0.0.0:{admin}\", --upstream, \"http://127.0.0.1:{upstream}\", --data-dir, /var/lib/authmd{public_url}]
{env}{restart}ports:
  - {{name: authmd, containerPort: {port}, protocol: TCP}}
  - {{name: authmd-admin, containerPort: {admin}, protocol: TCP}}
readinessProbe:
  httpGet: {{path: /readyz, port: authmd-admin}}
  periodSeconds: 5
  failureThreshold: 2
livenessProbe:
  httpGet: {{path: /healthz, port: authmd-admin}}
  periodSeconds: 10
  failureThreshold: 3
resources:
  requests: {{cpu: 50m, memory: 64Mi}}
  limits: {{memory: 128Mi}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {{drop: [ALL]}}
volumeMounts:
  - {{name: authmd-config, mountPath: /etc/authmd, readOnly: true}}
  - {{name: authmd-data, mountPath: /var/lib/authmd}}
{secret_mount}",
        image = quote(&settings.image),
        public_url = match &settings.public_url {
            Some(url) => format!(", --public-url, {}", quote(url)),
            None => String::new(),
        },
        secret_mount = if settings.secret.is_some() {
            "  - {name: authmd-secrets, mountPath: /etc/authmd-secrets, readOnly: true}\n"
        } else {
            ""
        },
        env = match &settings.secret {
            Some(name) => format!(
                "env:\n  - name: AUTHMD_DATABASE_URL\n    valueFrom: {{secretKeyRef: {{name: {}, key: database-url, optional: true}}}}\n",
                quote(name)
            ),
            None => String::new(),
        },
    );
    serde_norway::from_str(&yaml).map_err(|e| InjectError::Write(e.to_string()))
}

/// The sidecar's volumes: the config from its ConfigMap, a data directory, and the
/// Secret when one is named.
fn volumes(settings: &Settings) -> Result<Vec<Value>, InjectError> {
    let mut yaml = format!(
        "- {{name: authmd-config, configMap: {{name: {config}}}}}\n- {{name: authmd-data, emptyDir: {{}}}}\n",
        config = serde_json::Value::from(settings.config.as_str()),
    );
    if let Some(secret) = &settings.secret {
        yaml.push_str(&format!(
            "- {{name: authmd-secrets, secret: {{secretName: {}}}}}\n",
            serde_json::Value::from(secret.as_str())
        ));
    }
    serde_norway::from_str(&yaml).map_err(|e| InjectError::Write(e.to_string()))
}

/// `map[key]` as a mapping, created when absent or null; an error when it is
/// something else (the workload is not what its kind promises).
fn mapping_in<'m>(
    map: &'m mut Mapping,
    key: &str,
    workload: &str,
) -> Result<&'m mut Mapping, InjectError> {
    let slot = map
        .entry(Value::from(key))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if slot.is_null() {
        *slot = Value::Mapping(Mapping::new());
    }
    slot.as_mapping_mut().ok_or_else(|| InjectError::Workload {
        workload: workload.to_owned(),
        message: format!("`{key}` is not a mapping"),
    })
}

/// `map[key]` as a list, created when absent or null.
fn sequence<'m>(
    map: &'m mut Mapping,
    key: &str,
    workload: &str,
) -> Result<&'m mut Vec<Value>, InjectError> {
    let slot = map
        .entry(Value::from(key))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if slot.is_null() {
        *slot = Value::Sequence(Vec::new());
    }
    slot.as_sequence_mut().ok_or_else(|| InjectError::Workload {
        workload: workload.to_owned(),
        message: format!("`{key}` is not a list"),
    })
}
