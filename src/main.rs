//! The `authmd-proxy` command line: `run`, `check`, and `keys`.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::credentials::{KeyHash, api_key};
use authmd_proxy::pipeline::Gateway;
use authmd_proxy::server::{self, Running};
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
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin listen address, overriding `admin_listen`.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Public base URL, overriding `public_url`.
        #[arg(long)]
        public_url: Option<String>,
        /// Runtime worker threads, overriding `server.worker_threads` (1 = single-threaded).
        #[arg(long)]
        workers: Option<usize>,
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
    /// Print a generated document.
    #[command(subcommand)]
    Render(RenderCommand),
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
        } => {
            let overrides = Overrides {
                listen,
                admin_listen,
                public_url,
            };
            run(&config, overrides, workers)
        }
        Command::Check { config } => check(&config),
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
        Command::Keys(KeysCommand::Generate { prefix }) => match api_key::mint(&prefix) {
            Ok(key) => out(&format!("key:  {}\nhash: {}\n", key.secret, key.hash)),
            Err(error) => fail(&error.to_string(), EX_USAGE),
        },
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
    init_logging(&config);
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
        overrides.public_url = Some(format!("http://{bound}"));
        config = Config::load(path, &overrides).map_err(|e| e.to_string())?;
    }
    let public_url = config.public_url.clone();
    let running = Running::start(Gateway::new(config), listener, admin);
    tracing::info!(
        listen = %running.addr,
        admin = ?running.admin_addr,
        public_url = %public_url,
        "authmd-proxy listening on http://{}",
        running.addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if config.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}
