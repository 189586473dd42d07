//! The HTTP(S) client the proxy calls other services with: a trusted issuer's JWKS,
//! the x402 facilitator, and whatever else the proxy itself has to fetch or post.
//! The upstream it forwards agents' requests to has its own client, in
//! [`crate::proxy`], with the TLS settings of [`crate::tls::client_config`].
//!
//! One constructor, so every such call trusts the same servers and speaks the same
//! protocols: HTTPS with the public (webpki) roots, or plain HTTP; HTTP/1.1 only;
//! rustls with the aws-lc-rs provider. URLs that strangers name are fetched with
//! [`public::PublicClient`] instead, which reaches public addresses only.

pub mod public;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A client for the proxy's own calls to other services. Request bodies are whole
/// (`Full`); a GET sends an empty one, as [`Client::get`] does.
///
/// It sets no timeout of its own: each caller bounds its whole exchange (connect,
/// answer and body) with the deadline that suits it. Clones share one connection
/// pool.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A new [`HttpsClient`] with a connection pool of its own.
#[must_use]
pub fn https_client() -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}
