//! The accept loop every listener runs: the proxy's, the admin endpoints' and the
//! injector webhook's.
//!
//! It accepts until told to stop, backing off when accept fails; lets the listener
//! admit or close each new connection; finishes the TLS handshake within a timeout
//! when the listener serves HTTPS; serves the connection on its own task, watched by
//! the graceful shutdown; and once stopped, waits a grace period for the open
//! connections to finish (HTTP/1.1 ones close after their current response, HTTP/2
//! ones get GOAWAY).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::first_bytes::FirstBytes;
use crate::body::Body;
use crate::metrics::Metrics;

/// How a listener serves the connections it accepts.
pub(crate) struct Serving {
    /// The HTTP/1.1 and HTTP/2 settings; `http1_only` for a listener that speaks
    /// only HTTP/1.1 (which needs `upgrades: false`: hyper-util ignores it for
    /// upgradeable connections).
    pub(crate) protocols: auto::Builder<TokioExecutor>,
    /// Whether an HTTP/1.1 connection may be upgraded (WebSocket, `CONNECT`).
    pub(crate) upgrades: bool,
    /// The TLS handshake, when the listener serves HTTPS.
    pub(crate) tls: Option<Handshake>,
    /// The deadline on a connection's first bytes ([`FirstBytes`]), for a listener
    /// that tells HTTP/1.1 from HTTP/2 by them with no timeout of its own.
    pub(crate) first_bytes: Option<Duration>,
    /// How long open connections get to finish once the listener stops.
    pub(crate) grace: Duration,
    /// Whether a connection that ends with an error is logged (at debug level).
    pub(crate) log_errors: bool,
}

/// A listener's TLS.
pub(crate) struct Handshake {
    /// The acceptor (certificate reloads reach it through the shared config).
    pub(crate) acceptor: TlsAcceptor,
    /// How long a client may take to finish the handshake.
    pub(crate) timeout: Duration,
    /// Where handshakes are counted, if anywhere.
    pub(crate) metrics: Option<Arc<Metrics>>,
}

/// Accepts connections on `listener` until `shutdown` completes, then waits for the
/// open ones to finish for at most `serving.grace`. Returns whether they all did.
///
/// `admit` sees each new connection first and returns the service to serve it with
/// and what the connection holds until it ends (a gauge, a slot under a connection
/// ceiling), or `None` to close it at once.
pub(crate) async fn accept_loop<S, H>(
    listener: TcpListener,
    serving: Serving,
    mut admit: impl FnMut(&TcpStream, SocketAddr) -> Option<(S, H)>,
    shutdown: impl Future<Output = ()>,
) -> bool
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    H: Send + 'static,
{
    let serving = Arc::new(serving);
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
        let Some((service, held)) = admit(&stream, peer) else {
            continue;
        };
        // Taken before the TLS handshake, so that a drain waits for one in progress.
        let watcher = graceful.watcher();
        let serving = serving.clone();
        // Two kinds of task: one future for both would size every plain
        // connection's task for a TLS stream too (about 3.5 KB more).
        if serving.tls.is_none() {
            tokio::spawn(async move {
                serve(&serving, stream, peer, service, watcher).await;
                drop(held);
            });
        } else {
            tokio::spawn(async move {
                if let Some(stream) = handshake(&serving, stream, peer).await {
                    serve(&serving, stream, peer, service, watcher).await;
                }
                drop(held);
            });
        }
    }
    // A TLS handshake still running holds a watcher too, and ends within its own
    // timeout.
    tokio::time::timeout(serving.grace, graceful.shutdown())
        .await
        .is_ok()
}

/// Accept fails when the process is out of file descriptors; back off briefly
/// instead of spinning.
async fn accept_error(error: &std::io::Error) {
    tracing::warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The TLS stream, or `None` when the handshake failed or timed out (or the
/// listener has no TLS).
async fn handshake(
    serving: &Serving,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let tls = serving.tls.as_ref()?;
    let finished = tokio::time::timeout(tls.timeout, tls.acceptor.accept(stream)).await;
    let stream = match finished {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, %peer, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    };
    if let Some(metrics) = &tls.metrics {
        let protocol = stream.as_ref().and_then(|s| s.get_ref().1.alpn_protocol());
        metrics.tls_handshake(stream.is_some(), protocol);
    }
    stream
}

/// Serves one connection (plain, or past its TLS handshake) until it ends.
async fn serve<I, S>(serving: &Serving, stream: I, peer: SocketAddr, service: S, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(FirstBytes::new(stream, serving.first_bytes));
    let protocols = &serving.protocols;
    let ended = if serving.upgrades {
        let connection = protocols.serve_connection_with_upgrades(io, service);
        watcher.watch(connection).await
    } else {
        watcher.watch(protocols.serve_connection(io, service)).await
    };
    if let Err(error) = ended {
        if serving.log_errors {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
    }
}
