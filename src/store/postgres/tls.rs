//! The driver's TLS: tokio-postgres connects through [`Connector`], which wraps the
//! socket in rustls (aws-lc-rs, the client config of
//! [`checked_client_config`](crate::tls::checked_client_config)) once the server has
//! agreed to TLS.
//!
//! The connection also gives the driver its `tls-server-end-point` channel binding
//! (RFC 5929: the hash of the server's certificate), so that SCRAM authentication
//! over TLS is bound to this TLS session (`SCRAM-SHA-256-PLUS`): a server in the
//! middle cannot relay it, even where the certificate is not checked.
//!
//! Written here rather than taken from `tokio-postgres-rustls`, whose channel binding
//! brings RustCrypto's X.509 stack and a second `const-oid`; this uses the proxy's
//! own aws-lc-rs and x509-parser.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_lc_rs::digest;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use super::sslmode::PostgresTls;
use crate::tls::{TlsError, checked_client_config};

/// Makes the TLS handshake of each connection; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Connector {
    /// `None` when TLS is off (`sslmode=disable`: the driver never asks).
    config: Option<Arc<ClientConfig>>,
    /// The settings, in words (see [`PostgresTls`]'s `Display`).
    summary: Arc<str>,
}

impl Connector {
    /// The connector for `tls`; reads its CA file, if any.
    pub(super) fn new(tls: &PostgresTls) -> Result<Connector, TlsError> {
        let config = match tls.check() {
            None => None,
            Some(check) => Some(Arc::new(checked_client_config(
                tls.ca_file.as_deref(),
                check,
            )?)),
        };
        Ok(Connector {
            config,
            summary: tls.to_string().into(),
        })
    }

    /// The settings in words, for the message of a failed connection:
    /// `sslmode=verify-full, CA file /etc/db/ca.pem`. Never secret.
    pub(super) fn summary(&self) -> &str {
        &self.summary
    }
}

impl MakeTlsConnect<Socket> for Connector {
    type Stream = RustlsStream;
    type TlsConnect = Handshake;
    type Error = std::convert::Infallible;

    /// `domain` is the host the URL names (empty for a Unix socket, where the
    /// server never agrees to TLS); it is parsed at the handshake, if there is one.
    fn make_tls_connect(&mut self, domain: &str) -> Result<Handshake, Self::Error> {
        Ok(Handshake {
            config: self.config.clone(),
            domain: domain.to_owned(),
        })
    }
}

/// One connection's TLS handshake.
#[derive(Debug)]
pub(super) struct Handshake {
    config: Option<Arc<ClientConfig>>,
    domain: String,
}

impl TlsConnect<Socket> for Handshake {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let Some(config) = self.config else {
                return Err(io::Error::other("TLS is off (sslmode=disable)"));
            };
            let name = ServerName::try_from(self.domain).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the host is neither a DNS name nor an IP address, so TLS cannot check it",
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS connection to PostgreSQL.
#[derive(Debug)]
pub(super) struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| end_point_hash(leaf))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929's `tls-server-end-point`: the certificate hashed with the hash of its
/// signature algorithm (MD5 and SHA-1 become SHA-256). `None` for an algorithm with
/// no single hash (RSASSA-PSS, Ed25519) or a certificate that does not parse: the
/// driver then authenticates without channel binding, as PostgreSQL allows.
fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let algorithm = match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        // md5WithRSA, sha1WithRSA, sha256WithRSA, ecdsa-with-SHA1, ecdsa-with-SHA256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => &digest::SHA256,
        // sha384WithRSA, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &digest::SHA384,
        // sha512WithRSA, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(algorithm, der).as_ref().to_vec())
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db".to_owned()])
            .unwrap()
            .self_signed(&ecdsa)
            .unwrap();
        let hash = end_point_hash(cert.der()).unwrap();
        assert_eq!(hash, digest::digest(&digest::SHA384, cert.der()).as_ref());

        let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db".to_owned()])
            .unwrap()
            .self_signed(&ed25519)
            .unwrap();
        assert_eq!(end_point_hash(cert.der()), None);
        assert_eq!(end_point_hash(b"not a certificate"), None);
    }
}
