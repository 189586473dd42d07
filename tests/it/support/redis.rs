//! A Redis for the fleet-wide limit tests: where it is, key prefixes no other
//! test shares, a fleet's config, and the proxies' metrics.

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{TestProxy, WRITER_KEY, client};

/// The Redis the tests use, or `None` (the test prints why it skips).
pub fn redis_url() -> Option<String> {
    match std::env::var("AUTHMD_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("AUTHMD_REQUIRE_REDIS").is_none(),
                "AUTHMD_REQUIRE_REDIS is set but AUTHMD_TEST_REDIS_URL is not"
            );
            eprintln!(
                "skipped: set AUTHMD_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379) to run the fleet-wide limit tests"
            );
            None
        }
    }
}

/// A key prefix no other test or run uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("authmd-test-{test}-{nanos:x}")
}

/// An API whose `free` tier allows 100 requests a minute, behind a fleet-wide
/// limit on `url`; `extra` adds settings under `limits.global`.
pub fn config(url: &str, prefix: &str, extra: &str) -> String {
    format!(
        r#"
upstream: {{url: "{{upstream}}"}}
credentials:
  headers:
    - {{name: X-Agent-Key}}
  key_prefixes: [ak_live]
scopes:
  offers:read: Read offers
tiers:
  - name: free
    scopes: [offers:read]
    rate_limits: [100/min]
keys:
  - id: writer
    hash: blake3:5e3badb54234fb3ed212ad03431ec29d20925e7e39e421d1a4fd63d269624e14
    scopes: [offers:read]
    tier: free
routes:
  - {{path: /offers, methods: [GET], access: credential, scopes: [offers:read]}}
limits:
  global:
    url: {url}
    key_prefix: {prefix}
{extra}
"#
    )
}

/// The proxy's metric samples named `name`, summed over their labels where
/// `labels` (`key="value"` parts) all match.
pub fn metric(proxy: &TestProxy, name: &str, labels: &[&str]) -> f64 {
    let (_, text) = proxy
        .running()
        .gateway
        .scrape(&reqwest::header::HeaderMap::new());
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let matches = series == name
                || (series.starts_with(&format!("{name}{{"))
                    && labels.iter().all(|l| series.contains(l)));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Sends `total` requests with the writer's key, spread round-robin over
/// `proxies` by 8 workers; returns the statuses counted and the time it took.
pub async fn spread(proxies: &[TestProxy], total: usize) -> (HashMap<u16, usize>, Duration) {
    let http = client();
    let urls: Vec<String> = proxies.iter().map(|p| p.url("/offers")).collect();
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..8 {
        let (http, urls) = (http.clone(), urls.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = HashMap::new();
            for i in (worker..total).step_by(8) {
                let response = http
                    .get(&urls[i % urls.len()])
                    .header("X-Agent-Key", WRITER_KEY)
                    .send()
                    .await
                    .unwrap();
                *seen.entry(response.status().as_u16()).or_insert(0) += 1;
            }
            seen
        }));
    }
    let mut seen = HashMap::new();
    for worker in workers {
        for (status, n) in worker.await.unwrap() {
            *seen.entry(status).or_insert(0) += n;
        }
    }
    (seen, started.elapsed())
}

/// A `redis-server` of one test's own, on a Unix socket in a directory of its
/// own, that the test can kill (SIGKILL) and start again on the same socket.
/// Killed when dropped, however the test ends.
pub struct PrivateRedis {
    binary: std::path::PathBuf,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Starts one, or `None` (having said why the test skips) when there is no
    /// `redis-server`.
    pub async fn start() -> Option<PrivateRedis> {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|path| path.is_file());
        let Some(binary) = binary else {
            eprintln!("skipped: no redis-server in /usr/bin or /usr/local/bin to kill and restart");
            return None;
        };
        let mut redis = PrivateRedis {
            binary,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart().await;
        Some(redis)
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// Its URL (`redis+unix://...`).
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Kills it at once (SIGKILL: nothing is saved, clients see their connections
    /// end) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts it (again) on the same socket, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is running");
        let child = std::process::Command::new(&self.binary)
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let socket = self.socket();
        super::eventually(Duration::from_secs(10), || ping(&socket)).await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// True when the Redis on `socket` answers `PING`.
async fn ping(socket: &std::path::Path) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).await.is_ok() && &answer == b"+PONG\r\n"
}
