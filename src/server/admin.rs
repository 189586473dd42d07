//! The admin listener: `GET /healthz` (the process is alive), `GET /readyz` (it
//! should receive traffic) and `GET /metrics`, over plain HTTP/1.1; and the probe
//! the container image's health check sends it.

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

use super::accept::{Serving, accept_loop};
use crate::body::Body;
use crate::gateway::Gateway;
use crate::metrics::Listener;

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
            let degraded = gateway.degraded();
            if problems.is_empty() && degraded.is_empty() {
                json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ready\"}"))
            } else if problems.is_empty() {
                // Ready: the fallback is the answer, and the body says so.
                let body = serde_json::json!({"status": "ready", "degraded": degraded});
                json(StatusCode::OK, Bytes::from(body.to_string()))
            } else {
                let body = serde_json::json!({"status": "not_ready", "reasons": problems, "degraded": degraded});
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
