//! Listeners: the proxy listener (HTTP/1.1 and HTTP/2, with upgrades), the admin
//! listener (health), and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::body::Body;
use crate::pipeline::Gateway;
use crate::proxy::ClientConn;

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
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts serving on already-bound listeners.
    pub fn start(gateway: Gateway, listener: TcpListener, admin: Option<TcpListener>) -> Running {
        let gateway = Arc::new(gateway);
        let (stop, stopped) = watch::channel(false);
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| gateway.config().listen);
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let mut tasks = vec![tokio::spawn(serve(
            listener,
            gateway.clone(),
            wait_for(stopped.clone()),
        ))];
        if let Some(admin) = admin {
            tasks.push(tokio::spawn(serve_admin(
                admin,
                gateway.clone(),
                wait_for(stopped),
            )));
        }
        Running {
            addr,
            admin_addr,
            gateway,
            stop,
            tasks,
        }
    }

    /// Stops accepting, lets in-flight requests finish (up to the config's grace
    /// period), and returns when every listener is done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.gateway.flush().await;
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
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.config().server.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let grace = gateway.config().server.shutdown_grace;
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
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ClientConn::plain(peer));
        let gateway = gateway.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let gateway = gateway.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request, &conn).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drain(graceful, grace).await;
}

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
async fn accept_error(error: &std::io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves the admin endpoints: `GET /healthz` (the process is alive) and
/// `GET /readyz` (the config is loaded, the keys are loaded from the store, and the
/// proxy is accepting).
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
        });
    }
    drain(graceful, Duration::from_secs(1)).await;
}

async fn admin(
    request: Request<Incoming>,
    gateway: Arc<Gateway>,
) -> Result<Response<Body>, Infallible> {
    let (status, body): (StatusCode, &'static str) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "{\"status\":\"ok\"}"),
        "/readyz" if gateway.is_ready() => (StatusCode::OK, "{\"status\":\"ready\"}"),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"loading\",\"message\":\"the keys are not loaded from the store yet\"}",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "{\"error\":\"not_found\",\"code\":\"NOT_FOUND\",\"message\":\"the admin listener serves /healthz and /readyz\",\"docs\":\"\"}",
        ),
    };
    let mut response = Response::new(Body::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
