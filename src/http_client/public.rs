//! Fetching URLs that strangers name (a client's metadata document), from public
//! addresses only.
//!
//! The check is made on the addresses a name resolves to, and the connection goes
//! to an address that passed it: the resolver of the connector drops every address
//! that is not public, so a name that resolves to a private address, or resolves
//! to a public one for a check and a private one for the connection (DNS
//! rebinding), never reaches the inside. A literal address in the URL skips the
//! resolver, so [`PublicClient::get`] checks it before the request is made.
//! Redirects are never followed (the connection pool does not follow them).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;

/// What the proxy calls itself.
const AGENT: &str = concat!("authmd-proxy/", env!("CARGO_PKG_VERSION"));

/// True for an address any host on the internet could reach: not loopback,
/// private, link-local, shared (CGNAT), multicast, documentation, benchmarking or
/// reserved. An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4) is
/// judged by the IPv4 address.
#[must_use]
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                    // "this network"
        || a == 10                              // private
        || a == 127                             // loopback
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254)               // link-local
        || (a == 172 && (16..32).contains(&b))  // private
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)       // documentation
        || (a == 192 && b == 168)               // private
        || (a == 198 && (b == 18 || b == 19))   // benchmarking
        || (a == 198 && b == 51 && c == 100)    // documentation
        || (a == 203 && b == 0 && c == 113)     // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match segments {
        // IPv4-mapped (::ffff:a.b.c.d).
        [0, 0, 0, 0, 0, 0xffff, high, low] => is_public_v4(embedded(high, low)),
        // Unspecified, loopback and the deprecated IPv4-compatible block.
        [0, 0, 0, 0, 0, 0, _, _] => false,
        // NAT64 (64:ff9b::/96).
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => is_public_v4(embedded(high, low)),
        // 6to4 (2002::/16) carries the IPv4 address in its next 32 bits.
        [0x2002, high, low, ..] => is_public_v4(embedded(high, low)),
        // Teredo (2001::/32) and documentation (2001:db8::/32).
        [0x2001, 0 | 0xdb8, ..] => false,
        // Discard-only (100::/64).
        [0x100, 0, 0, 0, ..] => false,
        [first, ..] => {
            (first & 0xff00) != 0xff00     // multicast
                && (first & 0xfe00) != 0xfc00 // unique local
                && (first & 0xffc0) != 0xfe80 // link-local
                && (first & 0xffc0) != 0xfec0 // site-local (deprecated)
        }
    }
}

/// An address the fetch may connect to: public, or in a network the operator
/// allowed.
fn allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    is_public(ip) || allow.iter().any(|net| net.contains(&ip))
}

/// The resolver of [`PublicClient`]'s connector: the system's, with every address
/// that may not be fetched dropped.
#[derive(Debug, Clone)]
pub struct PublicResolver {
    allow: Arc<[IpNet]>,
}

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|addr| allowed(addr.ip(), &allow))
                .collect();
            if addrs.is_empty() {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, NOT_PUBLIC));
            }
            Ok(addrs.into_iter())
        })
    }
}

const NOT_PUBLIC: &str = "the host has no public address";

/// Why a fetch gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL is not an https URL with a host.
    #[error("not an https URL with a host")]
    NotHttps,
    /// The host is, or resolves only to, addresses that may not be fetched.
    #[error("{NOT_PUBLIC}")]
    NotPublic,
    /// No connection, or the connection failed.
    #[error("the host could not be reached")]
    Unreachable,
    /// The deadline passed.
    #[error("the host did not answer in time")]
    Timeout,
    /// The body is over the limit.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// An answer: its status, headers and whole body.
#[derive(Debug)]
pub struct Fetched {
    /// The status (a redirect is returned as it is, never followed).
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, at most the limit given.
    pub body: Bytes,
}

/// An HTTPS client that reaches public addresses only (and the networks the
/// operator allowed), over HTTP/1.1, trusting the public roots and any extra ones
/// the caller's TLS settings name. Clones share one connection pool.
#[derive(Debug, Clone)]
pub struct PublicClient {
    client: Client<HttpsConnector<HttpConnector<PublicResolver>>, Full<Bytes>>,
    allow: Arc<[IpNet]>,
}

impl PublicClient {
    /// A client with `tls` (its roots) that may also reach `allow`.
    #[must_use]
    pub fn new(tls: rustls::ClientConfig, allow: &[IpNet]) -> PublicClient {
        let allow: Arc<[IpNet]> = allow.into();
        let mut http = HttpConnector::new_with_resolver(PublicResolver {
            allow: allow.clone(),
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2)
            .build(connector);
        PublicClient { client, allow }
    }

    /// A GET of the https URL `uri` asking for `accept`, answered within
    /// `timeout` with a body of at most `max_bytes`.
    ///
    /// # Errors
    ///
    /// The URL is not https, the host is not public, or the exchange failed, took
    /// too long, or answered too much.
    pub async fn get(
        &self,
        uri: &Uri,
        accept: &'static str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Fetched, FetchError> {
        if uri.scheme_str() != Some("https") {
            return Err(FetchError::NotHttps);
        }
        let host = uri.host().ok_or(FetchError::NotHttps)?;
        // A literal address never reaches the resolver: check it here.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            if !allowed(ip, &self.allow) {
                return Err(FetchError::NotPublic);
            }
        }
        let request = Request::get(uri.clone())
            .header(ACCEPT, accept)
            .header(USER_AGENT, AGENT)
            .body(Full::new(Bytes::new()))
            .map_err(|_| FetchError::NotHttps)?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                if is_not_public(&error) {
                    FetchError::NotPublic
                } else {
                    FetchError::Unreachable
                }
            })?;
            let (parts, body) = response.into_parts();
            if let Some(length) = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
            {
                if length > max_bytes {
                    return Err(FetchError::TooLarge(max_bytes));
                }
            }
            let body = Limited::new(body, max_bytes)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        FetchError::TooLarge(max_bytes)
                    } else {
                        FetchError::Unreachable
                    }
                })?
                .to_bytes();
            Ok(Fetched {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }
}

/// True when a connection failed because the resolver dropped every address.
fn is_not_public(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::PermissionDenied {
                return true;
            }
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_addresses_are_not_public() {
        for inside in [
            "0.0.0.0",
            "10.1.2.3",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "2001:db8::1",
            "2001::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn allowed_networks_open_just_themselves() {
        let allow: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(allowed("127.0.0.1".parse().unwrap(), &allow));
        assert!(!allowed("127.0.0.2".parse().unwrap(), &allow));
        assert!(!allowed("10.0.0.1".parse().unwrap(), &allow));
    }

    #[tokio::test]
    async fn a_private_literal_or_name_is_refused_before_any_connection() {
        let tls = crate::tls::outbound_config(None).unwrap();
        let client = PublicClient::new(tls, &[]);
        let timeout = Duration::from_secs(5);
        for url in [
            "https://127.0.0.1:9/client.json",
            "https://[::1]:9/client.json",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost:9/client.json",
        ] {
            let uri: Uri = url.parse().unwrap();
            assert_eq!(
                client
                    .get(&uri, "application/json", 5120, timeout)
                    .await
                    .unwrap_err(),
                FetchError::NotPublic,
                "{url}"
            );
        }
        let plain: Uri = "http://example.com/client.json".parse().unwrap();
        assert_eq!(
            client
                .get(&plain, "application/json", 5120, timeout)
                .await
                .unwrap_err(),
            FetchError::NotHttps
        );
    }
}
