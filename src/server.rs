//! Listeners: the proxy listener (HTTP/1.1 and HTTP/2 with upgrades, over TCP or
//! TLS), the admin listener (`/healthz`, `/readyz`, `/metrics`), and graceful
//! shutdown. All of them, and the injector webhook's, run the one accept loop of
//! `server::accept`.
//!
//! Shutdown runs in this order, so that a Kubernetes rolling restart fails no
//! request: `/readyz` starts failing (the endpoint is taken out of rotation), the
//! proxy keeps serving for `server.shutdown_delay` (while that news propagates),
//! then stops accepting and lets in-flight requests finish (HTTP/1.1 connections
//! are closed after their current response, HTTP/2 ones get GOAWAY) for at most
//! `server.shutdown_grace`, writes what is only in memory to the store, and only
//! then closes the admin listener.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub(crate) mod accept;
mod admin;
mod first_bytes;

pub use admin::{probe, serve_admin};

use crate::gateway::Gateway;
use crate::metrics::Listener;
use crate::proxy::ClientConn;
use accept::{Handshake, Serving, accept_loop};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds a TCP listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

/// A running proxy: its addresses, and the handle that stops it.
#[derive(Debug)]
pub struct Running {
    /// Where the proxy listens.
    pub addr: SocketAddr,
    /// Where the admin listener listens, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The gateway (config, key table).
    pub gateway: Arc<Gateway>,
    stop_proxy: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    proxy: JoinHandle<()>,
    admin: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts serving on already-bound listeners: plain HTTP, or HTTPS when `tls`
    /// is given.
    pub fn start(
        gateway: Gateway,
        listener: TcpListener,
        admin: Option<TcpListener>,
        tls: Option<TlsAcceptor>,
    ) -> Running {
        let gateway = Arc::new(gateway);
        let (stop_proxy, proxy_stopped) = watch::channel(false);
        let (stop_admin, admin_stopped) = watch::channel(false);
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| gateway.config().listen);
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let proxy = tokio::spawn(serve(
            listener,
            gateway.clone(),
            tls,
            wait_for(proxy_stopped),
        ));
        let admin = admin.map(|admin| {
            tokio::spawn(serve_admin(admin, gateway.clone(), wait_for(admin_stopped)))
        });
        Running {
            addr,
            admin_addr,
            gateway,
            stop_proxy,
            stop_admin,
            proxy,
            admin,
        }
    }

    /// Shuts down gracefully (see the module docs) and returns when every
    /// listener is done.
    pub async fn shutdown(self) {
        self.gateway.drain();
        let delay = self.gateway.config().server.shutdown_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let _ = self.stop_proxy.send(true);
        let _ = self.proxy.await;
        self.gateway.flush().await;
        let _ = self.stop_admin.send(true);
        if let Some(admin) = self.admin {
            let _ = admin.await;
        }
    }
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Serves the proxy until `shutdown` completes, then drains connections for at most
/// the configured grace period.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let config = gateway.config();
    let server = &config.server;
    let limits = server.request_limits;
    // hyper's own parser limits sit above the proxy's, which answer with an envelope
    // (431); past twice the configured size hyper closes with its bare 431.
    let header_buffer = limits
        .header_bytes
        .saturating_mul(2)
        .saturating_add(limits.uri)
        .max(8192);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_headers(limits.headers.saturating_mul(2))
        .max_buf_size(header_buffer)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(server.max_streams)
        .max_header_list_size(u32::try_from(header_buffer).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): streams a client opens and cancels before
        // they are served, and streams reset for protocol errors, are bounded.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256))
        // A client that stops answering pings (one stuck inside a header block
        // cannot answer) loses its connection.
        .keep_alive_interval(server.header_read_timeout)
        .keep_alive_timeout(server.header_read_timeout);
    let grace = server.shutdown_grace;
    let https = tls.is_some();
    let serving = Serving {
        protocols: builder,
        upgrades: true,
        tls: tls.map(|acceptor| Handshake {
            acceptor,
            timeout: HANDSHAKE_TIMEOUT,
            metrics: Some(gateway.metrics_handle()),
        }),
        first_bytes: Some(server.header_read_timeout),
        grace,
        log_errors: true,
    };
    let ceiling = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
    drop(config);
    let admit = |stream: &TcpStream, peer: SocketAddr| {
        // At the connection ceiling a new connection is closed at once: a flood
        // costs one accept each, never a task, a buffer or an upstream connection.
        let Ok(slot) = ceiling.clone().try_acquire_owned() else {
            gateway.metrics().connection_refused();
            tracing::debug!(%peer, "connection ceiling reached; closing a new connection");
            return None;
        };
        let _ = stream.set_nodelay(true);
        let open = gateway.metrics().connection(Listener::Proxy);
        let conn = Arc::new(if https {
            ClientConn::tls(peer)
        } else {
            ClientConn::plain(peer)
        });
        let gateway = gateway.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let gateway = gateway.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request, &conn).await) }
        });
        Some((service, (open, slot)))
    };
    if !accept_loop(listener, serving, admit, shutdown).await {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace period"
        );
    }
}
