//! Forwarding: the request the upstream receives, and the answer the client gets.
//!
//! The upstream request carries the normalised path the policy matched (never the raw
//! one), no hop-by-hop headers, no credential the proxy consumed, `X-Forwarded-*`, and
//! the verified identity in `X-Authmd-*` (any such header from the client is dropped
//! first). Bodies stream both ways without buffering; `Upgrade` requests (WebSocket)
//! are tunnelled once the upstream answers 101. Upstream failures become 502 or 504
//! rejections, never a hang.

mod echo;
pub mod headers;
mod settings;

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::LengthLimitError;
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::body::Body;
use crate::tls::{TlsError, UpstreamFiles};
pub use settings::{HealthCheck, RequestLimits, UpstreamSettings, UpstreamTarget, UpstreamTls};

/// What the proxy knows about the client connection a request came on.
#[derive(Debug)]
pub struct ClientConn {
    /// The peer address.
    pub peer: SocketAddr,
    /// The peer IP, ready for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The upstream HTTP/1.1 connection this client connection's requests reuse.
    affinity: Affinity,
}

/// An HTTP/1.1 client connection's own upstream connection. Requests on one HTTP/1.1
/// connection are sequential, so the upstream connection that served the last one is
/// free for the next: no pool checkout, no shared lock, no hash of the pool key. The
/// mutex is per client connection and never contended by HTTP/1.1; when it is busy
/// (never, in practice), the request goes through the shared pool instead.
#[derive(Debug, Default)]
/// The connection is tagged with the [`Upstream`] it belongs to: after a config
/// reload, a client connection's next request goes to the new upstream.
struct Affinity(tokio::sync::Mutex<Option<(u64, http1::SendRequest<Forwarded>)>>);

impl ClientConn {
    /// Connection info for a plain-TCP peer.
    #[must_use]
    pub fn plain(peer: SocketAddr) -> ClientConn {
        ClientConn::new(peer, "http")
    }

    /// Connection info for a peer that came over TLS.
    #[must_use]
    pub fn tls(peer: SocketAddr) -> ClientConn {
        ClientConn::new(peer, "https")
    }

    fn new(peer: SocketAddr, proto: &'static str) -> ClientConn {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientConn {
            peer,
            peer_ip,
            proto,
            affinity: Affinity::default(),
        }
    }
}

/// The identity to attach to a forwarded request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `X-Authmd-Principal`.
    pub principal: HeaderValue,
    /// `X-Authmd-Scopes`.
    pub scopes: HeaderValue,
    /// `X-Authmd-Tier`.
    pub tier: HeaderValue,
    /// `X-Authmd-Operator`: the person who claimed the key, when one did.
    pub operator: Option<HeaderValue>,
}

/// How to rewrite one request on its way out.
#[derive(Debug)]
pub struct Outbound<'a> {
    /// The normalised path, when it differs from the request's.
    pub path: Option<&'a str>,
    /// Identity headers to add (none on public routes).
    pub identity: Option<Identity>,
    /// Credential headers to remove.
    pub consumed: &'a [http::HeaderName],
    /// Bytes of body forwarded at most (`server.max_body`); past them the request
    /// fails, with 413 if the upstream has not answered yet.
    pub body_limit: u64,
}

/// Why a request could not be forwarded, or its answer not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// The upstream refused or dropped the connection, or answered garbage.
    Unavailable,
    /// The upstream did not answer in time.
    Timeout,
    /// The client's body grew past `server.max_body` while it was streamed.
    BodyTooLarge,
    /// The client's request body broke off or was malformed while it was being
    /// forwarded (the upstream never got a complete request).
    ClientBody,
}

/// The upstream: an HTTP origin behind a connection pool, or the built-in echo.
#[derive(Debug)]
pub struct Upstream {
    /// Unique per upstream built, so that connections of a replaced one are not
    /// reused.
    id: u64,
    target: Target,
    connect_timeout: Duration,
    response_timeout: Duration,
    preserve_host: bool,
    http2: bool,
}

#[derive(Debug)]
enum Target {
    Echo,
    Http(Box<HttpTarget>),
}

/// The body sent upstream: the client's, cut off with an error past
/// `server.max_body`. A body that declares its length is refused before this when it
/// declares too much (and hyper holds it to what it declares); this bounds the
/// others, chunked or HTTP/2, as they stream.
type Forwarded = Limited<Incoming>;

/// Dials the upstream: plain TCP, or TLS for an `https://` upstream.
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Debug)]
struct HttpTarget {
    client: Client<Connector, Forwarded>,
    /// The pool's connector, also used for the per-client-connection HTTP/1.1
    /// connections and health probes.
    connector: Connector,
    /// `scheme://authority/`, what the connector dials.
    origin: Uri,
    scheme: Scheme,
    authority: Authority,
}

impl Upstream {
    /// Builds the upstream and its connection pool: for an `https://` upstream,
    /// TLS trusting the public roots or `upstream.tls.ca_file` (and presenting a
    /// client certificate when one is configured), ALPN `h2` when `http2` is set.
    /// Must run inside a Tokio runtime.
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, TlsError> {
        let target = match &settings.target {
            UpstreamTarget::Echo => Target::Echo,
            UpstreamTarget::Http { scheme, authority } => {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.set_connect_timeout(Some(settings.connect_timeout));
                http.enforce_http(false);
                let files = UpstreamFiles {
                    ca: settings.tls.ca_file.clone(),
                    cert: settings.tls.cert_file.clone(),
                    key: settings.tls.key_file.clone(),
                };
                let tls = crate::tls::client_config(&files)?;
                let builder = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http();
                let https = scheme == &Scheme::HTTPS;
                let connector = if settings.http2 && https {
                    builder.enable_all_versions().wrap_connector(http)
                } else {
                    builder.enable_http1().wrap_connector(http)
                };
                let client = Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(settings.idle_timeout)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .http2_only(settings.http2 && !https)
                    .build(connector.clone());
                // A scheme and an authority the config already parsed always make
                // a URI; were it not so, dialing "/" fails as an unreachable upstream.
                let origin = Uri::builder()
                    .scheme(scheme.clone())
                    .authority(authority.clone())
                    .path_and_query("/")
                    .build()
                    .unwrap_or_default();
                Target::Http(Box::new(HttpTarget {
                    client,
                    connector,
                    origin,
                    scheme: scheme.clone(),
                    authority: authority.clone(),
                }))
            }
        };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Upstream {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            target,
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
            preserve_host: settings.preserve_host,
            http2: settings.http2,
        })
    }

    /// Opens a connection to the upstream (TCP, and TLS for `https://`), within the
    /// connect timeout.
    async fn dial(
        &self,
        http: &HttpTarget,
    ) -> Result<hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>, ForwardError> {
        let mut connector = http.connector.clone();
        let dial = tower_service::Service::call(&mut connector, http.origin.clone());
        match tokio::time::timeout(self.connect_timeout, dial).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => {
                tracing::warn!(error = %error_chain(&*error), upstream = %http.authority, "cannot connect to the upstream");
                Err(ForwardError::Unavailable)
            }
            Err(_) => {
                tracing::warn!(upstream = %http.authority, "connecting to the upstream timed out");
                Err(ForwardError::Timeout)
            }
        }
    }

    /// Rewrites and sends a request, and returns the upstream's answer.
    pub async fn forward(
        &self,
        mut request: Request<Incoming>,
        outbound: Outbound<'_>,
        conn: &ClientConn,
    ) -> Result<Response<Body>, ForwardError> {
        let upgrade = !self.http2
            && request.version() == Version::HTTP_11
            && headers::is_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        // HTTP/1.x clients reuse their own upstream connection; HTTP/2 clients (many
        // concurrent streams) and upgrades go through the shared pool.
        let affine = !self.http2 && !upgrade && request.version() < Version::HTTP_2;
        self.rewrite(&mut request, &outbound, conn, upgrade, !affine);
        let limit = usize::try_from(outbound.body_limit).unwrap_or(usize::MAX);
        let request = request.map(|body| Limited::new(body, limit));
        let Target::Http(http) = &self.target else {
            return Box::pin(echo::answer(request)).await;
        };
        let sent = if affine {
            tokio::time::timeout(self.response_timeout, self.send_affine(http, conn, request)).await
        } else {
            let sent = http.client.request(request);
            tokio::time::timeout(self.response_timeout, async {
                sent.await.map_err(|error| {
                    tracing::warn!(error = %error_chain(&error), "upstream request failed");
                    if is_timeout(&error) {
                        ForwardError::Timeout
                    } else {
                        failure(&error)
                    }
                })
            })
            .await
        };
        let mut response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(rejection)) => return Err(rejection),
            Err(_) => {
                tracing::warn!(timeout = ?self.response_timeout, "upstream did not answer in time");
                return Err(ForwardError::Timeout);
            }
        };
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        match client_upgrade {
            Some(client_side) if switching => {
                let upstream_side = hyper::upgrade::on(&mut response);
                tokio::spawn(tunnel(client_side, upstream_side));
                headers::strip_hop_by_hop(response.headers_mut(), true);
            }
            _ => headers::strip_hop_by_hop(response.headers_mut(), false),
        }
        Ok(response.map(Body::Stream))
    }

    /// Sends on the client connection's own upstream connection, (re)connecting when
    /// there is none or the upstream closed it. A request the closed connection never
    /// took is retried once on a new one; a request that was sent is never replayed.
    async fn send_affine(
        &self,
        http: &HttpTarget,
        conn: &ClientConn,
        mut request: Request<Forwarded>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let Ok(mut slot) = conn.affinity.0.try_lock() else {
            return http.client.request(request).await.map_err(|error| {
                tracing::warn!(error = %error_chain(&error), "upstream request failed");
                failure(&error)
            });
        };
        if !request.headers().contains_key(HOST) {
            if let Ok(host) = HeaderValue::from_str(http.authority.as_str()) {
                request.headers_mut().insert(HOST, host);
            }
        }
        let mut retried = false;
        loop {
            let sender = match slot.as_mut() {
                Some((id, sender)) if *id == self.id && !sender.is_closed() => sender,
                // Once per connection: boxed, so that its future does not weigh on
                // every request's.
                _ => {
                    &mut slot
                        .insert((self.id, Box::pin(self.connect(http)).await?))
                        .1
                }
            };
            if sender.ready().await.is_err() {
                *slot = None;
                if retried {
                    return Err(ForwardError::Unavailable);
                }
                retried = true;
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if !retried => {
                        *slot = None;
                        retried = true;
                        request = unsent;
                    }
                    _ => {
                        *slot = None;
                        let error = error.into_error();
                        tracing::warn!(error = %error_chain(&error), "upstream request failed");
                        return Err(failure(&error));
                    }
                },
            }
        }
    }

    /// Checks that the upstream is reachable, as `check` says: a TCP connection
    /// opens, or `GET <path>` answers below 500, within the connect timeout (the
    /// echo upstream always is).
    pub async fn probe(&self, check: &HealthCheck) -> bool {
        let Target::Http(http) = &self.target else {
            return true;
        };
        let probe = async {
            let stream = self.dial(http).await.ok()?;
            let HealthCheck::Http(path) = check else {
                return Some(true);
            };
            let (mut sender, connection) =
                http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(stream)
                    .await
                    .ok()?;
            tokio::spawn(connection);
            let request = Request::get(path.as_str())
                .header(HOST, http.authority.as_str())
                .body(http_body_util::Empty::new())
                .ok()?;
            let response = sender.send_request(request).await.ok()?;
            Some(!response.status().is_server_error())
        };
        match check {
            HealthCheck::None => true,
            HealthCheck::Tcp | HealthCheck::Http(_) => matches!(
                tokio::time::timeout(self.connect_timeout, probe).await,
                Ok(Some(true))
            ),
        }
    }

    /// Opens an HTTP/1.1 connection to the upstream.
    async fn connect(
        &self,
        http: &HttpTarget,
    ) -> Result<http1::SendRequest<Forwarded>, ForwardError> {
        let stream = self.dial(http).await?;
        let (sender, connection) =
            http1::Builder::new()
                .handshake(stream)
                .await
                .map_err(|error| {
                    tracing::warn!(%error, "upstream handshake failed");
                    ForwardError::Unavailable
                })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn rewrite(
        &self,
        request: &mut Request<Incoming>,
        outbound: &Outbound<'_>,
        conn: &ClientConn,
        upgrade: bool,
        absolute: bool,
    ) {
        let headers = request.headers_mut();
        // Room for X-Forwarded-For/-Proto/-Host and the three identity headers at
        // once: the parsed map is sized for what the client sent, and growing it
        // insert by insert would reallocate it more than once.
        headers.reserve(6);
        headers::strip_hop_by_hop(headers, upgrade);
        headers::strip_identity(headers);
        for name in outbound.consumed {
            headers.remove(name);
        }
        if !headers.contains_key(HOST) {
            // HTTP/2 clients send `:authority` instead of Host.
            let authority = request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            if let Some(authority) = authority {
                request.headers_mut().insert(HOST, authority);
            }
        }
        let headers = request.headers_mut();
        headers::set_forwarded(headers, &conn.peer_ip, conn.proto);
        if let Some(identity) = &outbound.identity {
            headers.insert(headers::PRINCIPAL.clone(), identity.principal.clone());
            headers.insert(headers::SCOPES.clone(), identity.scopes.clone());
            headers.insert(headers::TIER.clone(), identity.tier.clone());
            if let Some(operator) = &identity.operator {
                headers.insert(headers::OPERATOR.clone(), operator.clone());
            }
        }
        if !self.preserve_host {
            headers.remove(HOST);
        }
        let path_and_query = match outbound.path {
            Some(path) => {
                let query = request.uri().query();
                let text = match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                };
                PathAndQuery::try_from(text).ok()
            }
            None => request.uri().path_and_query().cloned(),
        };
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = path_and_query;
        if let (Target::Http(http), true) = (&self.target, absolute) {
            parts.scheme = Some(http.scheme.clone());
            parts.authority = Some(http.authority.clone());
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        *request.version_mut() = if self.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}

/// True when the failure was a timeout (connect timeout included).
fn is_timeout(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// The refusal for a failed upstream request: the client's fault when its own
/// request body broke off or was malformed (hyper reports a failed outgoing body as
/// a user error whose cause is the incoming body's error) or grew past
/// `server.max_body`, the upstream's otherwise.
fn failure(error: &(dyn std::error::Error + 'static)) -> ForwardError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<LengthLimitError>() {
            return ForwardError::BodyTooLarge;
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            let from_client_body = hyper.is_user()
                && hyper
                    .source()
                    .is_some_and(|cause| cause.downcast_ref::<hyper::Error>().is_some());
            if from_client_body {
                return ForwardError::ClientBody;
            }
        }
        source = e.source();
    }
    ForwardError::Unavailable
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
