//! `authmd-proxy run`: serve the proxy, with its config reloaded as it changes and
//! a graceful shutdown on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::gateway::Gateway;
use authmd_proxy::reload::Reloader;
use authmd_proxy::server::{self, Running};
use authmd_proxy::store::Store;
use authmd_proxy::tls::{ServerFiles, ServerTls};
use clap::Args;

use super::source::Source;
use super::{EX_USAGE, fail, init_logging};

/// The arguments of `run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The config file and the data directory (shared with the commands that open
    /// the store, so they open this one).
    #[command(flatten)]
    source: Source,
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
    #[arg(long, env = "AUTHMD_WORKERS")]
    workers: Option<usize>,
    /// Upstream URL, overriding `upstream.url` (a sidecar's is on localhost).
    #[arg(long, env = "AUTHMD_UPSTREAM")]
    upstream: Option<String>,
}

/// Loads the config, starts the runtime and serves until SIGINT or SIGTERM.
pub(crate) fn run(args: RunArgs) -> ExitCode {
    let RunArgs {
        source,
        listen,
        admin_listen,
        public_url,
        workers,
        upstream,
    } = args;
    let overrides = Overrides {
        listen,
        admin_listen,
        public_url,
        upstream,
        ..source.overrides()
    };
    let path = source.config;
    let config = match Config::load(&path, &overrides) {
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
    config.log_warnings();
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
    match runtime.block_on(serve(&path, config, overrides)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message, 1),
    }
}

/// Binds the listeners, opens the store, starts the gateway, the certificate
/// watcher and the config reloader, and serves until a signal; then drains.
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
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
