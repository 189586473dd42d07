//! TLS, end to end against the real binary: HTTPS on the proxy's listener (HTTP/1.1
//! and HTTP/2 by ALPN), certificate swaps while it serves, client certificates, and
//! TLS to the upstream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step should fail the test loudly"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support;
use crate::support::tls::{
    ClientAuth, Identity, TestCa, TlsConn, addr_of, client_config, get, tls_upstream,
};
use crate::support::{Binary, assert_envelope, client};

/// What every config here shares: an admin listener on a free port, one public
/// route, `/open/{*rest}`, and no store.
const ROUTES: &str = r#"
admin_listen: 127.0.0.1:0
service: {name: TLS test}
routes:
  - {id: open, path: "/open/{*rest}", methods: [GET], access: public}
store: {kind: none}
"#;

/// How long a certificate swap may take to be served: a guard against a hang, far
/// above the 100 ms reload interval the configs use.
const SWAP_DEADLINE: Duration = Duration::from_secs(20);

/// A directory holding a config file and the PEM files it names (by relative path,
/// so they resolve against the config's directory).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `config.yaml` (the routes above plus `yaml`) and returns its path.
    fn config(&self, yaml: &str) -> PathBuf {
        let path = self.path().join("config.yaml");
        std::fs::write(&path, format!("{yaml}\n{ROUTES}")).unwrap();
        path
    }

    /// Writes the server's certificate and key as `server.crt` and `server.key`.
    fn server_files(&self, identity: &Identity) -> (PathBuf, PathBuf) {
        identity.write(self.path(), "server.crt", "server.key")
    }
}

/// The `tls:` block serving `server.crt`/`server.key`, reloaded every 100 ms, and
/// with `extra` lines (indented two spaces) added.
fn tls_block(extra: &str) -> String {
    format!(
        "tls:\n  cert_file: server.crt\n  key_file: server.key\n  reload_interval: 100ms\n{extra}"
    )
}

/// Starts an HTTPS proxy in front of the echo upstream, serving `server`.
async fn https_proxy(setup: &Setup, server: &Identity, tls_extra: &str) -> (Binary, SocketAddr) {
    setup.server_files(server);
    let config = setup.config(&format!(
        "{}upstream: {{url: \"builtin:echo\"}}\n",
        tls_block(tls_extra)
    ));
    let proxy = Binary::serve(&config).await;
    assert!(
        proxy.url.starts_with("https://"),
        "the listening line names an https URL: {}",
        proxy.url
    );
    let addr = addr_of(&proxy.url);
    (proxy, addr)
}

/// Opens fresh connections until one is served the certificate `want` (a bounded
/// poll: the reload is driven by file polling in another process).
async fn wait_until_served(addr: SocketAddr, ca: &TestCa, want: &Identity) {
    let config = client_config(ca, None, &["http/1.1"]);
    let waited = tokio::time::timeout(SWAP_DEADLINE, async {
        loop {
            if let Ok(conn) = TlsConn::connect(addr, config.clone()).await {
                if conn.leaf == want.der {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the new certificate was not served within {SWAP_DEADLINE:?}"
    );
}

#[tokio::test]
async fn https_serves_http1_and_http2_by_alpn() {
    let (setup, ca) = (Setup::new(), TestCa::new("proxy CA"));
    let server = ca.server_cert();
    let (_proxy, addr) = https_proxy(&setup, &server, "").await;

    for (offered, expected) in [
        (&["http/1.1"][..], "http/1.1"),
        (&["h2"][..], "h2"),
        (&["h2", "http/1.1"][..], "h2"),
    ] {
        let response = get(addr, client_config(&ca, None, offered), "/open/hello").await;
        assert_eq!(response.status, 200, "{offered:?}: {}", response.body);
        assert_eq!(response.alpn.as_deref(), Some(expected), "{offered:?}");
        assert_eq!(response.leaf, server.der, "the configured certificate");
        let echo = response.json();
        assert_eq!(echo["path"], "/open/hello", "{echo}");
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    }

    // A client that offers no ALPN at all speaks HTTP/1.1.
    let response = get(addr, client_config(&ca, None, &[]), "/open/plain").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.alpn, None);
}

#[tokio::test]
async fn a_new_certificate_is_served_without_a_restart() {
    let (setup, ca) = (Setup::new(), TestCa::new("proxy CA"));
    let (old, new) = (ca.server_cert(), ca.server_cert());
    assert_ne!(old.der, new.der);
    let (proxy, addr) = https_proxy(&setup, &old, "").await;

    // Connections opened before the swap, one per protocol.
    let mut before_h1 = TlsConn::connect(addr, client_config(&ca, None, &["http/1.1"]))
        .await
        .unwrap();
    let mut before_h2 = TlsConn::connect(addr, client_config(&ca, None, &["h2"]))
        .await
        .unwrap();
    for conn in [&mut before_h1, &mut before_h2] {
        assert_eq!(conn.leaf, old.der);
        assert_eq!(conn.get("/open/before").await.status, 200);
    }

    setup.server_files(&new);
    wait_until_served(addr, &ca, &new).await;

    // The connections from before keep working, on the certificate they started with.
    for conn in [&mut before_h1, &mut before_h2] {
        let response = conn.get("/open/after").await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.leaf, old.der);
    }
    // New connections, both protocols, get the new certificate.
    for alpn in ["http/1.1", "h2"] {
        let response = get(addr, client_config(&ca, None, &[alpn]), "/open/new").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.leaf, new.der, "{alpn}");
    }

    // Plain HTTP to the TLS port fails cleanly: no HTTP success, the connection ends
    // (no hang), and the proxy keeps serving.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /open/plain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a plain-text request to the TLS port hung");
    assert!(
        !answer.starts_with(b"HTTP/1.1 2") && !answer.starts_with(b"HTTP/1.0 2"),
        "plain HTTP was served on the TLS port: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let response = get(addr, client_config(&ca, None, &["h2"]), "/open/still").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.leaf, new.der);
    assert_eq!(before_h1.get("/open/still").await.status, 200);

    // The metrics saw the reload, the handshakes by protocol, and the plain-text one
    // that failed.
    let admin = proxy.admin.clone().expect("the admin address is printed");
    let metrics = support::client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        sample("authmd_tls_certificate_reloads_total{outcome=\"success\"}"),
        1.0,
        "{metrics}"
    );
    assert!(sample("authmd_tls_handshakes_total{outcome=\"success\",protocol=\"h2\"}") >= 2.0);
    assert!(
        sample("authmd_tls_handshakes_total{outcome=\"success\",protocol=\"http/1.1\"}") >= 2.0
    );
    assert!(sample("authmd_tls_handshakes_total{outcome=\"failure\",protocol=\"none\"}") >= 1.0);
}

#[tokio::test]
async fn a_half_written_swap_keeps_the_old_certificate() {
    let (setup, ca) = (Setup::new(), TestCa::new("proxy CA"));
    let (old, new) = (ca.server_cert(), ca.server_cert());
    let (_proxy, addr) = https_proxy(&setup, &old, "").await;

    // The new certificate is written; its key is not yet (the old key stays).
    std::fs::write(setup.path().join("server.crt"), &new.cert_pem).unwrap();
    // Over ten reload intervals, every new connection is still served, with the old
    // certificate. (This observes the half-written state; it is not a readiness wait.)
    let config = client_config(&ca, None, &["http/1.1", "h2"]);
    for _ in 0..10 {
        let response = get(addr, config.clone(), "/open/during").await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(
            response.leaf, old.der,
            "a certificate without its key was served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A certificate cut short is no better.
    std::fs::write(
        setup.path().join("server.crt"),
        &new.cert_pem[..new.cert_pem.len() / 2],
    )
    .unwrap();
    for _ in 0..5 {
        let response = get(addr, config.clone(), "/open/during").await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.leaf, old.der);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Both files complete: the next tick serves the new pair.
    setup.server_files(&new);
    wait_until_served(addr, &ca, &new).await;
    let response = get(addr, config, "/open/done").await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn client_certificates_are_required_with_a_client_ca() {
    let (setup, ca) = (Setup::new(), TestCa::new("proxy CA"));
    let clients = TestCa::new("client CA");
    clients.write(setup.path(), "clients-ca.crt");
    let server = ca.server_cert();
    let (_proxy, addr) = https_proxy(&setup, &server, "  client_ca_file: clients-ca.crt\n").await;

    // Without a certificate, or with one another CA issued: refused at the handshake
    // (with TLS 1.3 the client learns it on its first read).
    let stranger = TestCa::new("stranger CA").client_cert("stranger");
    for (who, identity) in [("no certificate", None), ("a stranger", Some(&stranger))] {
        for alpn in ["http/1.1", "h2"] {
            let config = client_config(&ca, identity, &[alpn]);
            let refused = match TlsConn::connect(addr, config).await {
                Err(_) => true,
                Ok(mut conn) => {
                    tokio::time::timeout(Duration::from_secs(10), conn.try_get("/open/x"))
                        .await
                        .expect("a refused client hung")
                        .is_err()
                }
            };
            assert!(refused, "{who} ({alpn}) got in");
        }
    }

    let member = clients.client_cert("agent-1");
    for alpn in ["http/1.1", "h2"] {
        let response = get(addr, client_config(&ca, Some(&member), &[alpn]), "/open/x").await;
        assert_eq!(response.status, 200, "{alpn}: {}", response.body);
    }
}

/// Starts a plain-HTTP proxy whose upstream is `https://localhost:<port>` with the
/// given `upstream.tls` lines (indented four spaces, or empty for none).
async fn proxy_to_tls_upstream(setup: &Setup, upstream: SocketAddr, tls: &str) -> Binary {
    let tls = if tls.is_empty() {
        String::new()
    } else {
        format!("  tls:\n{tls}")
    };
    let config = setup.config(&format!(
        "upstream:\n  url: https://localhost:{}\n  connect_timeout: 5s\n  response_timeout: 10s\n{tls}",
        upstream.port()
    ));
    Binary::serve(&config).await
}

#[tokio::test]
async fn the_upstream_is_reached_over_tls_trusting_its_ca() {
    let setup = Setup::new();
    let upstream_ca = TestCa::new("upstream CA");
    upstream_ca.write(setup.path(), "upstream-ca.crt");
    let upstream = tls_upstream(&upstream_ca.server_cert(), ClientAuth::Off).await;
    let proxy = proxy_to_tls_upstream(&setup, upstream, "    ca_file: upstream-ca.crt\n").await;

    for _ in 0..2 {
        // Twice: the second request may reuse the pooled TLS connection.
        let response = client()
            .get(format!("{}/open/tls?x=1", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let seen: serde_json::Value = response.json().await.unwrap();
        assert_eq!(seen["tls"], true, "{seen}");
        assert_eq!(seen["path"], "/open/tls", "{seen}");
        assert_eq!(seen["client_cert"], serde_json::Value::Null, "{seen}");
    }
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_the_upstream() {
    let setup = Setup::new();
    let upstream_ca = TestCa::new("upstream CA");
    upstream_ca.write(setup.path(), "upstream-ca.crt");
    let proxy_clients = TestCa::new("proxy client CA");
    let identity = proxy_clients.client_cert("authmd-proxy");
    identity.write(setup.path(), "client.crt", "client.key");
    let upstream = tls_upstream(
        &upstream_ca.server_cert(),
        ClientAuth::Required(&proxy_clients),
    )
    .await;
    let proxy = proxy_to_tls_upstream(
        &setup,
        upstream,
        "    ca_file: upstream-ca.crt\n    cert_file: client.crt\n    key_file: client.key\n",
    )
    .await;

    let response = client()
        .get(format!("{}/open/mtls", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/open/mtls", "{seen}");
    assert_eq!(seen["client_cert"], identity.fingerprint(), "{seen}");
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_a_502() {
    let setup = Setup::new();
    // The proxy trusts one CA; the upstream's certificate comes from another.
    TestCa::new("trusted CA").write(setup.path(), "upstream-ca.crt");
    let upstream = tls_upstream(&TestCa::new("other CA").server_cert(), ClientAuth::Off).await;
    let proxy = proxy_to_tls_upstream(&setup, upstream, "    ca_file: upstream-ca.crt\n").await;

    let response = tokio::time::timeout(
        Duration::from_secs(15),
        client().get(format!("{}/open/x", proxy.url)).send(),
    )
    .await
    .expect("an untrusted upstream made the proxy hang")
    .unwrap();
    assert_envelope(response, 502, "bad_gateway", "UPSTREAM_UNAVAILABLE").await;
}
