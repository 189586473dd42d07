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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub(crate) mod accept;
mod first_bytes;

use crate::body::Body;
use crate::metrics::Listener;
use crate::pipeline::Gateway;
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

/// Serves the admin endpoints: `GET /healthz` (the process is alive), `GET
/// /readyz` (it should receive traffic) and `GET /metrics`.
pub async fn serve_admin(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let mut protocols = auto::Builder::new(TokioExecutor::new()).http1_only();
    protocols
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5));
    let serving = Serving {
        protocols,
        upgrades: false,
        tls: None,
        first_bytes: None,
        grace: Duration::from_secs(1),
        log_errors: false,
    };
    let admit = |_: &TcpStream, _: SocketAddr| {
        let open = gateway.metrics().connection(Listener::Admin);
        let gateway = gateway.clone();
        let service = service_fn(move |request| admin(request, gateway.clone()));
        Some((service, open))
    };
    if !accept_loop(listener, serving, admit, shutdown).await {
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
