//! TLS: the proxy's HTTPS listener and its TLS connections to the upstream and to
//! PostgreSQL.
//!
//! Server side, [`ServerTls`] holds one [`rustls::ServerConfig`], built once, whose
//! certificate comes from a resolver of its own: [`ServerTls::reload`] swaps a new
//! certificate into that resolver without rebuilding the config, so connections that
//! are open keep going and new handshakes get the new certificate.
//! [`ServerTls::watch`] polls the files' content for changes.
//!
//! Client side, [`client_config`] builds the [`rustls::ClientConfig`] the proxy uses
//! to reach an `https://` upstream: a private CA bundle or the public (webpki) roots,
//! and optionally a client certificate. [`checked_client_config`] builds the one
//! PostgreSQL connections use, which checks as much of the server's certificate as
//! the connection's `sslmode` asks (see [`ServerCheck`]).
//!
//! Everything uses the aws-lc-rs provider with its default cipher suites, TLS 1.2 and
//! 1.3 only. Files are PEM: certificate chains leaf first; private keys PKCS#8,
//! PKCS#1 or SEC1 (unencrypted).
//!
//! No error or log line ever carries file contents: errors name the file and the kind
//! of problem, nothing else.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hyper_rustls::ConfigBuilderExt as _;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::MissedTickBehavior;
use zeroize::Zeroizing;

mod peer_check;

pub use peer_check::{ServerCheck, checked_client_config};

/// The protocol versions offered, both ways.
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ALPN protocols the HTTPS listener offers, in order of preference.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The shortest interval [`ServerTls::watch`] polls at.
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Why TLS could not be set up, or a certificate not (re)loaded. Every message names
/// the file concerned and the kind of problem, never the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not well-formed PEM (e.g. cut short while it is being written).
    #[error("{}: {problem}", file.display())]
    Pem {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A certificate file holds no certificate.
    #[error("{}: no PEM `CERTIFICATE` section found", file.display())]
    NoCertificate {
        /// The file.
        file: PathBuf,
    },
    /// A certificate could not be parsed.
    #[error("{}: the certificate is not valid: {problem}", file.display())]
    BadCertificate {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A key file holds no private key.
    #[error(
        "{}: no unencrypted PEM private key found (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`)",
        file.display()
    )]
    NoKey {
        /// The file.
        file: PathBuf,
    },
    /// A private key could not be loaded (unsupported algorithm, malformed).
    #[error("{}: the private key cannot be used: {problem}", file.display())]
    BadKey {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The private key is not the certificate's.
    #[error(
        "the private key in {} does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A CA bundle could not be used.
    #[error("{}: the CA bundle cannot be used: {problem}", file.display())]
    BadCa {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// One of a certificate/key pair was given without the other.
    #[error("{} is set but `{missing}` is not: give both or neither", given.display())]
    HalfPair {
        /// The file that was given.
        given: PathBuf,
        /// The setting that is missing.
        missing: &'static str,
    },
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The aws-lc-rs provider, with its default cipher suites and key exchanges.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

// ---------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------

/// The files of the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A CA bundle (PEM): when set, clients must present a certificate it issued.
    pub client_ca: Option<PathBuf>,
}

/// The HTTPS listener's TLS: one server config whose certificate can be swapped while
/// it serves.
///
/// The client CA bundle is read once, by [`ServerTls::load`]; only the certificate
/// and key are reloaded.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerFiles,
    provider: Arc<CryptoProvider>,
    config: Arc<ServerConfig>,
    resolver: Arc<Resolver>,
    /// The BLAKE3 hash of the certificate and key files in use. The lock also keeps
    /// reloads from running concurrently.
    loaded: tokio::sync::Mutex<blake3::Hash>,
}

/// The certificate resolver: whatever certificate is current, for every handshake.
struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for Resolver {
    // Never the key: only how long the chain in use is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("chain_len", &self.current.load().cert.len())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ServerTls {
    /// Reads and checks the files (the key must be the certificate's) and builds the
    /// server config: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, rustls's default
    /// session resumption, and client certificates required when `client_ca` is set.
    pub fn load(files: ServerFiles) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let (cert, key) = read_pair(&files.cert, &files.key)?;
        let hash = content_hash(&cert, &key);
        let certified = certified_key(&files.cert, &cert, &files.key, &key, &provider)?;
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(certified),
        });
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)?;
        let builder = match &files.client_ca {
            Some(file) => {
                let roots = Arc::new(read_roots(file)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|error| TlsError::BadCa {
                        file: file.clone(),
                        problem: error.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            files,
            provider,
            config: Arc::new(config),
            resolver,
            loaded: tokio::sync::Mutex::new(hash),
        })
    }

    /// An acceptor for the listener. Every acceptor shares the one config, so a
    /// reload reaches all of them.
    #[must_use]
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// The files this TLS was loaded from.
    #[must_use]
    pub fn files(&self) -> &ServerFiles {
        &self.files
    }

    /// The certificate chain in use (leaf first).
    #[must_use]
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.resolver.current.load().cert.clone()
    }

    /// The notAfter time of the certificate in use, when it can be read.
    #[must_use]
    pub fn not_after(&self) -> Option<SystemTime> {
        self.resolver
            .current
            .load()
            .cert
            .first()
            .and_then(|leaf| not_after(leaf))
    }

    /// Re-reads the certificate and key files. When their content changed and the new
    /// pair is valid, new handshakes use it from now on: `Ok(true)`. When the content
    /// is what is in use (by hash; the key is not re-parsed): `Ok(false)`, also when
    /// another reload is running at the same moment.
    ///
    /// # Errors
    ///
    /// When the files cannot be read, are malformed (e.g. half-written), or the key is
    /// not the certificate's. The certificate in use stays in use, and the next call
    /// reads the files again: a certificate and a key written one after the other are
    /// picked up once both are there.
    ///
    /// It reads files: from async code, call it on a blocking thread, as
    /// [`ServerTls::watch`] does.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Ok(mut loaded) = self.loaded.try_lock() else {
            return Ok(false);
        };
        let (cert, key) = read_pair(&self.files.cert, &self.files.key)?;
        let hash = content_hash(&cert, &key);
        if hash == *loaded {
            return Ok(false);
        }
        let certified = certified_key(
            &self.files.cert,
            &cert,
            &self.files.key,
            &key,
            &self.provider,
        )?;
        self.resolver.current.store(Arc::new(certified));
        *loaded = hash;
        Ok(true)
    }

    /// Calls [`ServerTls::reload`] every `interval` (at least 10 ms), forever, logging
    /// each new certificate (info) and each failed reload (warning; the old
    /// certificate keeps serving), and telling `on_reload` of each: `true` when a new
    /// certificate is in use, `false` when a reload failed (unchanged files call
    /// nothing). For metrics, e.g. `move |ok| metrics.tls_reload(ok)`.
    ///
    /// The files' content is polled on purpose, rather than watched with inotify:
    /// Kubernetes updates a Secret volume by atomically swapping its `..data` symlink,
    /// which file watches on the visible paths miss (and editors that write a new
    /// file and rename it over the old one defeat them too). Reading two small files
    /// and hashing them every few seconds costs nothing.
    pub async fn watch(self: Arc<Self>, interval: Duration, on_reload: impl Fn(bool) + Send) {
        let mut ticks = tokio::time::interval(interval.max(MIN_WATCH_INTERVAL));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick completes at once; the files were just loaded.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let tls = self.clone();
            match tokio::task::spawn_blocking(move || tls.reload()).await {
                Ok(Ok(true)) => {
                    on_reload(true);
                    let not_after = self
                        .not_after()
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
                    tracing::info!(
                        cert = %self.files.cert.display(),
                        not_after = not_after.as_deref().unwrap_or("unknown"),
                        "TLS certificate reloaded; new connections use it"
                    );
                }
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    on_reload(false);
                    tracing::warn!(
                        %error,
                        "TLS certificate not reloaded; the current certificate stays in use"
                    );
                }
                Err(error) => {
                    on_reload(false);
                    tracing::warn!(
                        %error,
                        cert = %self.files.cert.display(),
                        "TLS certificate reload did not complete"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------

/// The files of the TLS connections to the upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamFiles {
    /// A CA bundle (PEM) to trust instead of the public (webpki) roots.
    pub ca: Option<PathBuf>,
    /// A client certificate chain (PEM) to present, with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with `cert`.
    pub key: Option<PathBuf>,
}

/// The client config for an `https://` upstream: TLS 1.2 and 1.3; the servers it
/// trusts are those `files.ca` issued, or without it the public roots (Mozilla's, as
/// packaged by webpki-roots); it presents a client certificate when `files.cert` and
/// `files.key` are set. ALPN is left to the connector that uses it.
///
/// # Errors
///
/// When a file cannot be read or used, when the key is not the certificate's, or when
/// only one of `cert` and `key` is set.
pub fn client_config(files: &UpstreamFiles) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(VERSIONS)?;
    let builder = match &files.ca {
        Some(file) => builder.with_root_certificates(read_roots(file)?),
        None => builder.with_webpki_roots(),
    };
    let config = match (&files.cert, &files.key) {
        (Some(cert_file), Some(key_file)) => {
            let (cert, key) = read_pair(cert_file, key_file)?;
            let certified = certified_key(cert_file, &cert, key_file, &key, &provider)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), None) => {
            return Err(TlsError::HalfPair {
                given: cert.clone(),
                missing: "key_file",
            });
        }
        (None, Some(key)) => {
            return Err(TlsError::HalfPair {
                given: key.clone(),
                missing: "cert_file",
            });
        }
    };
    Ok(config)
}

// ---------------------------------------------------------------------------------
// Reading files
// ---------------------------------------------------------------------------------

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        file: file.to_owned(),
        source,
    })
}

/// A certificate and its private key; the key's bytes are zeroed when dropped.
fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), TlsError> {
    Ok((read(cert)?, Zeroizing::new(read(key)?)))
}

/// One hash over both files, each prefixed with its length so that bytes moving
/// from one file to the other still count as a change.
fn content_hash(cert: &[u8], key: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    for part in [cert, key] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize()
}

/// What is wrong with a PEM file, in words that quote nothing of it (the error's own
/// text may quote a line).
fn pem_problem(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => {
            "a PEM section has no END line (the file is cut short, or still being written)"
        }
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64",
        pem::Error::Io(_) => "the PEM text could not be read",
        pem::Error::NoItemsFound => "no PEM section of the expected kind",
        pem::Error::SectionTooLarge => "a PEM section is too large",
        _ => "the PEM text is malformed",
    }
}

fn parse_certs(file: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            file: file.to_owned(),
            problem: pem_problem(&error),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            file: file.to_owned(),
        });
    }
    Ok(certs)
}

fn parse_key(file: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey {
            file: file.to_owned(),
        },
        error => TlsError::Pem {
            file: file.to_owned(),
            problem: pem_problem(&error),
        },
    })
}

/// Parses a certificate chain and its key, and checks that they belong together.
fn certified_key(
    cert_file: &Path,
    cert: &[u8],
    key_file: &Path,
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_certs(cert_file, cert)?;
    let key = parse_key(key_file, key)?;
    // The provider's key errors describe the key's kind, never its bytes.
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::BadKey {
            file: key_file.to_owned(),
            problem: error.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key type whose public half rustls cannot derive: nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_file.to_owned(),
            key: key_file.to_owned(),
        }),
        Err(error) => Err(TlsError::BadCertificate {
            file: cert_file.to_owned(),
            problem: error.to_string(),
        }),
    }
}

/// Reads a CA bundle into a root store.
/// The certificate authorities of a PEM file, for a client that trusts them.
///
/// # Errors
///
/// The file cannot be read, or holds no usable certificate.
pub fn read_ca_file(file: &Path) -> Result<RootCertStore, TlsError> {
    read_roots(file)
}

/// The TLS settings of the proxy's own outbound calls that must trust more than
/// the public roots: the webpki roots and `extra`. ALPN is left to the connector.
///
/// # Errors
///
/// The provider refuses the protocol versions (it does not, with aws-lc-rs).
pub fn outbound_config(extra: Option<&RootCertStore>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(extra) = extra {
        roots.roots.extend(extra.roots.iter().cloned());
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn read_roots(file: &Path) -> Result<RootCertStore, TlsError> {
    let bytes = read(file)?;
    let bad = |problem: String| TlsError::BadCa {
        file: file.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad(pem_problem(&error).to_owned()))?;
    if certs.is_empty() {
        return Err(bad("no PEM `CERTIFICATE` section found".to_owned()));
    }
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|error| bad(format!("certificate #{}: {error}", index + 1)))?;
    }
    Ok(roots)
}

// ---------------------------------------------------------------------------------
// notAfter, for the log line
// ---------------------------------------------------------------------------------

/// The notAfter of a DER certificate; `None` when the certificate cannot be parsed
/// or the time is before 1970.
fn not_after(cert: &[u8]) -> Option<SystemTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let seconds = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step should fail the test loudly"
)]
mod tests;
