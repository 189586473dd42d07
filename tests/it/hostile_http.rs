//! Hostile HTTP against the running proxy, over real sockets: request smuggling
//! shapes over HTTP/1.1, h2c upgrade attempts, malformed HTTP/2 (the plain listener
//! serves HTTP/2 with prior knowledge), HTTP/2 rapid reset, and slow clients
//! (slowloris, slow bodies).
//!
//! In every case the proxy answers with a precise status (hyper's minimal 400 where
//! its parser refuses the bytes, the JSON envelope where the proxy itself decides),
//! or closes the connection / resets the stream where HTTP says so; the upstream,
//! which records everything it receives, never gets an ambiguous request nor the
//! request hidden inside one; and the proxy serves a normal request on a new
//! connection afterwards.
//!
//! A test marked `#[ignore = "BUG: ..."]` expects the correct behaviour, which the
//! proxy does not have yet: `cargo test --test hostile_http -- --ignored` shows
//! each one failing with what the proxy does instead.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step fails the test loudly"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authmd_proxy::body::Body;
use http::header::{CONTENT_TYPE, UPGRADE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::support;
use crate::support::TestProxy;

/// `server.header_read_timeout` in the proxy under test.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// `upstream.response_timeout` in the proxy under test.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a cut-off may take beyond the timeout that causes it: generous, since
/// this is real socket time on a busy machine. Nothing waits for it when the proxy
/// behaves.
const MARGIN: Duration = Duration::from_secs(3);

/// How long any one exchange may take before the test calls it a hang. A failure
/// guard only.
const GUARD: Duration = Duration::from_secs(5);

/// One public prefix in front of the recording upstream; everything else is denied
/// (404), so a request the proxy judged never reaches the upstream at
/// `/admin/...`, and one that does was smuggled past it.
const CONFIG: &str = r#"
upstream: {url: '{upstream}', response_timeout: 2s}
server: {header_read_timeout: 1s}
store: {kind: none}
routes:
  - {path: "/public/{*rest}", access: public}
"#;

/// The request hidden inside another, which the proxy would refuse (no route) if it
/// ever judged it.
const SMUGGLED: &str = "GET /admin/smuggled HTTP/1.1\r\nHost: proxy.test\r\n\r\n";

/// The path of the probe sent after every hostile request on the same connection.
const PROBE: &str = "/public/probe";

/// A well-formed request that closes the connection: sent after a hostile one on
/// the same connection, so that reading to the end never depends on a timer.
fn probe() -> String {
    format!("GET {PROBE} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n")
}

// ---------------------------------------------------------------------------
// Panics in the proxy
// ---------------------------------------------------------------------------

/// Panics raised anywhere but in the tests' own code. The proxy runs in this
/// process, and a panic in one of its tasks (or in hyper's, or h2's) would
/// otherwise only end that task, unseen.
static FOREIGN_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts foreign panics from now on (once per process; the default hook still
/// prints them). The other modules' tests run in this process too: a panic on one
/// of their threads (the test harness names each after its test) is theirs to
/// report, not a panic of the proxies started here.
fn watch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let outside_tests = info
                .location()
                .is_none_or(|at| !at.file().starts_with("tests/"));
            if outside_tests && !on_another_modules_test() {
                FOREIGN_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Whether this thread runs a test of another module: the harness names a test's
/// thread after its path (`module::test`). Runtime workers, blocking threads and
/// unnamed threads cannot be told apart, so their panics count.
fn on_another_modules_test() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name.contains("::") && !name.starts_with("hostile_http::"))
}

fn assert_no_panic(what: &str) {
    assert_eq!(
        FOREIGN_PANICS.load(Ordering::SeqCst),
        0,
        "{what}: the proxy (or a library under it) panicked; see the output above"
    );
}

// ---------------------------------------------------------------------------
// The recording upstream
// ---------------------------------------------------------------------------

/// A request the upstream read to its end (or to a body error).
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    /// The body, or why it could not be read to its end.
    body: Result<Vec<u8>, String>,
}

/// Everything the upstream received.
#[derive(Debug)]
struct Record {
    /// The path of every request whose head arrived, in order.
    arrived: Mutex<Vec<String>>,
    /// Every request read to its end.
    seen: Mutex<Vec<Seen>>,
    /// Bytes received on connections it agreed to switch protocols on.
    tunnelled: Mutex<Vec<u8>>,
    /// How many `/public/hang...` requests it holds right now.
    holding: watch::Sender<usize>,
    /// The most it held at once.
    most_held: AtomicUsize,
}

impl Default for Record {
    fn default() -> Record {
        Record {
            arrived: Mutex::default(),
            seen: Mutex::default(),
            tunnelled: Mutex::default(),
            holding: watch::channel(0).0,
            most_held: AtomicUsize::new(0),
        }
    }
}

/// One `/public/hang...` request held by the upstream, until the proxy gives it up
/// (closes the upstream connection, which drops the handler).
struct Held(Arc<Record>);

impl Held {
    fn new(record: Arc<Record>) -> Held {
        record.holding.send_modify(|n| {
            *n += 1;
            record.most_held.fetch_max(*n, Ordering::SeqCst);
        });
        Held(record)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.holding.send_modify(|n| *n -= 1);
    }
}

/// The upstream: records, then answers `200 {"path": ...}` once the body is read.
/// `/public/hang...` never answers; `/public/early...` answers before reading the
/// body; a request with `Upgrade` is answered 101 (an upstream that would speak
/// h2c, which is what an h2c smuggler hopes for) and the bytes that then arrive are
/// recorded.
async fn upstream_handler(record: Arc<Record>, mut request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    record.arrived.lock().await.push(path.clone());
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    if path.starts_with("/public/hang") {
        let _held = Held::new(record.clone());
        std::future::pending::<()>().await;
    }
    if let Some(protocol) = request.headers().get(UPGRADE).cloned() {
        let upgrade = hyper::upgrade::on(&mut request);
        let tunnel = record.clone();
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tunnel.tunnelled.lock().await.extend_from_slice(&buf[..n]);
                }
            }
        });
        record.seen.lock().await.push(Seen {
            path,
            headers,
            body: Ok(Vec::new()),
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response.headers_mut().insert(UPGRADE, protocol);
        response.headers_mut().insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        return response;
    }
    let answer = serde_json::json!({ "path": path }).to_string();
    if path.starts_with("/public/early") {
        record.seen.lock().await.push(Seen {
            path,
            headers,
            body: Err("not read: answered before the body".to_owned()),
        });
    } else {
        let body = match request.into_body().collect().await {
            Ok(collected) => Ok(collected.to_bytes().to_vec()),
            Err(error) => Err(error.to_string()),
        };
        record.seen.lock().await.push(Seen {
            path,
            headers,
            body,
        });
    }
    let mut response = Response::new(Body::full(answer));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A proxy in front of a recording upstream.
struct Harness {
    proxy: TestProxy,
    record: Arc<Record>,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(CONFIG).await
    }

    async fn start_with(config: &str) -> Harness {
        watch_panics();
        let record = Arc::new(Record::default());
        let handler_record = record.clone();
        let upstream =
            support::upstream(move |request| upstream_handler(handler_record.clone(), request))
                .await;
        let proxy = TestProxy::start(config, Some(upstream)).await;
        Harness { proxy, record }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    async fn arrived(&self) -> Vec<String> {
        self.record.arrived.lock().await.clone()
    }

    async fn seen(&self, path: &str) -> Vec<Seen> {
        self.record
            .seen
            .lock()
            .await
            .iter()
            .filter(|seen| seen.path == path)
            .cloned()
            .collect()
    }

    /// Asserts that nothing the proxy did not judge reached the upstream: no
    /// request at a path it would refuse, and nothing through a tunnel.
    async fn assert_nothing_smuggled(&self, what: &str) {
        let arrived = self.arrived().await;
        assert!(
            arrived.iter().all(|path| path.starts_with("/public/")),
            "{what}: the upstream received a request the proxy never judged: {arrived:?}"
        );
        let tunnelled = self.record.tunnelled.lock().await.clone();
        assert!(
            tunnelled.is_empty(),
            "{what}: bytes reached the upstream through a switched protocol: {:?}",
            String::from_utf8_lossy(&tunnelled)
        );
    }

    /// Asserts that a normal request on a new connection is served end to end,
    /// and that nothing panicked.
    async fn assert_serves_again(&self, what: &str) {
        assert_no_panic(what);
        let path = "/public/again";
        let before = self.seen(path).await.len();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n");
        let exchange = exchange(self.addr(), request.as_bytes()).await;
        assert_eq!(
            exchange.answers.len(),
            1,
            "{what}: a normal request afterwards: {exchange}"
        );
        assert_eq!(
            exchange.answers[0].status, 200,
            "{what}: a normal request afterwards: {exchange}"
        );
        assert_eq!(
            self.seen(path).await.len(),
            before + 1,
            "{what}: the normal request afterwards reached the upstream"
        );
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 over a raw socket
// ---------------------------------------------------------------------------

/// One answer read off a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// What came back on one connection.
#[derive(Debug)]
struct Exchange {
    answers: Vec<Answer>,
    /// The proxy closed the connection (EOF or reset) within [`GUARD`].
    closed: bool,
    raw: Vec<u8>,
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "closed: {}, received:\n{}",
            self.closed,
            String::from_utf8_lossy(&self.raw)
        )
    }
}

/// Sends `bytes` on a new connection and reads until the proxy closes it (at most
/// [`GUARD`]).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may close before it read everything: that is an answer too.
    let _ = stream.write_all(bytes).await;
    let mut raw = Vec::new();
    let closed = read_to_close(&mut stream, &mut raw, GUARD).await;
    Exchange {
        answers: parse_answers(&raw),
        closed,
        raw,
    }
}

/// Reads until EOF or a reset, for at most `limit`; true when the peer closed.
async fn read_to_close(stream: &mut TcpStream, into: &mut Vec<u8>, limit: Duration) -> bool {
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => into.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.is_ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Splits what a connection received into answers.
fn parse_answers(mut bytes: &[u8]) -> Vec<Answer> {
    let mut answers = Vec::new();
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let Some(status) = head
            .lines()
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok())
        else {
            break;
        };
        let mut answer = Answer {
            status,
            head,
            body: Vec::new(),
        };
        let rest = &bytes[end + 4..];
        if status == 101 {
            answers.push(answer);
            break;
        }
        let length = answer
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok());
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
        bytes = if (100..200).contains(&status) || status == 204 || status == 304 {
            rest
        } else if let Some(length) = length {
            let take = length.min(rest.len());
            answer.body = rest[..take].to_vec();
            &rest[take..]
        } else if chunked {
            let (body, after) = dechunk(rest);
            answer.body = body;
            after
        } else {
            answer.body = rest.to_vec();
            &[]
        };
        answers.push(answer);
    }
    answers
}

/// Decodes a chunked body; returns it and what follows it.
fn dechunk(mut bytes: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(bytes, b"\r\n") else {
            return (body, &[]);
        };
        let line = String::from_utf8_lossy(&bytes[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (body, &[]);
        };
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            let after = match find(bytes, b"\r\n") {
                Some(0) => &bytes[2..],
                _ => find(bytes, b"\r\n\r\n").map_or(&[][..], |e| &bytes[e + 4..]),
            };
            return (body, after);
        }
        let take = size.min(bytes.len());
        body.extend_from_slice(&bytes[..take]);
        bytes = &bytes[take..];
        bytes = bytes.strip_prefix(b"\r\n").unwrap_or(bytes);
    }
}

/// Asserts the proxy's rejection envelope: one of `statuses`, JSON with exactly
/// `error`, `code`, `message` and `docs` (a link into the proxy's auth.md).
fn assert_envelope_body(status: u16, body: &[u8], statuses: &[u16], what: &str) {
    let text = String::from_utf8_lossy(body);
    assert!(
        statuses.contains(&status),
        "{what}: status {status}, expected one of {statuses:?}: {text}"
    );
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: the answer is not the JSON envelope ({e}): {text}"));
    let object = json
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a JSON object: {text}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["code", "docs", "error", "message"],
        "{what}: the envelope has exactly four fields: {text}"
    );
    for field in ["error", "code", "message"] {
        assert!(
            json[field].as_str().is_some_and(|v| !v.is_empty()),
            "{what}: `{field}` is a non-empty string: {text}"
        );
    }
    assert!(
        json["docs"]
            .as_str()
            .is_some_and(|d| d.contains("/auth.md#")),
        "{what}: `docs` links into auth.md: {text}"
    );
}

fn assert_envelope(answer: &Answer, statuses: &[u16], what: &str) {
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{what}: {}",
        answer.head
    );
    assert_envelope_body(answer.status, &answer.body, statuses, what);
}

/// A 400: hyper's own minimal answer (no body) where its parser refused the bytes,
/// or the proxy's envelope.
fn assert_bad_request(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        400,
        "{what}: {}\n{}",
        answer.head,
        String::from_utf8_lossy(&answer.body)
    );
    if !answer.body.is_empty() {
        assert_envelope(answer, &[400], what);
    }
}

// ---------------------------------------------------------------------------
// 1. Request smuggling shapes over HTTP/1.1
// ---------------------------------------------------------------------------

/// What a hostile HTTP/1.1 request must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// hyper's parser refuses it: one 400, the connection closed, nothing forwarded.
    Refused,
    /// The proxy refuses it with its envelope (one of these statuses), nothing
    /// forwarded.
    Envelope(&'static [u16]),
    /// RFC 9112 lets a recipient resolve it (bare LF as a line ending, a repeated
    /// identical Content-Length): refused with 400, or served as exactly one request
    /// with this body.
    RefusedOrServed(&'static [u8]),
    /// Content-Length with Transfer-Encoding (RFC 9112 section 6.1): refused with
    /// 400, or served by Transfer-Encoding alone as exactly one request with this
    /// body, after which the connection MUST be closed.
    RefusedOrServedThenClosed(&'static [u8]),
    /// The head is fine but the chunked body is not: by the time the proxy finds
    /// out it may already be streaming to the upstream. The client gets 400 (the
    /// envelope: the proxy decides), and the upstream never gets a complete request.
    BadBody,
}

/// Sends `request` (in which `PATH` stands for `/public/<name>`) followed by a
/// probe on the same connection, and checks what came back against `expect`, that
/// nothing was smuggled, and that a new connection is served afterwards.
async fn hostile(name: &str, request: &str, expect: Expect) {
    let h = Harness::start().await;
    let path = format!("/public/{name}");
    let mut bytes = request.replace("PATH", &path).into_bytes();
    bytes.extend_from_slice(probe().as_bytes());
    let exchange = exchange(h.addr(), &bytes).await;
    let what = format!("{name} ({expect:?})");
    assert!(
        exchange.closed,
        "{what}: the connection stays open although the last request said close: {exchange}"
    );
    let Some(first) = exchange.answers.first() else {
        panic!("{what}: no answer at all: {exchange}");
    };
    for answer in &exchange.answers {
        assert!(
            answer.status < 500,
            "{what}: a server error for the client's bytes: {exchange}"
        );
    }
    let seen = h.seen(&path).await;
    let arrived = h.arrived().await;
    let forwarded = arrived.iter().filter(|p| **p == path).count();
    eprintln!(
        "{name}: answered {:?}, closed {}, forwarded {forwarded}",
        exchange
            .answers
            .iter()
            .map(|a| a.status)
            .collect::<Vec<_>>(),
        exchange.closed
    );
    // Anything after the first answer can only be the probe's, on a connection
    // that was allowed to stay open.
    let probe_answered = |exchange: &Exchange| {
        assert!(
            exchange.answers.len() <= 2,
            "{what}: more answers than requests sent: {exchange}"
        );
        if let Some(second) = exchange.answers.get(1) {
            assert_eq!(
                second.status, 200,
                "{what}: the second answer is the probe's: {exchange}"
            );
            assert!(
                String::from_utf8_lossy(&second.body).contains(PROBE),
                "{what}: the second answer is the probe's: {exchange}"
            );
        }
    };
    match expect {
        Expect::Refused => {
            assert_eq!(
                exchange.answers.len(),
                1,
                "{what}: one answer, then the connection is closed: {exchange}"
            );
            assert_bad_request(first, &what);
            assert_eq!(forwarded, 0, "{what}: forwarded: {seen:?}");
        }
        Expect::Envelope(statuses) => {
            assert_envelope(first, statuses, &what);
            assert_eq!(forwarded, 0, "{what}: forwarded: {seen:?}");
            probe_answered(&exchange);
        }
        Expect::RefusedOrServed(body) | Expect::RefusedOrServedThenClosed(body) => {
            if first.status == 400 {
                assert_bad_request(first, &what);
                assert_eq!(forwarded, 0, "{what}: refused, yet forwarded: {seen:?}");
            } else {
                assert_eq!(first.status, 200, "{what}: {exchange}");
                assert_eq!(
                    forwarded, 1,
                    "{what}: served as exactly one request: {arrived:?}"
                );
                assert_eq!(seen.len(), 1, "{what}: {seen:?}");
                assert_eq!(
                    seen[0].body.as_deref(),
                    Ok(body),
                    "{what}: the upstream got the body as the proxy framed it"
                );
                let framing: Vec<_> = seen[0]
                    .headers
                    .iter()
                    .filter(|(name, _)| name == "content-length" || name == "transfer-encoding")
                    .collect();
                assert!(
                    framing.len() <= 1,
                    "{what}: the upstream got one framing: {framing:?}"
                );
            }
            if matches!(expect, Expect::RefusedOrServedThenClosed(_)) || first.status == 400 {
                assert_eq!(
                    exchange.answers.len(),
                    1,
                    "{what}: the connection is closed after the first answer: {exchange}"
                );
            } else {
                probe_answered(&exchange);
            }
        }
        Expect::BadBody => {
            assert_envelope(first, &[400], &what);
            assert_eq!(
                exchange.answers.len(),
                1,
                "{what}: the connection is closed after the answer: {exchange}"
            );
            assert!(
                seen.iter().all(|seen| seen.body.is_err()),
                "{what}: the upstream got a complete request from a broken body: {seen:?}"
            );
        }
    }
    h.assert_nothing_smuggled(&what).await;
    h.assert_serves_again(&what).await;
}

/// CL.TE: a front end going by Content-Length would pass the hidden request on as
/// body; one going by Transfer-Encoding sees it as the next request.
fn cl_te() -> String {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    format!(
        "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    )
}

/// TE.CL: the hidden request is a chunk; a back end going by Content-Length would
/// see it as the next request.
fn te_cl() -> String {
    format!(
        "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    )
}

#[tokio::test]
async fn content_length_then_chunked_is_framed_by_chunked_and_closed() {
    hostile("cl-te", &cl_te(), Expect::RefusedOrServedThenClosed(b"")).await;
}

#[tokio::test]
async fn chunked_then_content_length_is_framed_by_chunked_and_closed() {
    hostile(
        "te-cl",
        &te_cl(),
        Expect::RefusedOrServedThenClosed(SMUGGLED.as_bytes()),
    )
    .await;
}

#[tokio::test]
async fn two_different_content_lengths_are_refused() {
    let request = format!(
        "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{SMUGGLED}",
        5 + SMUGGLED.len()
    );
    hostile("two-cl", &request, Expect::Refused).await;
}

#[tokio::test]
async fn a_repeated_identical_content_length_is_one_length() {
    let request = "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
    hostile("same-cl", request, Expect::RefusedOrServed(b"hello")).await;
}

#[tokio::test]
async fn malformed_content_lengths_are_refused() {
    for (name, value) in [
        ("cl-list", "1, 2"),
        ("cl-word", "five"),
        ("cl-negative", "-5"),
        ("cl-plus", "+5"),
        ("cl-hex", "0x5"),
        ("cl-overflow", "99999999999999999999999"),
        ("cl-empty", ""),
    ] {
        let request = format!(
            "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: {value}\r\n\r\nhello{SMUGGLED}"
        );
        hostile(name, &request, Expect::Refused).await;
    }
}

#[tokio::test]
async fn transfer_encodings_other_than_chunked_alone_are_refused_by_the_parser() {
    for (name, head) in [
        ("te-xchunked", "Transfer-Encoding: xchunked\r\n"),
        ("te-identity", "Transfer-Encoding: identity\r\n"),
        ("te-gzip", "Transfer-Encoding: gzip\r\n"),
        (
            "te-chunked-then-identity",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ),
    ] {
        let request =
            format!("POST PATH HTTP/1.1\r\nHost: proxy.test\r\n{head}\r\n5\r\nhello\r\n0\r\n\r\n");
        hostile(name, &request, Expect::Refused).await;
    }
}

#[tokio::test]
async fn transfer_encoding_in_http_1_0_is_refused() {
    let request = format!(
        "POST PATH HTTP/1.0\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    hostile("te-http10", &request, Expect::Refused).await;
}

#[tokio::test]
async fn a_transfer_coding_the_proxy_cannot_decode_is_refused() {
    // hyper takes it (chunked is last) and hands on a body still gzip-coded; the
    // proxy strips the hop-by-hop Transfer-Encoding, so the upstream would take
    // the coded bytes for the content. RFC 9112 section 6.1: 501 for a transfer
    // coding the server does not understand (or 400).
    let request = "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    hostile("te-gzip-chunked", request, Expect::Envelope(&[400, 501])).await;
}

#[tokio::test]
async fn chunked_applied_twice_is_refused() {
    // RFC 9112 section 6.1: a sender MUST NOT apply chunked more than once; hyper
    // decodes it once and the proxy forwards the result.
    for (name, head) in [
        (
            "te-chunked-twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "te-chunked-chunked",
            "Transfer-Encoding: chunked, chunked\r\n",
        ),
    ] {
        let request =
            format!("POST PATH HTTP/1.1\r\nHost: proxy.test\r\n{head}\r\n5\r\nhello\r\n0\r\n\r\n");
        hostile(name, &request, Expect::Envelope(&[400])).await;
    }
}

#[tokio::test]
async fn obs_fold_is_refused() {
    for (name, request) in [
        (
            "fold-space",
            "GET PATH HTTP/1.1\r\nHost: proxy.test\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "fold-tab",
            "GET PATH HTTP/1.1\r\nHost: proxy.test\r\nX-Folded: a\r\n\tb\r\n\r\n",
        ),
        (
            "fold-transfer-encoding",
            "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        ),
    ] {
        hostile(name, request, Expect::Refused).await;
    }
}

#[tokio::test]
async fn bare_carriage_returns_are_refused() {
    for (name, request) in [
        (
            "cr-request-line",
            "GET PATH HTTP/1.1\rHost: proxy.test\r\n\r\n",
        ),
        (
            "cr-line-ending",
            "GET PATH HTTP/1.1\r\nHost: proxy.test\rX-A: 1\r\n\r\n",
        ),
        (
            "cr-in-value",
            "GET PATH HTTP/1.1\r\nHost: proxy.test\r\nX-A: a\rb\r\n\r\n",
        ),
        (
            "cr-hides-content-length",
            "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nX-A: a\rContent-Length: 5\r\n\r\nhello",
        ),
    ] {
        hostile(name, request, Expect::Refused).await;
    }
}

#[tokio::test]
async fn bare_line_feeds_are_one_reading_or_refused() {
    // RFC 9112 section 2.2 lets a recipient take a bare LF as a line ending; the
    // proxy re-frames what it forwards, so the upstream can only see what the
    // proxy saw.
    for (name, request, body) in [
        (
            "lf-everywhere",
            "GET PATH HTTP/1.1\nHost: proxy.test\n\n",
            &b""[..],
        ),
        (
            "lf-request-line",
            "GET PATH HTTP/1.1\nHost: proxy.test\r\n\r\n",
            b"",
        ),
        (
            "lf-hides-content-length",
            "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nX-A: a\nContent-Length: 5\r\n\r\nhello",
            b"hello",
        ),
    ] {
        hostile(name, request, Expect::RefusedOrServed(body)).await;
    }
}

#[tokio::test]
async fn whitespace_before_the_colon_is_refused() {
    for (name, request) in [
        (
            "space-before-colon",
            "GET PATH HTTP/1.1\r\nHost : proxy.test\r\n\r\n".to_owned(),
        ),
        (
            "tab-before-colon",
            "GET PATH HTTP/1.1\r\nHost: proxy.test\r\nX-A\t: 1\r\n\r\n".to_owned(),
        ),
        (
            "space-before-colon-transfer-encoding",
            format!(
                "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
    ] {
        hostile(name, &request, Expect::Refused).await;
    }
}

#[tokio::test]
async fn nul_bytes_in_a_header_are_refused() {
    for (name, request) in [
        (
            "nul-in-value",
            "GET PATH HTTP/1.1\r\nHost: proxy.test\r\nX-A: a\0b\r\n\r\n",
        ),
        (
            "nul-in-name",
            "GET PATH HTTP/1.1\r\nHost: proxy.test\r\nX-\0A: 1\r\n\r\n",
        ),
    ] {
        hostile(name, request, Expect::Refused).await;
    }
}

#[tokio::test]
async fn a_broken_chunked_body_is_a_bad_request_and_never_a_complete_upstream_request() {
    for (name, body) in [
        ("chunk-size-not-hex", "zz\r\nhello\r\n0\r\n\r\n"),
        ("chunk-size-bare-lf", "5\nhello\r\n0\r\n\r\n"),
        ("chunk-longer-than-its-size", "3\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk-size-overflow",
            "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        let request = format!(
            "POST PATH HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        hostile(name, &request, Expect::BadBody).await;
    }
}

// ---------------------------------------------------------------------------
// 2. h2c upgrade over HTTP/1.1
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_h2c_upgrade_is_neither_switched_nor_forwarded() {
    let h = Harness::start().await;
    let path = "/public/h2c";
    // What an h2c client sends; the upstream behind this proxy would agree to
    // switch. The request after it is what a smuggler would then send through the
    // tunnel, out of the proxy's sight; on a connection that did not switch it is
    // just the next request, which the proxy refuses (no route).
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n"
    );
    let exchange = exchange(h.addr(), request.as_bytes()).await;
    let what = "h2c upgrade";
    assert!(
        exchange.answers.iter().all(|a| a.status != 101),
        "{what}: the proxy switched protocols: {exchange}"
    );
    assert!(exchange.closed, "{what}: {exchange}");
    let seen = h.seen(path).await;
    let first = exchange
        .answers
        .first()
        .unwrap_or_else(|| panic!("{what}: no answer: {exchange}"));
    if first.status == 400 {
        // Refused outright, with the envelope; nothing forwarded.
        assert_envelope(first, &[400], what);
        assert!(seen.is_empty(), "{what}: refused, yet forwarded: {seen:?}");
    } else {
        // Served as a plain request: the upstream is never asked to switch.
        assert_eq!(first.status, 200, "{what}: {exchange}");
        assert_eq!(seen.len(), 1, "{what}: {seen:?}");
        for name in ["upgrade", "http2-settings"] {
            assert!(
                seen[0].headers.iter().all(|(n, _)| n != name),
                "{what}: the upstream was asked to switch ({name}): {:?}",
                seen[0].headers
            );
        }
    }
    // The next request, if the connection stayed open for it, was judged.
    assert!(exchange.answers.len() <= 2, "{what}: {exchange}");
    if let Some(next) = exchange.answers.get(1) {
        assert_envelope(next, &[404], what);
    }
    h.assert_nothing_smuggled(what).await;
    h.assert_serves_again(what).await;
}

// ---------------------------------------------------------------------------
// HTTP/2 frames by hand (h2c prior knowledge on the plain listener)
// ---------------------------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const PROTOCOL_ERROR: u32 = 0x1;
const CANCEL: u32 = 0x8;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with a `prefix`-bit prefix, the high bits of the first byte
/// being `flags`.
fn hpack_int(out: &mut Vec<u8>, flags: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | u8::try_from(value).unwrap());
        return;
    }
    out.push(flags | u8::try_from(max).unwrap());
    let mut rest = value - max;
    while rest >= 128 {
        out.push(u8::try_from(rest % 128).unwrap() | 0x80);
        rest /= 128;
    }
    out.push(u8::try_from(rest).unwrap());
}

/// A header block of literal fields without indexing, names and values sent
/// exactly as given (no Huffman, no case folding): what a hostile client can send.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0x00, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0x00, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The Huffman codes of the digits (RFC 7541 appendix B): what `:status` values
/// outside the static table are sent as.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    const CODES: [(u32, usize, char); 10] = [
        (0b00000, 5, '0'),
        (0b00001, 5, '1'),
        (0b00010, 5, '2'),
        (0b011001, 6, '3'),
        (0b011010, 6, '4'),
        (0b011011, 6, '5'),
        (0b011100, 6, '6'),
        (0b011101, 6, '7'),
        (0b011110, 6, '8'),
        (0b011111, 6, '9'),
    ];
    let bits: Vec<bool> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| ((b >> i) & 1) == 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    'next: while at < bits.len() {
        if bits.len() - at < 8 && bits[at..].iter().all(|bit| *bit) {
            break; // EOS padding
        }
        for (code, length, digit) in CODES {
            if at + length <= bits.len() {
                let value = bits[at..at + length]
                    .iter()
                    .fold(0u32, |acc, bit| (acc << 1) | u32::from(*bit));
                if value == code {
                    out.push(digit);
                    at += length;
                    continue 'next;
                }
            }
        }
        return None;
    }
    Some(out)
}

/// The `:status` of a response header block: hyper's h2 sends it first, either
/// from the static table or as a literal with the static name `:status` (index 8).
fn status_of(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    if first & 0x80 != 0 {
        return match first & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    let index = if first & 0xc0 == 0x40 {
        first & 0x3f
    } else if first & 0xe0 == 0 {
        first & 0x0f
    } else {
        return None;
    };
    if index != 8 {
        return None;
    }
    let length_byte = *block.get(1)?;
    let length = usize::from(length_byte & 0x7f);
    let raw = block.get(2..2 + length)?;
    let text = if length_byte & 0x80 != 0 {
        huffman_digits(raw)?
    } else {
        String::from_utf8(raw.to_vec()).ok()?
    };
    text.parse().ok()
}

#[test]
fn the_status_reader_reads_what_hpack_encoders_send() {
    // The harness's own check: static, plain literal and Huffman-coded statuses.
    assert_eq!(status_of(&[0x8c]), Some(400));
    assert_eq!(status_of(&[0x88, 0x5f]), Some(200));
    assert_eq!(status_of(&[0x48, 0x03, b'4', b'0', b'3']), Some(403));
    // "503": 011011 00000 011001, then EOS padding.
    assert_eq!(status_of(&[0x08, 0x83, 0x6c, 0x0c, 0xff]), Some(503));
    assert_eq!(huffman_digits(&[0x6c, 0x0c, 0xff]).as_deref(), Some("503"));
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The payload without padding (and without the priority fields of HEADERS).
    fn content(&self) -> &[u8] {
        let mut payload = &self.payload[..];
        let mut pad = 0;
        if self.flags & PADDED != 0 && (self.kind == DATA || self.kind == HEADERS) {
            pad = usize::from(*payload.first().unwrap_or(&0));
            payload = payload.get(1..).unwrap_or_default();
        }
        if self.kind == HEADERS && self.flags & PRIORITY != 0 {
            payload = payload.get(5..).unwrap_or_default();
        }
        &payload[..payload.len().saturating_sub(pad)]
    }

    fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        self.payload
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// How a stream ended.
#[derive(Debug)]
enum H2Outcome {
    Answered {
        status: Option<u16>,
        body: Vec<u8>,
    },
    Reset(u32),
    GoAway(u32),
    Closed,
    /// Nothing within [`GUARD`].
    Hung,
}

/// A client connection speaking HTTP/2 frames as written by hand.
struct H2 {
    read: OwnedReadHalf,
    write: Arc<Mutex<OwnedWriteHalf>>,
    pending: Vec<u8>,
    /// The server's SETTINGS.
    settings: Vec<(u16, u32)>,
    /// Acknowledge SETTINGS and PING as they arrive (off where any frame sent
    /// would break what the test holds open).
    acks: bool,
}

impl H2 {
    /// Connects and sends the preface and an empty SETTINGS.
    async fn connect(addr: SocketAddr) -> H2 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let h2 = H2 {
            read,
            write: Arc::new(Mutex::new(write)),
            pending: Vec::new(),
            settings: Vec::new(),
            acks: true,
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        assert!(h2.send(&hello).await, "cannot send the HTTP/2 preface");
        h2
    }

    /// Reads up to the server's SETTINGS (acknowledged) and returns the number of
    /// concurrent streams it allows.
    async fn handshake(&mut self) -> u32 {
        let settings = tokio::time::timeout(GUARD, async {
            while let Some(frame) = self.frame().await {
                if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(settings, Ok(true), "the proxy's HTTP/2 SETTINGS");
        self.settings
            .iter()
            .find(|(id, _)| *id == SETTINGS_MAX_CONCURRENT_STREAMS)
            .map(|(_, value)| *value)
            .expect("the proxy limits concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS)")
    }

    /// Writes bytes; false when the proxy has closed the connection.
    async fn send(&self, bytes: &[u8]) -> bool {
        self.write.lock().await.write_all(bytes).await.is_ok()
    }

    /// The next frame, or `None` once the connection is closed. SETTINGS and PING
    /// are acknowledged as they arrive.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.pending.len() >= 9 {
                let length = usize::from(self.pending[0]) << 16
                    | usize::from(self.pending[1]) << 8
                    | usize::from(self.pending[2]);
                if self.pending.len() >= 9 + length {
                    let head: Vec<u8> = self.pending.drain(..9).collect();
                    let payload: Vec<u8> = self.pending.drain(..length).collect();
                    let frame = Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload,
                    };
                    if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                        for setting in frame.payload.chunks_exact(6) {
                            self.settings.push((
                                u16::from_be_bytes([setting[0], setting[1]]),
                                u32::from_be_bytes([
                                    setting[2], setting[3], setting[4], setting[5],
                                ]),
                            ));
                        }
                        if self.acks {
                            let _ = self.send(&self::frame(SETTINGS, ACK, 0, &[])).await;
                        }
                    }
                    if frame.kind == PING && frame.flags & ACK == 0 && self.acks {
                        let _ = self.send(&self::frame(PING, ACK, 0, &frame.payload)).await;
                    }
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 16384];
            match self.read.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends a request: HEADERS (END_STREAM unless a body follows) and the body in
    /// one DATA frame.
    async fn request(&self, stream: u32, fields: &[(&str, &str)], body: Option<&[u8]>) {
        let block = hpack(fields);
        let flags = END_HEADERS | if body.is_none() { END_STREAM } else { 0 };
        let mut bytes = frame(HEADERS, flags, stream, &block);
        if let Some(body) = body {
            bytes.extend(frame(DATA, END_STREAM, stream, body));
        }
        let _ = self.send(&bytes).await;
    }

    /// Reads until `stream` is answered, reset, or the connection goes away.
    async fn outcome(&mut self, stream: u32) -> H2Outcome {
        let read = async {
            let mut status = None;
            let mut body = Vec::new();
            while let Some(frame) = self.frame().await {
                match frame.kind {
                    HEADERS | CONTINUATION if frame.stream == stream => {
                        if frame.kind == HEADERS && status.is_none() {
                            status = status_of(frame.content());
                        }
                        if frame.flags & END_STREAM != 0 {
                            return H2Outcome::Answered { status, body };
                        }
                    }
                    DATA if frame.stream == stream => {
                        body.extend_from_slice(frame.content());
                        if frame.flags & END_STREAM != 0 {
                            return H2Outcome::Answered { status, body };
                        }
                    }
                    RST_STREAM if frame.stream == stream => return H2Outcome::Reset(frame.code()),
                    GOAWAY => return H2Outcome::GoAway(frame.code()),
                    _ => {}
                }
            }
            H2Outcome::Closed
        };
        tokio::time::timeout(GUARD, read)
            .await
            .unwrap_or(H2Outcome::Hung)
    }
}

/// The pseudo-headers of `GET path` on this proxy.
fn get(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".to_owned()),
        (":scheme", "http".to_owned()),
        (":authority", "proxy.test".to_owned()),
        (":path", path.to_owned()),
    ]
}

fn fields<'a>(list: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    list.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// Sends one request on a new HTTP/2 connection and returns how its stream ended.
async fn h2_once(addr: SocketAddr, fields: &[(&str, &str)], body: Option<&[u8]>) -> H2Outcome {
    let mut h2 = H2::connect(addr).await;
    h2.request(1, fields, body).await;
    h2.outcome(1).await
}

/// A malformed HTTP/2 request (RFC 9113 section 8.1.1): a stream error of type
/// PROTOCOL_ERROR, or the connection closed with it; never forwarded.
async fn assert_malformed_h2(name: &str, fields: &[(&str, &str)], body: Option<&[u8]>) {
    let h = Harness::start().await;
    let outcome = h2_once(h.addr(), fields, body).await;
    eprintln!("{name}: {outcome:?}");
    assert!(
        matches!(
            outcome,
            H2Outcome::Reset(PROTOCOL_ERROR) | H2Outcome::GoAway(PROTOCOL_ERROR)
        ),
        "{name}: a malformed request gets PROTOCOL_ERROR, got {outcome:?}"
    );
    let arrived = h.arrived().await;
    assert!(arrived.is_empty(), "{name}: forwarded: {arrived:?}");
    h.assert_serves_again(name).await;
}

#[tokio::test]
async fn the_plain_listener_speaks_http2_with_prior_knowledge() {
    // The baseline for the hand-written frames below.
    let h = Harness::start().await;
    let request = get("/public/h2-ok");
    match h2_once(h.addr(), &fields(&request), None).await {
        H2Outcome::Answered { status, body } => {
            assert_eq!(status, Some(200), "{}", String::from_utf8_lossy(&body));
            assert!(String::from_utf8_lossy(&body).contains("/public/h2-ok"));
        }
        other => panic!("a well-formed h2 request: {other:?}"),
    }
    assert_eq!(h.seen("/public/h2-ok").await.len(), 1);
    h.assert_serves_again("h2 baseline").await;
}

#[tokio::test]
async fn an_authority_and_host_that_disagree_are_refused() {
    // RFC 9113 section 8.3.1: a Host that names another entity than :authority
    // SHOULD make the request malformed. The request was addressed to proxy.test,
    // yet the proxy picks its origin by Host and tells the upstream
    // `X-Forwarded-Host: evil.example`.
    let h = Harness::start().await;
    let mut request = get("/public/h2-authority");
    request.push(("host", "evil.example".to_owned()));
    match h2_once(h.addr(), &fields(&request), None).await {
        H2Outcome::Answered { status, body } => {
            assert_envelope_body(status.unwrap_or(0), &body, &[400], ":authority vs Host");
        }
        H2Outcome::Reset(PROTOCOL_ERROR) | H2Outcome::GoAway(PROTOCOL_ERROR) => {}
        other => panic!(":authority vs Host: {other:?}"),
    }
    let arrived = h.arrived().await;
    assert!(
        arrived.is_empty(),
        ":authority vs Host: forwarded: {arrived:?}"
    );
    h.assert_serves_again(":authority vs Host").await;
}

#[tokio::test]
async fn a_pseudo_header_after_a_regular_one_is_malformed() {
    assert_malformed_h2(
        "pseudo after regular",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/public/h2-pseudo-late"),
            ("x-regular", "1"),
            (":authority", "proxy.test"),
        ],
        None,
    )
    .await;
}

#[tokio::test]
async fn a_repeated_pseudo_header_is_malformed() {
    assert_malformed_h2(
        "repeated :path",
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "proxy.test"),
            (":path", "/public/h2-path-one"),
            (":path", "/admin/h2-path-two"),
        ],
        None,
    )
    .await;
}

#[tokio::test]
async fn an_uppercase_header_name_is_malformed() {
    let mut request = get("/public/h2-upper");
    request.push(("X-Upper", "1".to_owned()));
    assert_malformed_h2("uppercase name", &fields(&request), None).await;
}

#[tokio::test]
async fn connection_specific_headers_are_malformed_in_http2() {
    for (name, value) in [
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("te", "gzip"),
    ] {
        let mut request = get("/public/h2-hop");
        request[0].1 = "POST".to_owned();
        request.push((name, value.to_owned()));
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        assert_malformed_h2(&format!("{name}: {value}"), &fields(&request), Some(body)).await;
    }
}

#[tokio::test]
async fn a_content_length_the_data_overruns_never_smuggles_a_request() {
    // H2.CL: a front end that passes the declared length on to an HTTP/1.1 back
    // end while sending all the DATA hands the back end a second request.
    let h = Harness::start().await;
    let mut request = get("/public/h2-cl");
    request[0].1 = "POST".to_owned();
    request.push(("content-length", "0".to_owned()));
    let outcome = h2_once(h.addr(), &fields(&request), Some(SMUGGLED.as_bytes())).await;
    eprintln!("H2.CL: {outcome:?}");
    match &outcome {
        H2Outcome::Reset(PROTOCOL_ERROR) | H2Outcome::GoAway(PROTOCOL_ERROR) => {}
        H2Outcome::Answered {
            status: Some(400),
            body,
        } => assert_envelope_body(400, body, &[400], "H2.CL"),
        other => panic!("H2.CL: a length the DATA overruns is malformed: {other:?}"),
    }
    h.assert_nothing_smuggled("H2.CL").await;
    let seen = h.seen("/public/h2-cl").await;
    assert!(
        seen.iter()
            .all(|s| s.body.as_ref().map_or(true, |b| b.is_empty())),
        "H2.CL: the upstream got more than the declared length: {seen:?}"
    );
    h.assert_serves_again("H2.CL").await;
}

// ---------------------------------------------------------------------------
// 3. HTTP/2 rapid reset (CVE-2023-44487)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_bounded_and_the_proxy_keeps_serving() {
    const STREAMS: u32 = 2000;
    let h = Harness::start().await;
    let mut h2 = H2::connect(h.addr()).await;
    let max_streams = h2.handshake().await;

    // Every stream is opened and cancelled at once, in batches, while the answers
    // are read on the side; a PING at the end marks how far the proxy got.
    let writer = h2.write.clone();
    let attack = tokio::spawn(async move {
        let block = hpack(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "proxy.test"),
            (":path", "/public/hang-rapid-reset"),
        ]);
        let mut batch = Vec::new();
        for i in 0..STREAMS {
            let stream = 1 + 2 * i;
            batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
            batch.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
            if batch.len() > 16 * 1024 || i + 1 == STREAMS {
                if writer.lock().await.write_all(&batch).await.is_err() {
                    return false;
                }
                batch.clear();
            }
        }
        let ping = frame(PING, 0, 0, b"rrdone!!");
        writer.lock().await.write_all(&ping).await.is_ok()
    });
    let mut goaway = None;
    let ended = tokio::time::timeout(GUARD, async {
        while let Some(frame) = h2.frame().await {
            match frame.kind {
                GOAWAY => goaway = Some(frame.code()),
                PING if frame.flags & ACK != 0 && frame.payload == b"rrdone!!" => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the attacked connection neither answered nor closed"
    );
    let _ = attack.await;

    // The proxy is still up and serves other connections.
    h.assert_serves_again("after a rapid reset").await;
    let reached = h
        .arrived()
        .await
        .iter()
        .filter(|path| path.as_str() == "/public/hang-rapid-reset")
        .count();
    eprintln!(
        "rapid reset: {STREAMS} streams opened and reset, {reached} reached the upstream, GOAWAY {goaway:?}, max concurrent streams {max_streams}"
    );
    assert!(
        reached <= usize::try_from(max_streams).unwrap(),
        "rapid reset: {reached} of {STREAMS} reset streams reached the upstream, more than the {max_streams} the proxy allows at once"
    );
    h.assert_nothing_smuggled("rapid reset").await;
}

/// [`CONFIG`], with an upstream response timeout far beyond any guard: what ends
/// an upstream request here is the proxy giving it up, never the timeout.
const PATIENT: &str = r#"
upstream: {url: '{upstream}', response_timeout: 300s}
server: {header_read_timeout: 1s}
store: {kind: none}
routes:
  - {path: "/public/{*rest}", access: public}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_after_they_were_forwarded_give_their_upstream_requests_up() {
    // The variant of rapid reset that the pending-accept limit does not see: each
    // stream is reset only once its request has reached the upstream. Reset
    // streams no longer count against the concurrency limit, so unless the proxy
    // gives their upstream requests up, every round adds a full set of them.
    const ROUNDS: usize = 4;
    let h = Harness::start_with(PATIENT).await;
    let mut held = h.record.holding.subscribe();
    let mut h2 = H2::connect(h.addr()).await;
    let batch = h2.handshake().await;
    let block = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "proxy.test"),
        (":path", "/public/hang-forwarded-then-reset"),
    ]);
    let mut next = 1u32;
    for round in 0..ROUNDS {
        let streams: Vec<u32> = (0..batch).map(|i| next + 2 * i).collect();
        next += 2 * batch;
        let mut open = Vec::new();
        for stream in &streams {
            open.extend(frame(HEADERS, END_HEADERS | END_STREAM, *stream, &block));
        }
        assert!(
            h2.send(&open).await,
            "round {round}: the connection was closed"
        );
        let count = usize::try_from(batch).unwrap();
        let forwarded = tokio::time::timeout(GUARD, held.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|held| held.is_ok());
        assert!(
            forwarded,
            "round {round}: {} of {count} requests reached the upstream",
            *h.record.holding.borrow()
        );
        let mut reset = Vec::new();
        for stream in &streams {
            reset.extend(frame(RST_STREAM, 0, *stream, &CANCEL.to_be_bytes()));
        }
        assert!(
            h2.send(&reset).await,
            "round {round}: the connection was closed"
        );
        let released = tokio::time::timeout(GUARD, held.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|held| held.is_ok());
        assert!(
            released,
            "round {round}: the upstream still holds {} requests of reset streams",
            *h.record.holding.borrow()
        );
    }
    let most = h.record.most_held.load(Ordering::SeqCst);
    assert!(
        most <= usize::try_from(batch).unwrap(),
        "the upstream held {most} requests at once, more than the {batch} streams allowed"
    );
    let arrived = h.arrived().await.len();
    assert_eq!(
        arrived,
        ROUNDS * usize::try_from(batch).unwrap(),
        "each stream forwarded once"
    );
    h.assert_serves_again("streams reset after forwarding")
        .await;
}

// ---------------------------------------------------------------------------
// 4. Slow clients
// ---------------------------------------------------------------------------

/// What a slow client saw.
#[derive(Debug)]
struct Drip {
    /// How long after connecting the proxy closed the connection; `None` when it
    /// was still open at the limit.
    closed_after: Option<Duration>,
    received: Vec<u8>,
    sent: usize,
}

/// Connects, sends `head` at once, then `drip` one byte every `gap` (and then
/// nothing), until the proxy closes the connection or `limit` passes.
async fn drip(addr: SocketAddr, head: &[u8], drip: &[u8], gap: Duration, limit: Duration) -> Drip {
    let stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let mut received = Vec::new();
    let mut sent = 0;
    let reader = async {
        let mut chunk = [0u8; 4096];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let writer = async {
        if write.write_all(head).await.is_ok() {
            sent += head.len();
            for byte in drip {
                tokio::time::sleep(gap).await;
                if write.write_all(&[*byte]).await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
        std::future::pending::<()>().await;
    };
    let closed_after = tokio::time::timeout(limit, async {
        tokio::select! {
            closed = reader => closed,
            () = writer => unreachable!(),
        }
    })
    .await
    .ok();
    Drip {
        closed_after,
        received,
        sent,
    }
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_timeout() {
    let h = Harness::start().await;
    let head = "GET /public/slowloris HTTP/1.1\r\nHost: proxy.test\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // One byte every 100 ms would take about ten seconds to finish the head.
    let limit = HEADER_TIMEOUT + MARGIN;
    let outcome = drip(
        h.addr(),
        b"",
        head.as_bytes(),
        Duration::from_millis(100),
        limit,
    )
    .await;
    eprintln!(
        "slowloris: closed after {:?}, {} bytes sent",
        outcome.closed_after, outcome.sent
    );
    assert!(
        outcome.closed_after.is_some(),
        "slowloris: still connected after {limit:?} with {} of {} header bytes sent",
        outcome.sent,
        head.len()
    );
    assert!(
        outcome.sent < head.len(),
        "slowloris: the head was never cut off"
    );
    // hyper closes without an answer, or with a 408; never anything else.
    for answer in parse_answers(&outcome.received) {
        assert_eq!(answer.status, 408, "slowloris: {answer:?}");
    }
    assert!(h.arrived().await.is_empty(), "slowloris: forwarded");
    h.assert_serves_again("slowloris").await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let h = Harness::start().await;
    let limit = HEADER_TIMEOUT + MARGIN;
    let outcome = drip(h.addr(), b"", b"", Duration::ZERO, limit).await;
    assert!(
        outcome.closed_after.is_some(),
        "an idle connection is still open after {limit:?}"
    );
    h.assert_serves_again("idle connection").await;
}

#[tokio::test]
async fn a_stalled_http2_preface_is_closed_at_the_header_timeout() {
    let h = Harness::start().await;
    let limit = HEADER_TIMEOUT + MARGIN;
    let outcome = drip(h.addr(), &PREFACE[..10], b"", Duration::ZERO, limit).await;
    assert!(
        outcome.closed_after.is_some(),
        "a connection stalled in the h2 preface is still open after {limit:?}"
    );
    h.assert_serves_again("stalled h2 preface").await;
}

#[tokio::test]
async fn an_http2_header_block_that_never_ends_is_closed_at_the_header_timeout() {
    let h = Harness::start().await;
    let mut h2 = H2::connect(h.addr()).await;
    h2.handshake().await;
    // From here on the client sends nothing at all, not even acknowledgements:
    // the proxy must wait for a CONTINUATION that never comes.
    h2.acks = false;
    let block = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "proxy.test"),
        (":path", "/public/h2-slowloris"),
    ]);
    assert!(h2.send(&frame(HEADERS, END_STREAM, 1, &block)).await);
    let limit = HEADER_TIMEOUT + MARGIN;
    let closed = tokio::time::timeout(limit, async {
        while let Some(frame) = h2.frame().await {
            if frame.kind == GOAWAY {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an unfinished h2 header block still holds the connection after {limit:?}"
    );
    assert!(h.arrived().await.is_empty(), "h2 slowloris: forwarded");
    h.assert_serves_again("h2 slowloris").await;
}

/// Sends the head of `POST path` with a 100-byte body at once, then the body one
/// byte every 100 ms (ten seconds in all).
async fn slow_body(h: &Harness, path: &str, limit: Duration) -> Drip {
    let head = format!("POST {path} HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 100\r\n\r\n");
    drip(
        h.addr(),
        head.as_bytes(),
        &[b'x'; 100],
        Duration::from_millis(100),
        limit,
    )
    .await
}

#[tokio::test]
async fn a_slow_body_is_cut_off_by_the_upstream_response_timeout() {
    // The upstream reads the whole body before it answers: the proxy's response
    // timeout is what bounds the client.
    let h = Harness::start().await;
    let path = "/public/slow-body";
    let limit = RESPONSE_TIMEOUT + MARGIN;
    let outcome = slow_body(&h, path, limit).await;
    eprintln!(
        "slow body: closed after {:?}, {} bytes sent, received {:?}",
        outcome.closed_after,
        outcome.sent,
        String::from_utf8_lossy(&outcome.received)
    );
    let Some(closed_after) = outcome.closed_after else {
        panic!(
            "slow body: still connected after {limit:?} with {} bytes sent",
            outcome.sent
        );
    };
    let answers = parse_answers(&outcome.received);
    assert_eq!(
        answers.len(),
        1,
        "slow body: one answer after {closed_after:?}: {}",
        String::from_utf8_lossy(&outcome.received)
    );
    assert_envelope(&answers[0], &[408, 504], "slow body");
    let seen = h.seen(path).await;
    assert!(
        seen.iter().all(|s| s.body.is_err()),
        "slow body: the upstream got a complete request: {seen:?}"
    );
    h.assert_serves_again("slow body").await;
}

#[tokio::test]
async fn a_slow_body_after_an_early_answer_does_not_hold_the_connection() {
    // The upstream answers before reading the body: no response timeout runs,
    // and the client must still not hold the connection past the timeouts.
    let h = Harness::start().await;
    let path = "/public/early-slow-body";
    let limit = HEADER_TIMEOUT + RESPONSE_TIMEOUT + MARGIN;
    let outcome = slow_body(&h, path, limit).await;
    eprintln!(
        "slow body after an early answer: closed after {:?}, {} bytes sent, received {:?}",
        outcome.closed_after,
        outcome.sent,
        String::from_utf8_lossy(&outcome.received)
    );
    let answers = parse_answers(&outcome.received);
    assert!(
        outcome.closed_after.is_some(),
        "slow body after an early answer: still connected after {limit:?} with {} bytes sent; answers: {answers:?}",
        outcome.sent
    );
    assert!(
        answers.len() <= 1,
        "slow body after an early answer: {answers:?}"
    );
    if let Some(answer) = answers.first() {
        assert!(
            answer.status == 200 || answer.status == 408,
            "slow body after an early answer: {answer:?}"
        );
    }
    h.assert_serves_again("slow body after an early answer")
        .await;
}
