//! TLS: the proxy's HTTPS listener and its TLS connections to the upstream.
//!
//! Server side, [`ServerTls`] holds one [`rustls::ServerConfig`], built once, whose
//! certificate comes from a resolver of its own: [`ServerTls::reload`] swaps a new
//! certificate into that resolver without rebuilding the config, so connections that
//! are open keep going and new handshakes get the new certificate.
//! [`ServerTls::watch`] polls the files' content for changes.
//!
//! Client side, [`client_config`] builds the [`rustls::ClientConfig`] the proxy uses
//! to reach an `https://` upstream: a private CA bundle or the public (webpki) roots,
//! and optionally a client certificate.
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

/// Splits one DER element off `input`: its tag, its contents, and what follows.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |len, byte| (len << 8) | usize::from(*byte))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The notAfter of a DER certificate (X.509: Certificate -> TBSCertificate ->
/// [version] serial signature issuer validity{notBefore notAfter}).
fn not_after(cert: &[u8]) -> Option<SystemTime> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    let (SEQUENCE, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    if let (VERSION, _, after) = der_element(rest)? {
        rest = after;
    }
    for _ in ["serial", "signature", "issuer"] {
        rest = der_element(rest)?.2;
    }
    let (SEQUENCE, validity, _) = der_element(rest)? else {
        return None;
    };
    let after_not_before = der_element(validity)?.2;
    let (tag, time, _) = der_element(after_not_before)?;
    let time = std::str::from_utf8(time).ok()?;
    let digits = time.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = digits.get(..2)?.parse().ok()?;
            (
                if yy >= 50 { 1900 + yy } else { 2000 + yy },
                digits.get(2..)?,
            )
        }
        (GENERALIZED_TIME, 14) => (digits.get(..4)?.parse().ok()?, digits.get(4..)?),
        _ => return None,
    };
    let field = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let seconds = u64::try_from(seconds).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step should fail the test loudly"
)]
mod tests {
    use super::*;

    use aws_lc_rs::encoding::AsDer as _;
    use base64::Engine as _;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls_pki_types::ServerName;

    /// A test CA.
    struct Ca {
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    /// A certificate and its key, as PEM, with the certificate's DER.
    struct Leaf {
        cert: String,
        key: String,
        der: CertificateDer<'static>,
    }

    impl Ca {
        fn new() -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "authmd-proxy unit test CA");
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let issuer =
                CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            Ca { issuer }
        }

        fn leaf_with(&self, key: &KeyPair, edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            edit(&mut params);
            let cert = params.signed_by(key, &self.issuer).unwrap();
            Leaf {
                cert: cert.pem(),
                key: key.serialize_pem(),
                der: cert.der().clone(),
            }
        }

        fn leaf(&self) -> Leaf {
            self.leaf_with(&KeyPair::generate().unwrap(), |_| {})
        }

        fn der(&self) -> CertificateDer<'static> {
            self.issuer.der().clone()
        }
    }

    /// Files in a temporary directory.
    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Dir {
            Dir {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.path(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        /// Writes a leaf's certificate and key as `server.crt` and `server.key`.
        fn server(&self, leaf: &Leaf) -> ServerFiles {
            ServerFiles {
                cert: self.write("server.crt", &leaf.cert),
                key: self.write("server.key", &leaf.key),
                client_ca: None,
            }
        }
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = format!("-----BEGIN {label}-----\n");
        for line in text.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str(&format!("-----END {label}-----\n"));
        pem
    }

    /// Asserts that an error's text and debug output quote no line of `secret`.
    fn assert_quotes_nothing_of(error: &TlsError, secret: &str) {
        let shown = format!("{error} {error:?}");
        for line in secret.lines().filter(|l| !l.starts_with("-----")) {
            for piece in line.as_bytes().chunks(16) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(
                    piece.len() < 8 || !shown.contains(piece),
                    "the error quotes the file: {shown}"
                );
            }
        }
    }

    fn client(
        ca: &CertificateDer<'static>,
        alpn: &[&[u8]],
        identity: Option<&Leaf>,
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![leaf.der.clone()],
                    PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// What a handshake with the server produced: the leaf it served and the
    /// negotiated ALPN protocol, or the server's error.
    async fn handshake(
        tls: &ServerTls,
        client: ClientConfig,
    ) -> Result<(CertificateDer<'static>, Option<Vec<u8>>), std::io::Error> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let acceptor = tls.acceptor();
        let (near, far) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("localhost").unwrap();
        let (client, server) = tokio::join!(connector.connect(name, near), acceptor.accept(far));
        server?;
        let client = client?;
        let connection = client.get_ref().1;
        let leaf = connection.peer_certificates().unwrap()[0]
            .clone()
            .into_owned();
        Ok((leaf, connection.alpn_protocol().map(<[u8]>::to_vec)))
    }

    async fn served(tls: &ServerTls, ca: &Ca) -> CertificateDer<'static> {
        handshake(tls, client(&ca.der(), &[], None))
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn load_serves_the_certificate_with_alpn_h2_first() {
        let (ca, dir) = (Ca::new(), Dir::new());
        let leaf = ca.leaf();
        let tls = ServerTls::load(dir.server(&leaf)).unwrap();
        assert_eq!(tls.chain(), vec![leaf.der.clone()]);
        let both: &[&[u8]] = &[b"http/1.1", b"h2"];
        let (served, alpn) = handshake(&tls, client(&ca.der(), both, None))
            .await
            .unwrap();
        assert_eq!(served, leaf.der);
        assert_eq!(
            alpn.as_deref(),
            Some(&b"h2"[..]),
            "the server's preference wins"
        );
        let h1: &[&[u8]] = &[b"http/1.1"];
        let (_, alpn) = handshake(&tls, client(&ca.der(), h1, None)).await.unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    }

    #[tokio::test]
    async fn pkcs1_and_sec1_keys_load() {
        let (ca, dir) = (Ca::new(), Dir::new());
        // SEC1 (`EC PRIVATE KEY`), from a P-256 PKCS#8 key.
        let key = KeyPair::generate().unwrap();
        let ecdsa = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            key.serialized_der(),
        )
        .unwrap();
        let sec1 = pem_encode(
            "EC PRIVATE KEY",
            ecdsa.private_key().as_der().unwrap().as_ref(),
        );
        let leaf = ca.leaf_with(&key, |_| {});
        let files = ServerFiles {
            cert: dir.write("ec.crt", &leaf.cert),
            key: dir.write("ec.key", &sec1),
            client_ca: None,
        };
        let tls = ServerTls::load(files).unwrap();
        assert_eq!(served(&tls, &ca).await, leaf.der);

        // PKCS#1 (`RSA PRIVATE KEY`): the RSAPrivateKey inside a PKCS#8 PrivateKeyInfo
        // (SEQUENCE { version, algorithm, OCTET STRING { RSAPrivateKey } }).
        let key =
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        let (_, info, _) = der_element(key.serialized_der()).unwrap();
        let rest = der_element(info).unwrap().2;
        let rest = der_element(rest).unwrap().2;
        let (tag, pkcs1, _) = der_element(rest).unwrap();
        assert_eq!(tag, 0x04);
        let pkcs1 = pem_encode("RSA PRIVATE KEY", pkcs1);
        let leaf = ca.leaf_with(&key, |_| {});
        let files = ServerFiles {
            cert: dir.write("rsa.crt", &leaf.cert),
            key: dir.write("rsa.key", &pkcs1),
            client_ca: None,
        };
        let tls = ServerTls::load(files).unwrap();
        assert_eq!(served(&tls, &ca).await, leaf.der);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let (ca, dir) = (Ca::new(), Dir::new());
        let (one, other) = (ca.leaf(), ca.leaf());
        let files = ServerFiles {
            cert: dir.write("server.crt", &one.cert),
            key: dir.write("server.key", &other.key),
            client_ca: None,
        };
        let error = ServerTls::load(files.clone()).unwrap_err();
        assert!(
            matches!(&error, TlsError::KeyMismatch { cert, key } if *cert == files.cert && *key == files.key),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains("server.crt") && text.contains("server.key"),
            "{text}"
        );
        assert_quotes_nothing_of(&error, &other.key);
        assert_quotes_nothing_of(&error, &one.cert);
    }

    #[test]
    fn bad_files_are_named_and_never_quoted() {
        let (ca, dir) = (Ca::new(), Dir::new());
        let leaf = ca.leaf();
        let good = dir.server(&leaf);

        let missing = ServerFiles {
            key: dir.path("nope.key"),
            ..good.clone()
        };
        let error = ServerTls::load(missing).unwrap_err();
        assert!(
            matches!(&error, TlsError::Read { file, .. } if file.ends_with("nope.key")),
            "{error:?}"
        );

        // The key where the certificate should be, and the other way round.
        let swapped = ServerFiles {
            cert: good.key.clone(),
            key: good.cert.clone(),
            client_ca: None,
        };
        let error = ServerTls::load(swapped).unwrap_err();
        assert!(
            matches!(&error, TlsError::NoCertificate { file } if file.ends_with("server.key")),
            "{error:?}"
        );
        assert_quotes_nothing_of(&error, &leaf.key);
        let only_cert = ServerFiles {
            key: good.cert.clone(),
            ..good.clone()
        };
        let error = ServerTls::load(only_cert).unwrap_err();
        assert!(
            matches!(&error, TlsError::NoKey { file } if file.ends_with("server.crt")),
            "{error:?}"
        );

        // A key cut short in the middle of its base64.
        let cut = &leaf.key[..leaf.key.len() / 2];
        let truncated = ServerFiles {
            key: dir.write("cut.key", cut),
            ..good.clone()
        };
        let error = ServerTls::load(truncated).unwrap_err();
        assert!(
            matches!(&error, TlsError::Pem { file, .. } if file.ends_with("cut.key")),
            "{error:?}"
        );
        assert!(error.to_string().contains("END"), "{error}");
        assert_quotes_nothing_of(&error, &leaf.key);

        // Garbage inside a well-formed section.
        let garbage = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0\n-----END PRIVATE KEY-----\n";
        let bad_key = ServerFiles {
            key: dir.write("bad.key", garbage),
            ..good.clone()
        };
        let error = ServerTls::load(bad_key).unwrap_err();
        assert!(
            matches!(&error, TlsError::BadKey { file, .. } if file.ends_with("bad.key")),
            "{error:?}"
        );
        assert_quotes_nothing_of(&error, garbage);

        let bad_ca = ServerFiles {
            client_ca: Some(dir.write("ca.crt", "not a certificate\n")),
            ..good
        };
        let error = ServerTls::load(bad_ca).unwrap_err();
        assert!(
            matches!(&error, TlsError::BadCa { file, .. } if file.ends_with("ca.crt")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_unchanged_file_is_not_reloaded() {
        let (ca, dir) = (Ca::new(), Dir::new());
        let leaf = ca.leaf();
        let tls = ServerTls::load(dir.server(&leaf)).unwrap();
        assert!(!tls.reload().unwrap());
        // Rewritten with the same bytes (a new mtime): still unchanged.
        dir.server(&leaf);
        assert!(!tls.reload().unwrap());
        assert_eq!(served(&tls, &ca).await, leaf.der);
    }

    #[tokio::test]
    async fn a_changed_pair_is_swapped_in_and_served() {
        let (ca, dir) = (Ca::new(), Dir::new());
        let (old, new) = (ca.leaf(), ca.leaf());
        let tls = ServerTls::load(dir.server(&old)).unwrap();
        assert_eq!(served(&tls, &ca).await, old.der);
        dir.server(&new);
        assert!(tls.reload().unwrap());
        assert_eq!(served(&tls, &ca).await, new.der);
        assert_eq!(tls.chain(), vec![new.der.clone()]);
        assert!(
            !tls.reload().unwrap(),
            "the new content is now the loaded one"
        );
    }

    #[tokio::test]
    async fn a_half_written_pair_keeps_the_old_certificate() {
        let (ca, dir) = (Ca::new(), Dir::new());
        let (old, new) = (ca.leaf(), ca.leaf());
        let files = dir.server(&old);
        let tls = ServerTls::load(files.clone()).unwrap();

        // The certificate is being written...
        std::fs::write(&files.cert, &new.cert[..new.cert.len() - 40]).unwrap();
        let error = tls.reload().unwrap_err();
        assert!(matches!(error, TlsError::Pem { .. }), "{error:?}");
        assert_eq!(served(&tls, &ca).await, old.der);

        // ...is written, and the key is not yet.
        std::fs::write(&files.cert, &new.cert).unwrap();
        let error = tls.reload().unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        assert_quotes_nothing_of(&error, &old.key);
        assert_eq!(served(&tls, &ca).await, old.der);
        // The next tick tries again (and fails again).
        assert!(tls.reload().is_err());

        // The key arrives.
        std::fs::write(&files.key, &new.key).unwrap();
        assert!(tls.reload().unwrap());
        assert_eq!(served(&tls, &ca).await, new.der);
    }

    #[tokio::test]
    async fn a_connection_open_before_a_swap_keeps_working() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (ca, dir) = (Ca::new(), Dir::new());
        let (old, new) = (ca.leaf(), ca.leaf());
        let tls = ServerTls::load(dir.server(&old)).unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client(&ca.der(), &[], None)));
        let (near, far) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("localhost").unwrap();
        let acceptor = tls.acceptor();
        let (client, server) = tokio::join!(connector.connect(name, near), acceptor.accept(far));
        let (mut client, mut server) = (client.unwrap(), server.unwrap());

        dir.server(&new);
        assert!(tls.reload().unwrap());

        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        assert_eq!(client.get_ref().1.peer_certificates().unwrap()[0], old.der);
        assert_eq!(served(&tls, &ca).await, new.der);
    }

    #[tokio::test]
    async fn with_a_client_ca_a_client_certificate_is_required() {
        let (ca, dir) = (Ca::new(), Dir::new());
        let leaf = ca.leaf();
        let clients = Ca::new();
        let mut files = dir.server(&leaf);
        files.client_ca = Some(dir.write("clients.crt", &clients.issuer.pem()));
        let tls = ServerTls::load(files).unwrap();

        let refused = handshake(&tls, client(&ca.der(), &[], None)).await;
        assert!(refused.is_err(), "a client without a certificate got in");
        let stranger = ca.leaf();
        let refused = handshake(&tls, client(&ca.der(), &[], Some(&stranger))).await;
        assert!(refused.is_err(), "a certificate from another CA got in");
        let member = clients.leaf();
        let (served, _) = handshake(&tls, client(&ca.der(), &[], Some(&member)))
            .await
            .unwrap();
        assert_eq!(served, leaf.der);
    }

    #[tokio::test]
    async fn watch_picks_up_a_new_pair() {
        let (ca, dir) = (Ca::new(), Dir::new());
        let (old, new) = (ca.leaf(), ca.leaf());
        let tls = Arc::new(ServerTls::load(dir.server(&old)).unwrap());
        let (told, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let watcher = tokio::spawn(tls.clone().watch(Duration::from_millis(10), move |ok| {
            let _ = told.send(ok);
        }));
        dir.server(&new);
        // The two files are written one after the other: a tick in between reports a
        // failure first. The timeout is a guard against a hang, not a readiness wait.
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match heard.recv().await {
                    Some(true) => break,
                    Some(false) => {}
                    None => panic!("the watcher stopped"),
                }
            }
        })
        .await
        .unwrap();
        watcher.abort();
        assert_eq!(served(&tls, &ca).await, new.der);
    }

    #[test]
    fn not_after_reads_utc_and_generalized_times() {
        let ca = Ca::new();
        let utc = ca.leaf_with(&KeyPair::generate().unwrap(), |params| {
            params.not_after = rcgen::date_time_ymd(2031, 2, 28);
        });
        let expected = humantime::parse_rfc3339("2031-02-28T00:00:00Z").unwrap();
        assert_eq!(not_after(&utc.der), Some(expected));
        let generalized = ca.leaf_with(&KeyPair::generate().unwrap(), |params| {
            params.not_after = rcgen::date_time_ymd(2064, 12, 31);
        });
        let expected = humantime::parse_rfc3339("2064-12-31T00:00:00Z").unwrap();
        assert_eq!(not_after(&generalized.der), Some(expected));
        assert_eq!(not_after(b"\x30\x03\x02\x01"), None);
        assert_eq!(not_after(&[]), None);
    }

    #[test]
    fn client_config_trusts_a_ca_or_the_public_roots_and_takes_a_pair() {
        let (ca, dir) = (Ca::new(), Dir::new());
        let leaf = ca.leaf();
        assert!(client_config(&UpstreamFiles::default()).is_ok());
        let ca_file = dir.write("ca.crt", &ca.issuer.pem());
        let cert = dir.write("client.crt", &leaf.cert);
        let key = dir.write("client.key", &leaf.key);
        let config = client_config(&UpstreamFiles {
            ca: Some(ca_file),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
        })
        .unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        assert!(config.alpn_protocols.is_empty(), "ALPN is the connector's");

        let error = client_config(&UpstreamFiles {
            ca: None,
            cert: Some(cert.clone()),
            key: None,
        })
        .unwrap_err();
        assert!(
            matches!(
                &error,
                TlsError::HalfPair {
                    missing: "key_file",
                    ..
                }
            ),
            "{error:?}"
        );
        let error = client_config(&UpstreamFiles {
            ca: None,
            cert: None,
            key: Some(key),
        })
        .unwrap_err();
        assert!(
            matches!(
                &error,
                TlsError::HalfPair {
                    missing: "cert_file",
                    ..
                }
            ),
            "{error:?}"
        );

        let other = ca.leaf();
        let error = client_config(&UpstreamFiles {
            ca: None,
            cert: Some(cert),
            key: Some(dir.write("other.key", &other.key)),
        })
        .unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        let error = client_config(&UpstreamFiles {
            ca: Some(dir.write("empty.crt", "")),
            ..UpstreamFiles::default()
        })
        .unwrap_err();
        assert!(matches!(error, TlsError::BadCa { .. }), "{error:?}");
    }
}
