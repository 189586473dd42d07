//! Unit tests of the TLS module: loading, reloading and serving certificates,
//! the client config, and reading a certificate's notAfter.

use super::*;

use aws_lc_rs::encoding::AsDer as _;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::ServerName;
use x509_parser::der_parser::ber::BerObjectContent;

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
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
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

fn client(ca: &CertificateDer<'static>, alpn: &[&[u8]], identity: Option<&Leaf>) -> ClientConfig {
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
    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let (_, info) = x509_parser::der_parser::parse_der(key.serialized_der()).unwrap();
    let BerObjectContent::OctetString(pkcs1) = info.as_sequence().unwrap()[2].content else {
        panic!("the third field of a PrivateKeyInfo is an OCTET STRING");
    };
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

/// What a handshake with a server serving `leaf` says, for a client of `check`
/// trusting `ca` (a file) and connecting to `name`: `Ok` or the client's error.
/// (The test CAs share a name, so a stranger's certificate is refused for its
/// signature, `BadSignature`, rather than as `UnknownIssuer`.)
async fn checked(
    leaf: &Leaf,
    ca: Option<&Ca>,
    check: ServerCheck,
    name: &str,
) -> Result<(), String> {
    let dir = Dir::new();
    let tls = ServerTls::load(dir.server(leaf)).unwrap();
    let ca_file = ca.map(|ca| dir.write("ca.crt", &ca.issuer.pem()));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        checked_client_config(ca_file.as_deref(), check).unwrap(),
    ));
    let (near, far) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let (client, _) = tokio::join!(connector.connect(name, near), tls.acceptor().accept(far));
    client.map(drop).map_err(|error| error.to_string())
}

#[tokio::test]
async fn checked_clients_check_nothing_the_chain_or_the_chain_and_the_name() {
    let (ca, stranger) = (Ca::new(), Ca::new());
    let leaf = ca.leaf(); // for `localhost`
    let foreign = stranger.leaf();

    // Nothing: any certificate, any name (the handshake still has to hold).
    assert_eq!(
        checked(&foreign, None, ServerCheck::Nothing, "db.example").await,
        Ok(())
    );

    // The chain: a certificate of the CA under any name; none of another CA.
    assert_eq!(
        checked(&leaf, Some(&ca), ServerCheck::Chain, "localhost").await,
        Ok(())
    );
    assert_eq!(
        checked(&leaf, Some(&ca), ServerCheck::Chain, "db.example").await,
        Ok(())
    );
    let error = checked(&foreign, Some(&ca), ServerCheck::Chain, "localhost")
        .await
        .unwrap_err();
    assert!(
        error.contains("invalid peer certificate: BadSignature"),
        "{error}"
    );
    // Without a CA file, the public roots: a private CA is not among them.
    let error = checked(&leaf, None, ServerCheck::Chain, "localhost")
        .await
        .unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");

    // The chain and the name.
    assert_eq!(
        checked(&leaf, Some(&ca), ServerCheck::ChainAndName, "localhost").await,
        Ok(())
    );
    let error = checked(&leaf, Some(&ca), ServerCheck::ChainAndName, "db.example")
        .await
        .unwrap_err();
    assert!(error.contains("not valid for name"), "{error}");
    let error = checked(&foreign, Some(&ca), ServerCheck::ChainAndName, "localhost")
        .await
        .unwrap_err();
    assert!(
        error.contains("invalid peer certificate: BadSignature"),
        "{error}"
    );

    // A CA file that cannot be used is named.
    let dir = Dir::new();
    let error =
        checked_client_config(Some(&dir.write("empty.crt", "")), ServerCheck::Chain).unwrap_err();
    assert!(matches!(error, TlsError::BadCa { .. }), "{error:?}");
}
