//! The `authmd-proxy` command line: `run`, `check`, `health`, `inject`, `injector`,
//! `keys`, `tokens` and `render`.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use authmd_proxy::config::{Config, Overrides, SigningSource};
use authmd_proxy::credentials::{KeyHash, api_key};
use authmd_proxy::gateway::Gateway;
use authmd_proxy::injector::{self, FailurePolicy, Injector};
use authmd_proxy::reload::Reloader;
use authmd_proxy::server::{self, Running};
use authmd_proxy::store::{KeyRecord, Store, unix_now};
use authmd_proxy::tls::{ServerFiles, ServerTls};
use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey, SigningKeys};
use clap::{Parser, Subcommand};

/// Exit status for a bad configuration or usage (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

/// Agent-ready authentication in front of any HTTP API, from one YAML file.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the proxy.
    Run {
        /// The YAML config file.
        #[arg(long, short, env = "AUTHMD_CONFIG")]
        config: PathBuf,
        /// Listen address, overriding `listen`.
        #[arg(long, env = "AUTHMD_LISTEN")]
        listen: Option<SocketAddr>,
        /// Admin listen address, overriding `admin_listen`.
        #[arg(long, env = "AUTHMD_ADMIN_LISTEN")]
        admin_listen: Option<SocketAddr>,
        /// Public base URL, overriding `public_url`.
        #[arg(long, env = "AUTHMD_PUBLIC_URL")]
        public_url: Option<String>,
        /// Runtime worker threads, overriding `server.worker_threads` (1 = single-threaded).
        #[arg(long)]
        workers: Option<usize>,
        /// Data directory of the SQLite store, overriding `store.data_dir`.
        #[arg(long, env = "AUTHMD_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Upstream URL, overriding `upstream.url` (a sidecar's is on localhost).
        #[arg(long, env = "AUTHMD_UPSTREAM")]
        upstream: Option<String>,
    },
    /// Add the authmd-proxy sidecar to every Kubernetes workload annotated
    /// `authmd.dev/inject: enabled`, reading YAML from the files (or standard input)
    /// and writing it to standard output; other documents pass through unchanged.
    Inject {
        /// YAML files (multi-document); `-` or none reads standard input.
        files: Vec<PathBuf>,
        /// The sidecar image, unless a workload's `authmd.dev/image` names one.
        #[arg(long, default_value = authmd_proxy::inject::DEFAULT_IMAGE)]
        image: String,
        /// Add a regular container instead of a native sidecar (an init container
        /// with `restartPolicy: Always`, Kubernetes 1.29 and later).
        #[arg(long)]
        legacy_sidecar: bool,
    },
    /// Ask a running proxy's admin listener whether it is healthy (`/healthz`) or
    /// ready (`--ready`, `/readyz`): exit 0 if so, 1 if not. The container image's
    /// health check.
    Health {
        /// The admin listener's address (`0.0.0.0` means this host).
        #[arg(long, env = "AUTHMD_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Ask `/readyz` instead of `/healthz`.
        #[arg(long)]
        ready: bool,
    },
    /// Serve sidecar injection as a Kubernetes mutating admission webhook:
    /// `AdmissionReview` v1 at `POST /inject` over HTTPS, answered with a JSON Patch;
    /// `GET /healthz` for probes. The certificate is re-read when its files change.
    Injector {
        /// Listen address.
        #[arg(long, env = "AUTHMD_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        /// PEM certificate chain, leaf first (its names must include the Service's
        /// DNS name, e.g. `authmd-injector.authmd-system.svc`).
        #[arg(long, default_value = "/etc/authmd-injector/tls/tls.crt")]
        cert_file: PathBuf,
        /// PEM private key.
        #[arg(long, default_value = "/etc/authmd-injector/tls/tls.key")]
        key_file: PathBuf,
        /// The sidecar image, unless a pod's `authmd.dev/image` names one.
        #[arg(long, env = "AUTHMD_SIDECAR_IMAGE", default_value = authmd_proxy::inject::DEFAULT_IMAGE)]
        image: String,
        /// Add a regular container instead of a native sidecar (clusters before 1.29).
        #[arg(long)]
        legacy_sidecar: bool,
        /// A pod whose annotations cannot be used: `fail` denies it with the
        /// reason, `ignore` creates it without the sidecar and with a warning.
        #[arg(long, default_value = "fail")]
        failure_policy: FailurePolicy,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        json_logs: bool,
    },
    /// Validate a config file: exit 0, or print every problem and exit 64.
    Check {
        /// The YAML config file.
        #[arg(long, short, env = "AUTHMD_CONFIG")]
        config: PathBuf,
    },
    /// Mint and hash API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the keys that sign the proxy's access tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Print a generated document.
    #[command(subcommand)]
    Render(RenderCommand),
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
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
        /// The YAML config file.
        #[arg(long, short, env = "AUTHMD_CONFIG")]
        config: PathBuf,
        /// Data directory, overriding `store.data_dir`.
        #[arg(long, env = "AUTHMD_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RenderCommand {
    /// The auth.md the proxy serves at `/auth.md` (for the primary public URL).
    #[command(name = "auth-md")]
    AuthMd {
        /// The YAML config file.
        #[arg(long, short, env = "AUTHMD_CONFIG")]
        config: PathBuf,
        /// Public base URL, overriding `public_url`.
        #[arg(long)]
        public_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Mint a key from the OS random source and print it with its hash.
    Generate {
        /// Key prefix, e.g. `ak_live`.
        #[arg(long)]
        prefix: String,
    },
    /// Print the BLAKE3 hash of a key read from standard input.
    Hash,
    /// Create a key in the configured store and print it (the secret is shown once).
    Create {
        /// The YAML config file.
        #[arg(long, short, env = "AUTHMD_CONFIG")]
        config: PathBuf,
        /// A name for the key.
        #[arg(long)]
        name: String,
        /// Scopes, comma- or space-separated.
        #[arg(long, default_value = "")]
        scopes: String,
        /// Tier (default: the lowest tier above `anonymous`).
        #[arg(long)]
        tier: Option<String>,
        /// Owner account (keys of the same owner manage each other).
        #[arg(long, default_value = "operator")]
        owner: String,
        /// Rate limits of its own instead of its tier's, e.g. `10/s,300/min`.
        #[arg(long)]
        rate_limits: Option<String>,
        /// A quota of its own instead of its tier's, e.g. `5000/month`.
        #[arg(long)]
        quota: Option<String>,
    },
    /// List the keys in the configured store (never their secrets).
    List {
        /// The YAML config file.
        #[arg(long, short, env = "AUTHMD_CONFIG")]
        config: PathBuf,
    },
    /// Revoke a key in the configured store by id.
    Revoke {
        /// The YAML config file.
        #[arg(long, short, env = "AUTHMD_CONFIG")]
        config: PathBuf,
        /// The key's id (`key_...`).
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            listen,
            admin_listen,
            public_url,
            workers,
            data_dir,
            upstream,
        } => {
            let overrides = Overrides {
                listen,
                admin_listen,
                public_url,
                data_dir,
                upstream,
            };
            run(&config, overrides, workers)
        }
        Command::Check { config } => check(&config),
        Command::Health { admin, ready } => health(admin, ready),
        Command::Injector {
            listen,
            cert_file,
            key_file,
            image,
            legacy_sidecar,
            failure_policy,
            json_logs,
        } => {
            init_logging("info", json_logs);
            let defaults = authmd_proxy::inject::Defaults {
                image,
                native: !legacy_sidecar,
            };
            let files = ServerFiles {
                cert: cert_file,
                key: key_file,
                client_ca: None,
            };
            let injector = Injector::new(defaults, failure_policy);
            match serve_injector(listen, files, injector) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    tracing::error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Inject {
            files,
            image,
            legacy_sidecar,
        } => inject(&files, &image, !legacy_sidecar),
        Command::Render(RenderCommand::AuthMd { config, public_url }) => {
            let overrides = Overrides {
                public_url,
                ..Overrides::default()
            };
            match Config::load(&config, &overrides) {
                Ok(config) => {
                    let text = config.discovery.auth_md.clone().unwrap_or_else(|| {
                        authmd_proxy::discovery::auth_md::render(&config, &config.public_url)
                    });
                    out(&text)
                }
                Err(errors) => fail(&errors.to_string(), EX_USAGE),
            }
        }
        Command::Tokens(TokensCommand::GenerateKey { algorithm }) => {
            let algorithm = match algorithm.as_str() {
                "EdDSA" => SigningAlgorithm::EdDsa,
                "ES256" => SigningAlgorithm::Es256,
                other => return fail(&format!("`{other}` is not `EdDSA` or `ES256`"), EX_USAGE),
            };
            match SigningKey::generate(algorithm) {
                Ok((_, pem)) => out(&pem),
                Err(error) => fail(&error.to_string(), 1),
            }
        }
        Command::Tokens(TokensCommand::RotateKey { config, data_dir }) => {
            rotate_key(&config, data_dir)
        }
        Command::Keys(KeysCommand::Generate { prefix }) => match api_key::mint(&prefix) {
            Ok(key) => out(&format!(
                "key:  {}\nhash: {}\n",
                key.secret.as_str(),
                key.hash
            )),
            Err(error) => fail(&error.to_string(), EX_USAGE),
        },
        Command::Keys(KeysCommand::Create {
            config,
            name,
            scopes,
            tier,
            owner,
            rate_limits,
            quota,
        }) => with_store(&config, |config, store| async move {
            let limits = own_limits(rate_limits.as_deref(), quota.as_deref())?;
            create_key(
                &config,
                &store,
                name,
                &scopes,
                tier.as_deref(),
                owner,
                limits,
            )
            .await
        }),
        Command::Keys(KeysCommand::List { config }) => {
            with_store(&config, |_, store| async move { list_keys(&store).await })
        }
        Command::Keys(KeysCommand::Revoke { config, id }) => {
            with_store(&config, |_, store| async move {
                match store.revoke_key(&id, unix_now()).await {
                    Ok(Some(_)) => Ok(format!("revoked {id}\n")),
                    Ok(None) => Err((format!("no live key `{id}` in the store"), 1)),
                    Err(error) => Err((error.to_string(), 1)),
                }
            })
        }
        Command::Keys(KeysCommand::Hash) => {
            let mut input = String::new();
            if let Err(error) = std::io::stdin().read_to_string(&mut input) {
                return fail(&format!("cannot read standard input: {error}"), 1);
            }
            let key = input.trim_end_matches(['\r', '\n']);
            if key.is_empty() {
                return fail("no key on standard input", EX_USAGE);
            }
            out(&format!("{}\n", KeyHash::of(key)))
        }
    }
}

fn rotate_key(path: &Path, data_dir: Option<PathBuf>) -> ExitCode {
    let overrides = Overrides {
        data_dir,
        ..Overrides::default()
    };
    let config = match Config::load(path, &overrides) {
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
            let mut text = format!(
                "signing key: {kid}
"
            );
            for old in pruned {
                text.push_str(&format!("deleted: {old} (no live token needs it)\n"));
            }
            out(&text)
        }
        Err(error) => fail(&error.to_string(), 1),
    }
}

/// Runs an operator command against the configured store.
fn with_store<F, Fut>(path: &Path, command: F) -> ExitCode
where
    F: FnOnce(Config, Store) -> Fut,
    Fut: std::future::Future<Output = Result<String, (String, u8)>>,
{
    let config = match Config::load(path, &Overrides::default()) {
        Ok(config) => config,
        Err(errors) => return fail(&errors.to_string(), EX_USAGE),
    };
    let runtime = match current_thread() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let store = match Store::open(&config.lifecycle.store).await {
            Ok(Some(store)) => store,
            Ok(None) => {
                return Err((
                    "the config has `store: {kind: none}`; keys live in the config file".to_owned(),
                    EX_USAGE,
                ));
            }
            Err(error) => return Err((error.to_string(), 1)),
        };
        command(config, store).await
    });
    match result {
        Ok(text) => out(&text),
        Err((message, code)) => fail(&message, code),
    }
}

/// The stored form of `--rate-limits` and `--quota` (checked here, so a key is
/// never stored with limits the proxy would refuse).
fn own_limits(rates: Option<&str>, quota: Option<&str>) -> Result<Option<String>, (String, u8)> {
    if rates.is_none() && quota.is_none() {
        return Ok(None);
    }
    let rates: Option<Vec<&str>> = rates.map(|text| {
        text.split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect()
    });
    if let Some(rates) = &rates {
        authmd_proxy::limits::parse_rates(rates).map_err(|errors| {
            let messages: Vec<String> = errors.into_iter().map(|(_, m)| m).collect();
            (messages.join("; "), EX_USAGE)
        })?;
    }
    if let Some(quota) = quota {
        authmd_proxy::limits::parse_quota(quota).map_err(|e| (e, EX_USAGE))?;
    }
    let mut own = serde_json::Map::new();
    if let Some(rates) = rates {
        own.insert("rate_limits".into(), serde_json::json!(rates));
    }
    if let Some(quota) = quota {
        own.insert("quota".into(), serde_json::json!(quota));
    }
    Ok(Some(serde_json::Value::Object(own).to_string()))
}

async fn create_key(
    config: &Config,
    store: &Store,
    name: String,
    scopes: &str,
    tier: Option<&str>,
    owner: String,
    limits: Option<String>,
) -> Result<String, (String, u8)> {
    let prefix = &config.lifecycle.keys.prefix;
    if prefix.is_empty() {
        return Err((
            "declare `credentials.key_prefixes` first".to_owned(),
            EX_USAGE,
        ));
    }
    let names: Vec<String> = scopes
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Err((name, _)) = config.scopes.granted(names.iter().map(String::as_str)) {
        return Err((format!("unknown scope `{name}`"), EX_USAGE));
    }
    let tier = match tier {
        Some(name) => match config.tiers.find(name) {
            Some(id) if id.0 > 0 => config.tiers.get(id).name.clone(),
            _ => return Err((format!("`{name}` is not a tier a key can have"), EX_USAGE)),
        },
        None => config.tiers.get(authmd_proxy::tier::TierId(1)).name.clone(),
    };
    let new = api_key::mint(prefix).map_err(|e| (e.to_string(), 1))?;
    let record = KeyRecord {
        limits,
        ..KeyRecord::new(
            api_key::public_id("key").map_err(|e| (e.to_string(), 1))?,
            new.hash,
            prefix.clone(),
            name,
            owner,
            names,
            tier,
            unix_now(),
        )
    };
    store
        .insert_key(&record)
        .await
        .map_err(|e| (e.to_string(), 1))?;
    Ok(format!(
        "id:     {}\nkey:    {}\nscopes: {}\ntier:   {}\n(the key is shown once; store it now)\n",
        record.id,
        new.secret.as_str(),
        record.scopes.join(" "),
        record.tier
    ))
}

async fn list_keys(store: &Store) -> Result<String, (String, u8)> {
    let keys = store.all_keys().await.map_err(|e| (e.to_string(), 1))?;
    let mut text = String::from("ID\tNAME\tOWNER\tTIER\tSCOPES\tSTATE\n");
    for key in keys {
        let state = if key.revoked_at.is_some() {
            "revoked"
        } else if !key.is_live(unix_now()) {
            "expired"
        } else {
            "live"
        };
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{state}\n",
            key.id,
            key.name,
            key.owner,
            key.tier,
            key.scopes.join(" ")
        ));
    }
    Ok(text)
}

fn out(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "authmd-proxy: {message}");
    ExitCode::from(code)
}

fn inject(files: &[PathBuf], image: &str, native: bool) -> ExitCode {
    let defaults = authmd_proxy::inject::Defaults {
        image: image.to_owned(),
        native,
    };
    let stdin = files.is_empty() || files.iter().any(|f| f.as_os_str() == "-");
    let mut output = String::new();
    let inputs: Vec<(String, Result<String, std::io::Error>)> = if stdin {
        let mut text = String::new();
        let read = std::io::stdin().read_to_string(&mut text).map(|_| text);
        vec![("<stdin>".to_owned(), read)]
    } else {
        files
            .iter()
            .map(|f| (f.display().to_string(), std::fs::read_to_string(f)))
            .collect()
    };
    for (name, text) in inputs {
        let text = match text {
            Ok(text) => text,
            Err(error) => return fail(&format!("cannot read {name}: {error}"), 1),
        };
        match authmd_proxy::inject::inject(&text, &defaults) {
            Ok(out) => {
                if !output.is_empty() {
                    if !output.ends_with('\n') {
                        output.push('\n');
                    }
                    if !out.starts_with("---") {
                        output.push_str("---\n");
                    }
                }
                output.push_str(&out);
            }
            Err(error) => return fail(&format!("{name}: {error}"), EX_USAGE),
        }
    }
    out(&output)
}

/// A single-threaded runtime for a command, or the exit code of its failure.
fn current_thread() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| fail(&format!("cannot start the runtime: {error}"), 1))
}

fn health(admin: SocketAddr, ready: bool) -> ExitCode {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
    let path = if ready { "/readyz" } else { "/healthz" };
    let runtime = match current_thread() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let answer = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, server::probe(admin, path))
            .await
            .unwrap_or_else(|_| Err(format!("{admin}{path}: no answer within {TIMEOUT:?}")))
    });
    match answer {
        Ok(status) if status.is_success() => out(&format!("{path}: {status}\n")),
        Ok(status) => fail(&format!("{path}: {status}"), 1),
        Err(message) => fail(&message, 1),
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path, &Overrides::default()) {
        Ok(config) => out(&format!(
            "{}: ok ({} routes, {} scopes, {} keys)\n",
            path.display(),
            config.route_count(),
            config.scopes.len(),
            config.keys.len()
        )),
        Err(errors) => {
            let count = errors.errors.len();
            fail(
                &format!("{errors}\n{count} problem(s) in {}", path.display()),
                EX_USAGE,
            )
        }
    }
}

fn run(path: &Path, overrides: Overrides, workers: Option<usize>) -> ExitCode {
    let config = match Config::load(path, &overrides) {
        Ok(config) => config,
        Err(errors) => {
            let count = errors.errors.len();
            return fail(
                &format!("{errors}\n{count} problem(s); not starting"),
                EX_USAGE,
            );
        }
    };
    init_logging(&config.log.level, config.log.json);
    let threads = workers.unwrap_or(config.server.worker_threads);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            builder.worker_threads(threads);
        }
        builder.enable_all().build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the runtime: {error}"), 1),
    };
    match runtime.block_on(serve(path, config, overrides)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message, 1),
    }
}

async fn serve(path: &Path, mut config: Config, mut overrides: Overrides) -> Result<(), String> {
    let listener = server::bind(config.listen)
        .await
        .map_err(|e| e.to_string())?;
    let admin = match config.admin_listen {
        Some(addr) => Some(server::bind(addr).await.map_err(|e| e.to_string())?),
        None => None,
    };
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    if !config.public_url_explicit && bound != config.listen {
        // Port 0: the public URL can only be known once the port is.
        overrides.public_url = Some(authmd_proxy::config::default_public_url(bound));
        config = Config::load(path, &overrides).map_err(|e| e.to_string())?;
    }
    let public_url = config.public_url.clone();
    let store = Store::open(&config.lifecycle.store)
        .await
        .map_err(|error| error.to_string())?;
    if let Some(store) = &store {
        tracing::info!(store = store.kind(), "credential store open");
    }
    let loaded = std::fs::read(path)
        .map(|bytes| blake3::hash(&bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let tls = match &config.tls {
        Some(settings) => {
            let files = ServerFiles {
                cert: settings.cert_file.clone(),
                key: settings.key_file.clone(),
                client_ca: settings.client_ca_file.clone(),
            };
            let tls = Arc::new(ServerTls::load(files).map_err(|e| e.to_string())?);
            Some((tls, settings.reload_interval))
        }
        None => None,
    };
    let gateway = Gateway::start(config, store)
        .await
        .map_err(|error| error.to_string())?;
    let acceptor = tls.as_ref().map(|(tls, _)| tls.acceptor());
    let running = Running::start(gateway, listener, admin, acceptor);
    let watching = tls.map(|(tls, every)| {
        let metrics = running.gateway.metrics_handle();
        tokio::spawn(tls.watch(every, move |ok| metrics.tls_reload(ok)))
    });
    let reloader = Arc::new(Reloader::new(
        path.to_owned(),
        overrides,
        running.gateway.clone(),
        loaded,
    ));
    let reloading = tokio::spawn(reloader.run());
    let scheme = if running.gateway.config().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let admin = running
        .admin_addr
        .map(|a| format!(" (admin http://{a})"))
        .unwrap_or_default();
    // Listening for signals before saying so: a SIGTERM sent as soon as the line is
    // seen must drain, never meet the default, fatal disposition.
    let stop = shutdown_signal();
    tracing::info!(
        public_url = %public_url,
        "authmd-proxy listening on {scheme}://{}{admin}",
        running.addr
    );
    stop.await;
    reloading.abort();
    if let Some(watching) = watching {
        watching.abort();
    }
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves at the first SIGINT or SIGTERM. The handlers are installed when it is
/// called, not when it is first polled (call it inside the runtime).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::terminate())
            .and_then(|term| signal(SignalKind::interrupt()).map(|interrupt| (term, interrupt)));
        async move {
            match handlers {
                Ok((mut term, mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn serve_injector(
    listen: SocketAddr,
    files: ServerFiles,
    injector: Injector,
) -> Result<(), String> {
    /// How often the certificate files are checked for a renewal.
    const RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    runtime.block_on(async {
        let tls = Arc::new(ServerTls::load(files).map_err(|e| e.to_string())?);
        let listener = server::bind(listen).await.map_err(|e| e.to_string())?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let watching = tokio::spawn(tls.clone().watch(RELOAD_INTERVAL, |_| ()));
        let stop = shutdown_signal();
        tracing::info!("authmd-proxy injector listening on https://{bound}");
        injector::serve(listener, tls, Arc::new(injector), stop).await;
        watching.abort();
        tracing::info!("stopped");
        Ok(())
    })
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
