//! Listeners: the proxy listener (HTTP/1.1 and HTTP/2 with upgrades, over TCP or
//! TLS), the admin listener (`/healthz`, `/readyz`, `/metrics`), and graceful
//! shutdown.
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
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

mod first_bytes;

use crate::body::Body;
use crate::gateway::Gateway;
use crate::metrics::Listener;
use crate::proxy::ClientConn;

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
    let builder = Arc::new(builder);
    let grace = server.shutdown_grace;
    let first_bytes = server.header_read_timeout;
    let ceiling = Arc::new(tokio::sync::Semaphore::new(server.max_connections));
    drop(config);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    accept_error(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // At the connection ceiling a new connection is closed at once: a flood
        // costs one accept each, never a task, a buffer or an upstream connection.
        let Ok(slot) = ceiling.clone().try_acquire_owned() else {
            gateway.metrics().connection_refused();
            tracing::debug!(%peer, "connection ceiling reached; closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let open = gateway.metrics().connection(Listener::Proxy);
        let gateway = gateway.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        match &tls {
            None => {
                let conn = ClientConn::plain(peer);
                let stream = first_bytes::FirstBytes::new(stream, first_bytes);
                serve_connection(&builder, watcher, gateway, conn, stream, (open, slot));
            }
            Some(acceptor) => {
                let accept = acceptor.accept(stream);
                tokio::spawn(async move {
                    let metrics = gateway.metrics();
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            metrics.tls_handshake(false, None);
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics.tls_handshake(false, None);
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    metrics.tls_handshake(true, stream.get_ref().1.alpn_protocol());
                    let conn = ClientConn::tls(peer);
                    let stream = first_bytes::FirstBytes::new(stream, first_bytes);
                    serve_connection(&builder, watcher, gateway, conn, stream, (open, slot));
                });
            }
        }
    }
    drain(graceful, grace).await;
}

/// Serves one accepted connection (plain or TLS) on its own task, watched by the
/// graceful shutdown.
fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    gateway: Arc<Gateway>,
    conn: ClientConn,
    stream: S,
    held: (
        Option<crate::metrics::OpenConnection>,
        tokio::sync::OwnedSemaphorePermit,
    ),
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let service = service_fn(move |request: Request<Incoming>| {
        let gateway = gateway.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(gateway.handle(request, &conn).await) }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let connection = watcher.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
        drop(held);
    });
}

/// Waits for the watched connections to finish, for at most `grace`. A TLS
/// handshake still running holds a watcher too, and ends within its own timeout.
async fn drain(graceful: GracefulShutdown, grace: Duration) {
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace period"
        );
    }
}

/// Accept fails when the process is out of file descriptors; back off briefly
/// instead of spinning.
pub(crate) async fn accept_error(error: &std::io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves the admin endpoints: `GET /healthz` (the process is alive), `GET
/// /readyz` (it should receive traffic) and `GET /metrics`.
pub async fn serve_admin(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream: TcpStream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_error(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let open = gateway.metrics().connection(Listener::Admin);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(5))
            .serve_connection(
                TokioIo::new(stream),
                service_fn({
                    let gateway = gateway.clone();
                    move |request| admin(request, gateway.clone())
                }),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(open);
        });
    }
    if tokio::time::timeout(Duration::from_secs(1), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("admin connections still open at exit");
    }
}

async fn admin(
    request: Request<Incoming>,
    gateway: Arc<Gateway>,
) -> Result<Response<Body>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"{\"error\":\"method_not_allowed\",\"code\":\"METHOD_NOT_ALLOWED\",\"message\":\"the admin endpoints answer GET\",\"docs\":\"\"}"),
        ));
    }
    let response = match request.uri().path() {
        "/healthz" => json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}")),
        "/readyz" => {
            let problems = gateway.readiness();
            if problems.is_empty() {
                json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ready\"}"))
            } else {
                let body = serde_json::json!({"status": "not_ready", "reasons": problems});
                json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(body.to_string()))
            }
        }
        "/metrics" => {
            let (content_type, text) = gateway.scrape(request.headers());
            let mut response = Response::new(Body::full(Bytes::from(text)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        _ => json(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"{\"error\":\"not_found\",\"code\":\"NOT_FOUND\",\"message\":\"the admin listener serves /healthz, /readyz and /metrics\",\"docs\":\"\"}"),
        ),
    };
    Ok(response)
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Asks an admin listener for `path` (`/healthz` or `/readyz`) and returns the
/// status: the container image's health check, which has no curl. An unspecified
/// address (`0.0.0.0`, `::`) means this host.
pub async fn probe(mut addr: SocketAddr, path: &str) -> Result<StatusCode, String> {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("{addr}: {error}"))?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("{path}: {error}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("{addr}{path}: {error}"))?;
    Ok(response.status())
}
