//! Redis servers of the test's own, started from the installed `redis-server`:
//! one speaking only TLS with a certificate of a [`TestCa`], or the three masters
//! of a Redis Cluster joined by `redis-cli --cluster create`. Each listens on
//! `127.0.0.1` at a free port, keeps nothing on disk but its log (and a cluster
//! node its `nodes.conf`) in a temporary directory, and is killed when dropped.
//!
//! Without `redis-server` (or, for a cluster, `redis-cli`) the starters say why
//! and return `None`: the test skips.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::tls::TestCa;

/// Longest a server may take to answer after it was started.
const START_BOUND: Duration = Duration::from_secs(20);

/// Where an installed program is: Debian's `/usr/bin`, else on `PATH`.
fn program(name: &str) -> Option<PathBuf> {
    let debian = Path::new("/usr/bin").join(name);
    if debian.is_file() {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// A port 127.0.0.1 had free a moment ago (bound and let go of); if another
/// process takes it meanwhile, the server does not start and another is tried.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port whose cluster bus port (`port + 10000`) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One running `redis-server`, killed when dropped.
pub struct PrivateRedis {
    /// The port on 127.0.0.1 (TLS only, for a TLS server).
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl PrivateRedis {
    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts `redis-server` with `args` (and a port from `port`) in `dir`, until a
    /// client made by `client` for the port answers `PING`; another port is tried
    /// when the server exits (its port was taken meanwhile).
    async fn start(
        dir: &Path,
        name: &str,
        port: impl Fn() -> u16,
        args: impl Fn(u16) -> Vec<String>,
        client: impl Fn(u16) -> redis::Client,
    ) -> PrivateRedis {
        let server = program("redis-server").unwrap();
        for _ in 0..5 {
            let port = port();
            let log = dir.join(format!("{name}-{port}.log"));
            let child = Command::new(&server)
                .args(args(port))
                .args(["--bind", "127.0.0.1", "-::1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut redis = PrivateRedis { port, child, log };
            let client = client(port);
            let deadline = tokio::time::Instant::now() + START_BOUND;
            loop {
                if let Some(status) = redis.child.try_wait().unwrap() {
                    eprintln!(
                        "redis-server did not start on port {port} ({status}):\n{}",
                        redis.log()
                    );
                    break;
                }
                if ping(&client).await {
                    return redis;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "redis-server on port {port} did not answer within {START_BOUND:?}:\n{}",
                    redis.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when the server behind `client` answers `PING` within a second.
async fn ping(client: &redis::Client) -> bool {
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    })
    .await;
    matches!(answer, Ok(Some(pong)) if pong == "PONG")
}

/// A Redis that speaks only TLS, with a certificate for `localhost` and
/// `127.0.0.1` that its [`TestCa`] issued; clients need no certificate.
pub struct TlsRedis {
    pub server: PrivateRedis,
    /// The CA's certificate, PEM, as a file.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    /// Starts one; `None` (the test skips) without `redis-server`.
    pub async fn start() -> Option<TlsRedis> {
        if program("redis-server").is_none() {
            eprintln!("skipped: no redis-server (install redis-server, built with TLS)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("authmd test redis CA");
        let ca_file = ca.write(dir.path(), "ca.pem");
        let (cert, key) = ca
            .server_cert()
            .write(dir.path(), "server.pem", "server.key");
        let ca_pem = ca.pem().into_bytes();
        let server = PrivateRedis::start(
            dir.path(),
            "tls",
            free_port,
            |port| {
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    cert.display().to_string(),
                    "--tls-key-file".into(),
                    key.display().to_string(),
                    "--tls-ca-cert-file".into(),
                    ca_file.display().to_string(),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]
            },
            |port| {
                redis::Client::build_with_tls(
                    format!("rediss://localhost:{port}"),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca_pem.clone()),
                    },
                )
                .unwrap()
            },
        )
        .await;
        Some(TlsRedis {
            server,
            ca_file,
            _dir: dir,
        })
    }

    /// The URL of the server, by the name its certificate has.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.server.port)
    }
}

/// A Redis Cluster of three masters (no replicas), all slots assigned.
pub struct ClusterRedis {
    pub nodes: Vec<PrivateRedis>,
    _dir: tempfile::TempDir,
}

impl ClusterRedis {
    /// Starts the three servers, joins them with `redis-cli --cluster create`, and
    /// waits until every one says `cluster_state:ok`; `None` (the test skips)
    /// without `redis-server` or `redis-cli`.
    pub async fn start() -> Option<ClusterRedis> {
        let Some(cli) = program("redis-cli").filter(|_| program("redis-server").is_some()) else {
            eprintln!("skipped: no redis-server and redis-cli (install redis-server)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for n in 0..3 {
            let conf = dir.path().join(format!("nodes-{n}.conf"));
            nodes.push(
                PrivateRedis::start(
                    dir.path(),
                    &format!("node{n}"),
                    free_cluster_port,
                    |port| {
                        // A failed start leaves its nodes.conf behind: start afresh.
                        let _ = std::fs::remove_file(&conf);
                        vec![
                            "--port".into(),
                            port.to_string(),
                            "--cluster-enabled".into(),
                            "yes".into(),
                            "--cluster-config-file".into(),
                            conf.display().to_string(),
                            "--cluster-node-timeout".into(),
                            "5000".into(),
                        ]
                    },
                    |port| redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap(),
                )
                .await,
            );
        }
        let cluster = ClusterRedis { nodes, _dir: dir };
        let created = Command::new(cli)
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}\n{}{}",
            created.status,
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        for node in &cluster.nodes {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", node.port)).unwrap();
            super::eventually(START_BOUND, || async {
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            })
            .await;
        }
        Some(cluster)
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// A client of the cluster, for the test's own look at the keys.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .unwrap()
            .get_async_connection()
            .await
            .unwrap()
    }
}
