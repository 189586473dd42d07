//! The proxy's settings, as the config's `server:` and `upstream:` sections give
//! them: what one request may carry, and where and how it is forwarded.

use std::time::Duration;

use http::uri::{Authority, Scheme};

use super::headers::Oversize;

/// The size limits of a request, checked before anything else looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Bytes of the request target (path and query).
    pub uri: usize,
    /// Header fields.
    pub headers: usize,
    /// Bytes of all header names and values.
    pub header_bytes: usize,
    /// Bytes of a body that declares its length (`Content-Length`).
    pub body: u64,
}

impl RequestLimits {
    /// The refusal of a request beyond a limit, if it is.
    pub fn check<B>(&self, request: &http::Request<B>) -> Result<(), Oversize> {
        let uri = request.uri();
        let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len());
        if target > self.uri {
            return Err(Oversize::Uri);
        }
        let headers = request.headers();
        if headers.len() > self.headers {
            return Err(Oversize::Headers);
        }
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if bytes > self.header_bytes {
            return Err(Oversize::Headers);
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.body) {
            return Err(Oversize::Body);
        }
        Ok(())
    }
}

/// `upstream.tls:`: how the proxy trusts an `https://` upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM CA bundle trusted instead of the public roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate chain presented to the upstream (with `key_file`).
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<std::path::PathBuf>,
}

/// How `/readyz` decides that the upstream is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// It does not check.
    None,
    /// A TCP connection to the upstream opens.
    Tcp,
    /// `GET <path>` answers below 500.
    Http(String),
}

/// Where the upstream is.
#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// The built-in echo server: answers with what it received.
    Echo,
    /// An HTTP server.
    Http {
        /// `http` or `https`.
        scheme: Scheme,
        /// `host:port`.
        authority: Authority,
    },
}

/// `upstream:`.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Target.
    pub target: UpstreamTarget,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers.
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// Send the client's `Host` rather than the upstream's authority.
    pub preserve_host: bool,
    /// Speak HTTP/2 (prior knowledge over plain TCP; by ALPN over TLS).
    pub http2: bool,
    /// TLS settings of an `https://` upstream.
    pub tls: UpstreamTls,
    /// How readiness checks the upstream.
    pub health_check: HealthCheck,
}
