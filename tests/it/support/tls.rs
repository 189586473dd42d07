//! TLS test support: generated certificates and TLS clients.
//!
//! - [`TestCa`]: a CA (rcgen) that issues server certificates for `localhost` and
//!   `127.0.0.1`, and client certificates; everything can be written as PEM files.
//! - [`TlsConn`]: one TLS connection (tokio-rustls) speaking HTTP/1.1 or HTTP/2,
//!   whichever ALPN chose, that reports the negotiated protocol and the leaf
//!   certificate the server presented.
//! - [`tls_upstream`]: a TLS upstream (hyper over tokio-rustls) that answers with what
//!   it saw: the path, the HTTP version, and the client certificate, if any.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A short, printable fingerprint of a DER certificate (BLAKE3, hex).
pub fn fingerprint(der: &[u8]) -> String {
    blake3::hash(der).to_hex().to_string()
}

/// A certificate and its private key, as PEM, with the certificate's DER.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Identity {
    /// Writes the certificate and the key into `dir` under the given names, and
    /// returns their paths.
    pub fn write(&self, dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(cert), dir.join(key));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    /// The certificate's fingerprint (see [`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.der)
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

/// A certificate authority for tests.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA with its own key; `name` is its common name.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes the CA certificate into `dir` as `name` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// A server certificate for `localhost` and `127.0.0.1`, with a fresh key (so
    /// two calls give two different certificates: serial and key differ).
    pub fn server_cert(&self) -> Identity {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(&params)
    }

    /// A client certificate whose common name is `name`, with a fresh key.
    pub fn client_cert(&self, name: &str) -> Identity {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(&params)
    }

    fn issue(&self, params: &CertificateParams) -> Identity {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A client config trusting `ca`, presenting `identity` when given, offering `alpn`
/// (e.g. `&["h2"]`, `&["http/1.1"]`, or both).
///
/// Session resumption is off: a resumed TLS 1.3 session skips the certificate (and
/// reports the one of the session it resumes), so every connection must make a full
/// handshake for its leaf to be what the server serves now.
pub fn client_config(ca: &TestCa, identity: Option<&Identity>, alpn: &[&str]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(vec![identity.der.clone()], identity.private_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The TCP address of an `https://host:port` (or `http://`) URL's authority.
pub fn addr_of(url: &str) -> SocketAddr {
    let authority = url.split("://").nth(1).unwrap_or(url);
    let authority = authority.split('/').next().unwrap();
    authority
        .parse()
        .unwrap_or_else(|e| panic!("{url}: not an IP:port URL ({e})"))
}

/// What one request over a [`TlsConn`] got back.
#[derive(Debug)]
pub struct TlsResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// The protocol ALPN chose on the connection (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// The server's leaf certificate on the connection.
    pub leaf: CertificateDer<'static>,
}

impl TlsResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection to a server, speaking HTTP/2 when ALPN chose `h2` and HTTP/1.1
/// otherwise. Requests reuse the connection (keep-alive), so a test can send one
/// before and one after something changes on the server.
pub struct TlsConn {
    sender: Sender,
    authority: String,
    /// The protocol ALPN chose, if any.
    pub alpn: Option<String>,
    /// The server's leaf certificate.
    pub leaf: CertificateDer<'static>,
}

impl TlsConn {
    /// Connects to `addr` (TLS server name `localhost`) and performs the TLS and HTTP
    /// handshakes. A refused TLS handshake is an error, not a panic.
    pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsConn> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (_, connection) = tls.get_ref();
        let alpn = connection
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let leaf = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("the server presented no certificate")
            .clone()
            .into_owned();
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some("h2") {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            Sender::Http2(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(connection);
            Sender::Http1(sender)
        };
        Ok(TlsConn {
            sender,
            authority: format!("localhost:{}", addr.port()),
            alpn,
            leaf,
        })
    }

    /// `GET path` on this connection. Errors when the connection is gone or the
    /// server refused the client certificate after the handshake (TLS 1.3 reports
    /// that on the first read).
    pub async fn try_get(&mut self, path: &str) -> Result<TlsResponse, hyper::Error> {
        self.try_request(http::Method::GET, path, Bytes::new())
            .await
    }

    /// `method path` with `body` (JSON when not empty) on this connection.
    pub async fn try_request(
        &mut self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> Result<TlsResponse, hyper::Error> {
        let uri = match &self.sender {
            Sender::Http1(_) => path.to_owned(),
            Sender::Http2(_) => format!("https://{}{path}", self.authority),
        };
        let mut request = Request::builder().method(method).uri(uri);
        if let Sender::Http1(_) = &self.sender {
            request = request.header(http::header::HOST, &self.authority);
        }
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body)).unwrap();
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(TlsResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            alpn: self.alpn.clone(),
            leaf: self.leaf.clone(),
        })
    }

    /// `POST path` with a JSON body on this connection; panics on failure.
    pub async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> TlsResponse {
        self.try_request(http::Method::POST, path, body.into())
            .await
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"))
    }

    /// `GET path` on this connection; panics on failure.
    pub async fn get(&mut self, path: &str) -> TlsResponse {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}"))
    }
}

/// Connects, sends `GET path`, and returns the answer: a one-shot [`TlsConn`].
pub async fn get(addr: SocketAddr, config: Arc<ClientConfig>, path: &str) -> TlsResponse {
    TlsConn::connect(addr, config)
        .await
        .unwrap_or_else(|e| panic!("TLS connection to {addr} failed: {e}"))
        .get(path)
        .await
}

/// What the TLS upstream asks of its clients.
pub enum ClientAuth<'a> {
    /// No client certificate is requested.
    Off,
    /// A certificate from this CA is required.
    Required(&'a TestCa),
}

/// A TLS upstream on 127.0.0.1:<random> serving `identity`, over HTTP/1.1 and HTTP/2
/// (ALPN `h2`, `http/1.1`). Every request is answered 200 with JSON:
/// `{"path", "version", "client_cert": <fingerprint or null>, "tls": true}`.
pub async fn tls_upstream(identity: &Identity, client_auth: ClientAuth<'_>) -> SocketAddr {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Required(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            builder.with_client_cert_verifier(verifier.build().unwrap())
        }
    };
    let mut config = builder
        .with_single_cert(vec![identity.der.clone()], identity.private_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let client_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| fingerprint(leaf));
                let service = service_fn(move |request: Request<Incoming>| {
                    let body = serde_json::json!({
                        "path": request.uri().path(),
                        "version": format!("{:?}", request.version()),
                        "client_cert": client_cert,
                        "tls": true,
                    });
                    async move {
                        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}
