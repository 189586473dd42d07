//! Test support: a real proxy on port 0 in front of a real upstream on port 0.
#![allow(
    unreachable_pub,
    reason = "test support: public to the test modules of a crate that exports nothing"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test support: a failed setup step should fail the test loudly"
)]

pub mod commented;
pub mod document_host;
pub mod github_api;
pub mod kube;
pub mod node;
pub mod oidc_provider;
pub mod private_postgres;
pub mod private_redis;
pub mod redis;
pub mod relay;
pub mod script;
pub mod store_place;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use authmd_proxy::body::Body;
use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::gateway::Gateway;
use authmd_proxy::server::Running;
use authmd_proxy::store::Store;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The example keys of `config.example.yaml`.
pub const WRITER_KEY: &str = "ak_live_ELG2kKEXEd3Ty98ZgEKCTBzmD28tyKbnV2vJrzG";
pub const READER_KEY: &str = "ak_live_DDcBQJSrJbWiKASfUDw4yG5dJy5usFd9Y1ss7XU";

/// A proxy serving on 127.0.0.1:<random>.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub url: String,
    running: Option<Running>,
    data: tempfile::TempDir,
    yaml: String,
    upstream: Option<SocketAddr>,
}

impl TestProxy {
    /// Starts a proxy from YAML text. `{upstream}` in the text is replaced by the
    /// given upstream origin (or `builtin:echo` when `None`).
    pub async fn start(yaml: &str, upstream: Option<SocketAddr>) -> TestProxy {
        TestProxy::start_in(yaml, upstream, tempfile::tempdir().unwrap()).await
    }

    /// Shuts the proxy down (draining, flushing what it holds in memory) and starts
    /// it again from the same config and data directory, on a new port.
    pub async fn restart(mut self) -> TestProxy {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        TestProxy::start_in(&self.yaml, self.upstream, self.data).await
    }

    async fn start_in(
        original: &str,
        upstream: Option<SocketAddr>,
        data: tempfile::TempDir,
    ) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let origin = upstream.map_or_else(|| "builtin:echo".to_owned(), |a| format!("http://{a}"));
        let yaml = original.replace("{upstream}", &origin);
        // Every proxy gets a SQLite store of its own, in a directory that lives as
        // long as the proxy.
        let overrides = Overrides {
            listen: Some(addr),
            admin_listen: None,
            public_url: Some(url.clone()),
            data_dir: Some(data.path().to_owned()),
            upstream: None,
        };
        let config = Config::from_yaml_str(&yaml, "test.yaml", &overrides, &|_| None)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let store = Store::open(&config.lifecycle.store).await.unwrap();
        let gateway = Gateway::start(config, store).await.unwrap();
        let running = Running::start(gateway, listener, None, None);
        TestProxy {
            addr,
            url,
            running: Some(running),
            data,
            yaml: original.to_owned(),
            upstream,
        }
    }

    /// Starts a proxy from `config.example.yaml`, in front of `upstream` when given.
    pub async fn example(upstream: Option<SocketAddr>) -> TestProxy {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
                .unwrap();
        let text = match upstream {
            Some(_) => text.replace("url: builtin:echo", "url: {upstream}"),
            None => text,
        };
        TestProxy::start(&text, upstream).await
    }

    /// Puts a new config in service, as a reload does (`{upstream}` filled in as
    /// at start); panics when it is refused.
    pub async fn reload(&self, original: &str) {
        let origin = self
            .upstream
            .map_or_else(|| "builtin:echo".to_owned(), |a| format!("http://{a}"));
        let yaml = original.replace("{upstream}", &origin);
        let overrides = Overrides {
            listen: Some(self.addr),
            admin_listen: None,
            public_url: Some(self.url.clone()),
            data_dir: Some(self.data.path().to_owned()),
            upstream: None,
        };
        let config = Config::from_yaml_str(&yaml, "test.yaml", &overrides, &|_| None)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        self.running().gateway.reload(config).await.unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The `/auth.md` this proxy serves.
    pub async fn auth_md(&self) -> String {
        client()
            .get(self.url("/auth.md"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// An upstream on 127.0.0.1:<random> answering with `handler`, over HTTP/1.1 and
/// HTTP/2 (prior knowledge), with upgrades.
/// `config.example.yaml` without its top-level `section` (its key and every
/// indented line under it), for a test that writes its own.
pub fn example_without(section: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    let key = format!("{section}:");
    let mut inside = false;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with(&key) {
            inside = true;
            continue;
        }
        if inside && (line.is_empty() || line.starts_with(' ')) {
            continue;
        }
        inside = false;
        kept.push_str(line);
        kept.push('\n');
    }
    assert!(!kept.contains(&format!("\n{key}")), "{section} is gone");
    kept
}

pub async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An HTTP client that never uses a system proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Parses a JSON response body.
pub async fn json(response: reqwest::Response) -> serde_json::Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts the rejection envelope: status, `error`, `code`, and a `docs` link into
/// the proxy's auth.md.
pub async fn assert_envelope(
    response: reqwest::Response,
    status: u16,
    error: &str,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body = json(response).await;
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["docs"]
            .as_str()
            .is_some_and(|d| d.contains("/auth.md#")),
        "{body}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        4,
        "envelope has exactly four fields: {body}"
    );
    body
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `request` (the exact bytes of an HTTP/1.1 request, which should say
/// `Connection: close`) and reads the whole answer. For paths that an HTTP client
/// library would normalise before sending (`/a/../b`, `%2e%2e`).
pub async fn raw(addr: SocketAddr, request: &str) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    RawResponse {
        status,
        head: head.to_owned(),
        body,
    }
}

/// `GET path` with extra header lines, over a raw socket.
pub async fn raw_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    raw(addr, &request).await
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The real `authmd-proxy` binary, running; killed when dropped, however the test
/// ends.
pub struct Binary {
    child: std::process::Child,
    /// The base URL it printed in its `listening on http://...` line.
    pub url: String,
    /// The admin listener's base URL, when it printed one.
    pub admin: Option<String>,
    /// The lines it wrote to stderr before the listening line.
    pub startup: Vec<String>,
    /// Every line it wrote to stderr after the listening line.
    log: std::sync::mpsc::Receiver<String>,
    /// Its data directory, when the test did not give one.
    _data: Option<tempfile::TempDir>,
}

impl Binary {
    /// Starts the binary with `args` and waits for its listening line.
    pub async fn start(args: &[&str]) -> Binary {
        use std::process::Command;
        // A store of its own, unless the test shares one on purpose.
        let data = (args.first() == Some(&"run") && !args.contains(&"--data-dir"))
            .then(|| tempfile::tempdir().unwrap());
        let mut command = Command::new(env!("CARGO_BIN_EXE_authmd-proxy"));
        command.args(args).env("RUST_LOG", "info");
        if let Some(dir) = &data {
            command.arg("--data-dir").arg(dir.path());
        }
        let mut binary = Binary::launch(command).await;
        binary._data = data;
        binary
    }

    /// Runs `command` (the binary, or something that runs it, such as a container)
    /// and waits for its listening line (at most 60 s, a guard against a hang, not a
    /// readiness sleep).
    pub async fn launch(mut command: std::process::Command) -> Binary {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        type Listening = Result<(String, Option<String>, String), String>;
        let (url_tx, url_rx) = tokio::sync::oneshot::channel::<Listening>();
        let (log_tx, log_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut url_tx = Some(url_tx);
            let mut log = String::new();
            // Keep draining after the line is found, so the child never blocks on a
            // full pipe.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if url_tx.is_none() {
                    let _ = log_tx.send(line);
                } else if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let admin = rest
                        .split("(admin ")
                        .nth(1)
                        .and_then(|a| a.split(')').next())
                        .map(str::to_owned);
                    if let Some(tx) = url_tx.take() {
                        let _ = tx.send(Ok((url.to_owned(), admin, std::mem::take(&mut log))));
                    }
                } else {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
            if let Some(tx) = url_tx.take() {
                let _ = tx.send(Err(log));
            }
        });
        let binary = |(url, admin, startup): (String, Option<String>, String)| Binary {
            child,
            url,
            admin,
            startup: startup.lines().map(str::to_owned).collect(),
            log: log_rx,
            _data: None,
        };
        match tokio::time::timeout(std::time::Duration::from_secs(60), url_rx).await {
            Ok(Ok(Ok(listening))) => binary(listening),
            Ok(Ok(Err(log))) => panic!("the proxy exited before listening:\n{log}"),
            _ => panic!("the proxy printed no listening line"),
        }
    }

    /// `run --config <config> --listen 127.0.0.1:0`, with its own data directory.
    pub async fn serve(config: &std::path::Path) -> Binary {
        Binary::start(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines it has written to stderr since the listening line (or since the
    /// last call).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Every line not yet read, to the end of its output: call it after the process
    /// has exited (it blocks until the output is closed).
    pub fn remaining_log_lines(&self) -> Vec<String> {
        self.log.iter().collect()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (at most 60 s, a guard against a hang) for the process to exit, and
    /// returns its exit status.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy did not exit"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Kills the process with SIGKILL (no chance to flush or shut down) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a write (`POST /api/v1/offers`, which needs `offers:write` in the
/// example config) made with `key` as a bearer credential, through the proxy at
/// `base`.
pub async fn write_status(base: &str, key: &str) -> u16 {
    client()
        .post(format!("{base}/api/v1/offers"))
        .bearer_auth(key)
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The `WWW-Authenticate` header of a response.
pub fn www(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts an OAuth error answer (RFC 6749 5.2, plus `code`, `message`, `docs`) and
/// returns its headers.
pub async fn oauth_error(
    response: reqwest::Response,
    status: u16,
    error: &str,
    code: &str,
) -> reqwest::header::HeaderMap {
    assert_eq!(response.status().as_u16(), status, "status");
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    let body = json(response).await;
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert!(
        body["docs"]
            .as_str()
            .is_some_and(|d| d.contains("/auth.md#")),
        "{body}"
    );
    headers
}

/// Replicas on PostgreSQL share a signing key (the config requires it): one written
/// into `dir`, named in `tokens.signing_keys` of `yaml`.
pub fn shared_signing_key(yaml: &str, dir: &std::path::Path) -> String {
    let (_, pem) = authmd_proxy::tokens::signing::SigningKey::generate(
        authmd_proxy::tokens::signing::SigningAlgorithm::EdDsa,
    )
    .unwrap();
    let path = dir.join("signing.pem");
    std::fs::write(&path, pem).unwrap();
    yaml.replace(
        "\ntokens:\n",
        &format!("\ntokens:\n  signing_keys: [{}]\n", path.display()),
    )
}

/// Polls `check` until it holds, for at most `within` (a bound on propagation or
/// recovery, not a readiness sleep: each poll is a real request, and the first
/// usually passes); returns how long it took.
pub async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    tokio::time::timeout(within, async {
        while !check().await {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the condition did not hold within {within:?}"));
    start.elapsed()
}

/// An Ed25519 key of a test identity provider: the PEM it signs with and the public
/// JWK it publishes, under a `kid` the test chooses.
pub struct IssuerKey {
    pub kid: String,
    pub pem: String,
    pub jwk: serde_json::Value,
}

impl IssuerKey {
    pub fn new(kid: &str) -> IssuerKey {
        use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey, SigningKeys};
        let (key, pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
        let jwks: serde_json::Value =
            serde_json::from_slice(SigningKeys::new(vec![key]).unwrap().jwks()).unwrap();
        let mut jwk = jwks["keys"][0].clone();
        assert_eq!(jwk["kty"], "OKP", "{jwk}");
        jwk["kid"] = serde_json::json!(kid);
        IssuerKey {
            kid: kid.to_owned(),
            pem,
            jwk,
        }
    }

    /// The public key bytes as the JWK carries them (`x`).
    pub fn x(&self) -> &str {
        self.jwk["x"].as_str().unwrap()
    }
}

/// The metered API of the payment tests, as YAML text for `concat!`: `WRITER_KEY` in a
/// tier allowed one `GET /offers` a day, `{upstream}` to be replaced. The routes list
/// is last: append more routes, then a `payments:` block.
macro_rules! metered_api {
    () => {
        r#"
upstream: {url: "{upstream}"}
credentials:
  headers: [{name: X-Agent-Key}]
  key_prefixes: [ak_live]
scopes:
  offers:read: Read offers
tiers:
  - name: anonymous
  - name: metered
    scopes: [offers:read]
    quota: 1/day
keys:
  - id: writer
    hash: blake3:5e3badb54234fb3ed212ad03431ec29d20925e7e39e421d1a4fd63d269624e14
    scopes: [offers:read]
    tier: metered
routes:
  - {path: /offers, methods: [GET], scopes: [offers:read]}
"#
    };
}
pub(crate) use metered_api;
