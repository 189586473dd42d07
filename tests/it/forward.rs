//! Forwarding over real sockets, with real upstreams: streaming responses (SSE) and
//! large request bodies stream through without buffering and with bounded memory,
//! HTTP/2 on both sides, WebSocket upgrades, upstream failures answered with the
//! envelope (never a hang), and the header hygiene an upstream sees.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use authmd_proxy::body::Body;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};

use crate::support;
use crate::support::{TestProxy, WRITER_KEY, assert_envelope, client, json, raw};

/// Every route public, in front of `{upstream}`.
const PUBLIC: &str = r#"
upstream: {url: '{upstream}'}
routes:
  - {path: "/{*rest}", access: public}
"#;

/// The same, taking bodies of any size the bulk tests send (`server.max_body` is
/// 16 MiB by default, and holds streamed bodies too).
const PUBLIC_BULK: &str = r#"
upstream: {url: '{upstream}'}
server: {max_body: 1GiB}
routes:
  - {path: "/{*rest}", access: public}
"#;

/// The same as `PUBLIC`, speaking HTTP/2 (prior knowledge) to the upstream.
const PUBLIC_H2: &str = r#"
upstream: {url: '{upstream}', http2: true}
routes:
  - {path: "/{*rest}", access: public}
"#;

/// How long any single step may take before the test calls it a hang. A failure
/// guard only: nothing waits for it to elapse when the proxy behaves.
const GUARD: Duration = Duration::from_secs(10);

/// The guard for steps that move hundreds of megabytes through a debug build.
const BULK_GUARD: Duration = Duration::from_secs(300);

/// Bulk transfers: 1600 chunks of 64 KiB, i.e. 100 MiB.
const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 1600;
const BULK: u64 = (CHUNK * CHUNKS) as u64;

/// Awaits `future`, failing the test if it does not finish within `limit`.
async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}; the proxy hangs"))
}

async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    within(GUARD, what, future).await
}

/// A client speaking HTTP/2 with prior knowledge (h2c).
fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

type TestBody = BoxBody<Bytes, Infallible>;

/// An upstream on 127.0.0.1:<random>, HTTP/1.1 and HTTP/2 prior knowledge, whose
/// handler may answer with any body (unlike `support::upstream`, whose `Body` can
/// only be complete bytes or a peer's `Incoming`).
async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A body that yields whatever is sent on the channel, as it is sent.
fn channel_body(rx: mpsc::Receiver<Bytes>) -> TestBody {
    let frames = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    BodyExt::boxed(StreamBody::new(frames))
}

/// A body of [`BULK`] bytes, generated chunk by chunk as it is polled.
fn generated_body() -> TestBody {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let frames =
        stream::iter((0..CHUNKS).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))));
    BodyExt::boxed(StreamBody::new(frames))
}

/// A request body of [`BULK`] bytes for reqwest, generated as it is sent.
fn generated_upload() -> reqwest::Body {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    reqwest::Body::wrap_stream(stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ))
}

/// Reads a body to its end, counting the bytes without keeping them.
async fn count_body<B>(mut body: B) -> Result<u64, String>
where
    B: hyper::body::Body + Unpin,
    B::Error: std::fmt::Display,
{
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            length += bytes::Buf::remaining(data) as u64;
        }
    }
    Ok(length)
}

/// Reads a client response to its end, counting the bytes without keeping them.
async fn count_response(mut response: reqwest::Response) -> u64 {
    let mut length = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        length += chunk.len() as u64;
    }
    length
}

/// An upstream handler answering with JSON describing what it received: version,
/// method, path, query, headers (name -> values joined by ", ") and the body length.
async fn describe(request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>"))
            .collect();
        headers.insert(name.to_string(), Value::String(values.join(", ")));
    }
    let length = match count_body(body).await {
        Ok(length) => json!(length),
        Err(error) => json!(error),
    };
    let seen = json!({
        "version": format!("{:?}", parts.version),
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "length": length,
    });
    let mut response = Response::new(Body::full(seen.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

// ---------------------------------------------------------------------------------
// 1. Streaming responses (SSE)
// ---------------------------------------------------------------------------------

const EVENT_ONE: &str = "id: 1\nevent: tick\ndata: first\n\n";
const EVENT_TWO: &str = "id: 2\nevent: tick\ndata: second\n\n";

/// An SSE upstream: sends [`EVENT_ONE`], waits until `release` is notified (which
/// the test does only once it has read the first event through the proxy), then
/// sends [`EVENT_TWO`] and ends the stream. A proxy that buffered the response would
/// never deliver the first event, and the test would time out.
async fn sse_upstream(release: Arc<Notify>) -> SocketAddr {
    serve(move |request: Request<Incoming>| {
        let release = release.clone();
        async move {
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(EVENT_ONE.as_bytes())).await;
                release.notified().await;
                let _ = tx.send(Bytes::from_static(EVENT_TWO.as_bytes())).await;
            });
            Response::builder()
                .header(CONTENT_TYPE, "text/event-stream")
                .header(CACHE_CONTROL, "no-cache")
                .header("x-upstream-version", format!("{:?}", request.version()))
                .body(channel_body(rx))
                .unwrap()
        }
    })
    .await
}

async fn sse_streams_each_event_as_it_is_sent(client_h2: bool, upstream_h2: bool) {
    let release = Arc::new(Notify::new());
    let upstream = sse_upstream(release.clone()).await;
    let config = if upstream_h2 { PUBLIC_H2 } else { PUBLIC };
    let proxy = TestProxy::start(config, Some(upstream)).await;
    let http = if client_h2 { h2_client() } else { client() };
    let mut response = guard(
        "SSE response head",
        http.get(proxy.url("/events?since=0"))
            .header(ACCEPT, "text/event-stream")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let expected_client = if client_h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    assert_eq!(response.version(), expected_client);
    assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
    assert_eq!(response.headers()[CACHE_CONTROL], "no-cache");
    let expected_upstream = if upstream_h2 { "HTTP/2.0" } else { "HTTP/1.1" };
    assert_eq!(response.headers()["x-upstream-version"], expected_upstream);

    let mut seen = Vec::new();
    while !seen.ends_with(b"\n\n") {
        let chunk = guard(
            "first SSE event (is the proxy buffering?)",
            response.chunk(),
        )
        .await
        .unwrap()
        .expect("the stream ended before the first event");
        seen.extend_from_slice(&chunk);
    }
    assert_eq!(String::from_utf8_lossy(&seen), EVENT_ONE);

    release.notify_one();
    while let Some(chunk) = guard("second SSE event", response.chunk()).await.unwrap() {
        seen.extend_from_slice(&chunk);
    }
    assert_eq!(
        String::from_utf8_lossy(&seen),
        format!("{EVENT_ONE}{EVENT_TWO}")
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn sse_events_stream_through_http1_on_both_sides() {
    sse_streams_each_event_as_it_is_sent(false, false).await;
}

#[tokio::test]
async fn sse_events_stream_through_from_an_http2_client() {
    sse_streams_each_event_as_it_is_sent(true, false).await;
}

#[tokio::test]
async fn sse_events_stream_through_to_an_http2_upstream() {
    sse_streams_each_event_as_it_is_sent(false, true).await;
}

#[tokio::test]
async fn sse_events_stream_through_http2_on_both_sides() {
    sse_streams_each_event_as_it_is_sent(true, true).await;
}

/// The request direction streams too: the upstream answers once it has the first
/// part of the request body, while the client still holds the rest back; only after
/// reading that answer does the client send the rest.
#[tokio::test]
async fn a_request_body_streams_to_the_upstream_before_it_is_complete() {
    let upstream = serve(|request: Request<Incoming>| async move {
        let mut body = request.into_body();
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        // Wait for the first request chunk before answering at all.
        let first = loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        break data;
                    }
                }
                _ => break Bytes::from_static(b"<no first chunk>"),
            }
        };
        tokio::spawn(async move {
            let _ = tx.send(first).await;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let _ = tx.send(data).await;
                }
            }
        });
        Response::new(channel_body(rx))
    })
    .await;
    let proxy = TestProxy::start(PUBLIC, Some(upstream)).await;
    let (parts_tx, parts_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let upload = stream::unfold(parts_rx, |mut rx| async move {
        rx.recv().await.map(|part| (part, rx))
    });
    parts_tx
        .send(Ok(Bytes::from_static(b"part one;")))
        .await
        .unwrap();
    let mut response = guard(
        "response to a half-sent request",
        client()
            .post(proxy.url("/upload"))
            .body(reqwest::Body::wrap_stream(upload))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let first = guard("echo of the first part", response.chunk())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, "part one;");
    parts_tx
        .send(Ok(Bytes::from_static(b"part two")))
        .await
        .unwrap();
    drop(parts_tx);
    let mut rest = Vec::new();
    while let Some(chunk) = guard("rest of the echo", response.chunk()).await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"part two");
}

// ---------------------------------------------------------------------------------
// 2. Large bodies with bounded memory
// ---------------------------------------------------------------------------------

/// An upstream that counts request bytes without storing them (`POST`), and serves
/// [`BULK`] generated bytes (`GET`).
async fn bulk_upstream() -> SocketAddr {
    serve(|request: Request<Incoming>| async move {
        if request.method() == http::Method::GET {
            return Response::new(generated_body());
        }
        let answer = match count_body(request.into_body()).await {
            Ok(length) => length.to_string(),
            Err(error) => format!("body error: {error}"),
        };
        Response::new(http_body_util::Full::new(Bytes::from(answer)).boxed())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_100_mib_upload_streams_through_to_the_upstream() {
    let upstream = bulk_upstream().await;
    let proxy = TestProxy::start(PUBLIC_BULK, Some(upstream)).await;
    let response = within(
        BULK_GUARD,
        "100 MiB upload",
        client()
            .post(proxy.url("/upload"))
            .body(generated_upload())
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let text = guard("upload count", response.text()).await.unwrap();
    assert_eq!(text, BULK.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_100_mib_download_streams_through_to_the_client() {
    let upstream = bulk_upstream().await;
    let proxy = TestProxy::start(PUBLIC, Some(upstream)).await;
    let response = guard(
        "download response head",
        client().get(proxy.url("/download")).send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let length = within(BULK_GUARD, "100 MiB download", count_response(response)).await;
    assert_eq!(length, BULK);
}

/// The real binary, measured through `/proc` (Linux only).
#[cfg(target_os = "linux")]
mod binary {
    use crate::support::Binary;

    use super::{
        BULK, BULK_GUARD, PUBLIC_BULK, bulk_upstream, client, count_response, generated_upload,
        guard, within,
    };

    /// Starts the real binary on `config` (port 0, one worker thread).
    async fn start_binary(config: &std::path::Path) -> Binary {
        let config = config.to_str().unwrap();
        Binary::start(&[
            "run",
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .await
    }

    /// Peak resident set size of a process, in KiB.
    fn peak_rss_kib(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_binary_streams_100_mib_each_way_in_under_64_mib_of_memory() {
        let upstream = bulk_upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("forward.yaml");
        std::fs::write(
            &config,
            PUBLIC_BULK.replace("{upstream}", &format!("http://{upstream}")),
        )
        .unwrap();
        let child = start_binary(&config).await;
        let url = child.url.clone();
        let http = client();

        let response = within(
            BULK_GUARD,
            "100 MiB upload through the binary",
            http.post(format!("{url}/upload"))
                .body(generated_upload())
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 200);
        let text = guard("upload count", response.text()).await.unwrap();
        assert_eq!(text, BULK.to_string());

        let response = guard("download head", http.get(format!("{url}/download")).send())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let length = within(
            BULK_GUARD,
            "100 MiB download through the binary",
            count_response(response),
        )
        .await;
        assert_eq!(length, BULK);

        let peak = peak_rss_kib(child.pid());
        assert!(
            peak < 64 * 1024,
            "the proxy's peak RSS was {peak} KiB moving 2 x 100 MiB; it must stay under 64 MiB"
        );
    }
}

// ---------------------------------------------------------------------------------
// 3. HTTP/2
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_h2c_client_is_served_over_http2() {
    let proxy = TestProxy::start(PUBLIC, None).await;
    let response = guard(
        "h2c request",
        h2_client()
            .post(proxy.url("/things/7?x=1"))
            .body("hello over h2")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let echo = json(response).await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/things/7");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["body"]["text"], "hello over h2");
    assert_eq!(echo["body"]["length"], 13);
    // The upstream side is HTTP/1.1 unless `http2: true`.
    assert_eq!(echo["version"], "HTTP/1.1");
    // HTTP/2 carries the host in `:authority`; it still becomes X-Forwarded-Host.
    assert_eq!(echo["headers"]["x-forwarded-host"], proxy.addr.to_string());
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert!(echo["headers"].get("host").is_none(), "{echo}");
}

#[tokio::test]
async fn an_h2c_clients_authority_is_the_host_sent_upstream_with_preserve_host() {
    let upstream = support::upstream(describe).await;
    let config = PUBLIC.replace(
        "url: '{upstream}'",
        "url: '{upstream}', preserve_host: true",
    );
    let proxy = TestProxy::start(&config, Some(upstream)).await;
    let response = guard("h2c request", h2_client().get(proxy.url("/who")).send())
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let seen = json(response).await;
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["headers"]["host"], proxy.addr.to_string(), "{seen}");
}

#[tokio::test]
async fn the_proxy_speaks_http2_to_the_upstream_when_configured() {
    let upstream = support::upstream(describe).await;
    let proxy = TestProxy::start(PUBLIC_H2, Some(upstream)).await;
    // 8 MiB: far beyond the default HTTP/2 flow-control windows, both ways in.
    let body = vec![b'z'; 8 << 20];
    for (name, http) in [("HTTP/1.1 client", client()), ("h2c client", h2_client())] {
        let response = guard(
            name,
            http.put(proxy.url("/blobs/1?v=2"))
                .header("x-kept", "yes")
                .body(body.clone())
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let seen = json(response).await;
        assert_eq!(seen["version"], "HTTP/2.0", "{name}: {seen}");
        assert_eq!(seen["method"], "PUT", "{name}");
        assert_eq!(seen["path"], "/blobs/1", "{name}");
        assert_eq!(seen["query"], "v=2", "{name}");
        assert_eq!(seen["length"], 8 << 20, "{name}: {seen}");
        assert_eq!(seen["headers"]["x-kept"], "yes", "{name}");
        for hop in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
            assert!(seen["headers"].get(hop).is_none(), "{name}: {hop}: {seen}");
        }
    }
}

// ---------------------------------------------------------------------------------
// 4. WebSocket upgrade
// ---------------------------------------------------------------------------------

const WS_CONFIG: &str = r#"
upstream: {url: '{upstream}'}
credentials:
  headers: [{name: X-Agent-Key}]
  key_prefixes: [ak_live]
scopes: {chat:use: Use the chat}
keys:
  - id: example-writer
    hash: blake3:5e3badb54234fb3ed212ad03431ec29d20925e7e39e421d1a4fd63d269624e14
    scopes: [chat:use]
routes:
  - {path: /ws/chat, methods: [GET], scopes: [chat:use]}
"#;

/// A WebSocket echo server on a raw TCP listener, reporting each handshake's
/// request headers.
async fn ws_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<(String, HeaderMap)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                #[allow(
                    clippy::result_large_err,
                    reason = "the error type is tungstenite's Callback signature"
                )]
                let callback = move |request: &WsRequest, response: WsResponse| {
                    let _ = seen.send((request.uri().to_string(), request.headers().clone()));
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen_rx)
}

#[tokio::test]
async fn a_websocket_upgrade_is_tunnelled_to_the_upstream() {
    let (upstream, mut handshakes) = ws_upstream().await;
    let proxy = TestProxy::start(WS_CONFIG, Some(upstream)).await;
    let mut request = format!("ws://{}/ws/chat?room=1", proxy.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-agent-key", HeaderValue::from_static(WRITER_KEY));
    let (mut ws, response) = guard(
        "WebSocket handshake",
        tokio_tungstenite::connect_async(request),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 101);

    let (uri, headers) = guard("upstream handshake", handshakes.recv())
        .await
        .unwrap();
    assert_eq!(uri, "/ws/chat?room=1");
    assert_eq!(headers["upgrade"], "websocket");
    assert!(headers.contains_key("sec-websocket-key"));
    assert_eq!(headers["x-authmd-principal"], "key:example-writer");
    assert!(
        !headers.contains_key("x-agent-key"),
        "the key reached the upstream"
    );

    for text in ["hello", "again"] {
        guard("send", ws.send(Message::text(text))).await.unwrap();
        let echo = guard("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echo, Message::text(text));
    }
    guard(
        "send binary",
        ws.send(Message::binary(vec![0u8, 1, 2, 255])),
    )
    .await
    .unwrap();
    let echo = guard("binary echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echo, Message::binary(vec![0u8, 1, 2, 255]));

    // An orderly close travels through the tunnel and back.
    guard("close", ws.close(None)).await.unwrap();
    while let Some(message) = guard("close handshake", ws.next()).await {
        match message {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("unexpected message after close: {other:?}"),
            Err(_) => break,
        }
    }
}

#[tokio::test]
async fn a_websocket_upgrade_without_a_key_is_refused_before_the_upstream() {
    let (upstream, mut handshakes) = ws_upstream().await;
    let proxy = TestProxy::start(WS_CONFIG, Some(upstream)).await;
    let url = format!("ws://{}/ws/chat", proxy.addr);
    let error = guard("refused handshake", tokio_tungstenite::connect_async(url))
        .await
        .unwrap_err();
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected an HTTP 401, got {other:?}"),
    }
    assert!(
        handshakes.try_recv().is_err(),
        "the upstream saw the handshake"
    );
}

// ---------------------------------------------------------------------------------
// 5. Upstream failures
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_refused_connection_is_502_upstream_unavailable() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    for config in [PUBLIC, PUBLIC_H2] {
        let proxy = TestProxy::start(config, Some(closed)).await;
        let response = guard("answer", client().get(proxy.url("/x")).send())
            .await
            .unwrap();
        assert_eq!(response.status(), 502, "{config}");
        assert_envelope(response, 502, "bad_gateway", "UPSTREAM_UNAVAILABLE").await;
    }
}

/// Time is not paused here: with real sockets a paused clock auto-advances whenever
/// the runtime waits on I/O, so the 1s timeout could fire before the request even
/// reached the upstream. The 1s is a bound the proxy must honour, not a wait for
/// readiness.
#[tokio::test]
async fn an_upstream_that_never_answers_is_504_after_the_response_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let config = PUBLIC.replace(
        "url: '{upstream}'",
        "url: '{upstream}', response_timeout: 1s",
    );
    let proxy = TestProxy::start(&config, Some(silent)).await;
    let response = guard("answer", client().get(proxy.url("/slow")).send())
        .await
        .unwrap();
    assert_envelope(response, 504, "gateway_timeout", "UPSTREAM_TIMEOUT").await;
    // The timeout was the upstream's silence, not a failure to reach it.
    guard("the upstream's accept", accepted.recv())
        .await
        .unwrap();
}

/// An upstream that accepts, then closes (`reset`: with SO_LINGER 0, so the close
/// is a TCP RST) without answering.
async fn hanging_up_upstream(reset: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if reset {
                stream.set_zero_linger().unwrap();
            }
            drop(stream);
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_closes_without_answering_is_502() {
    for reset in [false, true] {
        let upstream = hanging_up_upstream(reset).await;
        for config in [PUBLIC, PUBLIC_H2] {
            let proxy = TestProxy::start(config, Some(upstream)).await;
            for method in [http::Method::GET, http::Method::POST] {
                let response = guard(
                    "answer",
                    client()
                        .request(method.clone(), proxy.url("/x"))
                        .body("payload")
                        .send(),
                )
                .await
                .unwrap();
                assert_eq!(response.status(), 502, "reset={reset} {method} {config}");
                assert_envelope(response, 502, "bad_gateway", "UPSTREAM_UNAVAILABLE").await;
            }
        }
    }
}

#[tokio::test]
async fn an_upstream_that_closes_mid_body_ends_the_client_response_with_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head, answer with 3 of 100 promised bytes, close.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
                    .await;
            });
        }
    });
    let proxy = TestProxy::start(PUBLIC, Some(upstream)).await;
    let response = guard("head", client().get(proxy.url("/x")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = guard("truncated body", response.bytes()).await;
    assert!(body.is_err(), "a truncated body read as complete: {body:?}");
}

// ---------------------------------------------------------------------------------
// 6. Header hygiene as the upstream sees it
// ---------------------------------------------------------------------------------

const ECHO: &str = r#"
upstream: {url: builtin:echo}
routes:
  - {path: "/{*rest}", access: public}
"#;

const ECHO_PRESERVE_HOST: &str = r#"
upstream: {url: builtin:echo, preserve_host: true}
routes:
  - {path: "/{*rest}", access: public}
"#;

const QUERY: &str = "b=2&a=1&a=3&q=%2F%20x+y&empty=&flag&u=%C3%A9";

fn hygiene_request(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\n\
         Host: api.example.test\r\n\
         Connection: close, X-Foo\r\n\
         X-Foo: must not pass\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Connection: keep-alive\r\n\
         X-Forwarded-For: 203.0.113.7\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: evil.example\r\n\
         X-Kept: yes\r\n\
         \r\n"
    )
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let proxy = TestProxy::start(ECHO, None).await;
    let target = format!("/echo/path?{QUERY}");
    let answer = guard("echo", raw(proxy.addr, &hygiene_request(&target))).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let echo = answer.json();
    let seen = echo["headers"].as_object().unwrap();
    for hop in [
        "connection",
        "x-foo",
        "keep-alive",
        "te",
        "proxy-connection",
    ] {
        assert!(
            !seen.contains_key(hop),
            "{hop} reached the upstream: {echo}"
        );
    }
    assert_eq!(seen["x-kept"], "yes");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "api.example.test");
    // The client's Host is not sent upstream without `preserve_host`.
    assert!(!seen.contains_key("host"), "{echo}");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/echo/path");
    assert_eq!(echo["query"], QUERY);
    assert_eq!(echo["body"]["length"], 0);
}

#[tokio::test]
async fn the_query_passes_unchanged_when_the_path_is_normalised() {
    let proxy = TestProxy::start(ECHO, None).await;
    let target = format!("/echo/./a//b/%7Ec?{QUERY}");
    let answer = guard("echo", raw(proxy.addr, &hygiene_request(&target))).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let echo = answer.json();
    assert_eq!(echo["path"], "/echo/a/b/~c");
    assert_eq!(echo["query"], QUERY);
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host() {
    let proxy = TestProxy::start(ECHO_PRESERVE_HOST, None).await;
    let answer = guard("echo", raw(proxy.addr, &hygiene_request("/h"))).await;
    let echo = answer.json();
    assert_eq!(echo["headers"]["host"], "api.example.test", "{echo}");
    assert_eq!(echo["headers"]["x-forwarded-host"], "api.example.test");
}

#[tokio::test]
async fn a_real_upstream_gets_its_own_host_unless_preserve_host() {
    let upstream = support::upstream(describe).await;
    for (preserve, expected) in [
        (false, upstream.to_string()),
        (true, "api.example.test".to_owned()),
    ] {
        let config = PUBLIC.replace(
            "url: '{upstream}'",
            &format!("url: '{{upstream}}', preserve_host: {preserve}"),
        );
        let proxy = TestProxy::start(&config, Some(upstream)).await;
        let answer = guard(
            "answer",
            raw(proxy.addr, &hygiene_request(&format!("/h?{QUERY}"))),
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let seen = answer.json();
        assert_eq!(
            seen["headers"]["host"],
            expected.as_str(),
            "preserve_host={preserve}: {seen}"
        );
        assert_eq!(seen["headers"]["x-forwarded-host"], "api.example.test");
        assert_eq!(seen["query"], QUERY);
        assert_eq!(seen["version"], "HTTP/1.1");
        for hop in ["x-foo", "keep-alive", "te", "proxy-connection"] {
            assert!(seen["headers"].get(hop).is_none(), "{hop}: {seen}");
        }
    }
}

#[tokio::test]
async fn hop_by_hop_headers_of_the_response_are_removed() {
    let upstream = support::upstream(|_request: Request<Incoming>| async {
        let mut response = Response::new(Body::full("ok"));
        let headers = response.headers_mut();
        headers.insert("connection", HeaderValue::from_static("X-Bar"));
        headers.insert("x-bar", HeaderValue::from_static("hop"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        response
    })
    .await;
    let proxy = TestProxy::start(PUBLIC, Some(upstream)).await;
    for (name, http) in [("HTTP/1.1 client", client()), ("h2c client", h2_client())] {
        let response = guard(name, http.get(proxy.url("/r")).send()).await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let headers = response.headers();
        assert_eq!(headers["x-kept"], "yes", "{name}");
        assert!(!headers.contains_key("x-bar"), "{name}: {headers:?}");
        assert!(!headers.contains_key("keep-alive"), "{name}: {headers:?}");
        assert_eq!(response.text().await.unwrap(), "ok");
    }
}

/// A client-sent X-Forwarded-Host must never reach the upstream: the proxy sets it
/// from the Host it received, and when there is no Host to take it from it must
/// drop the client's value rather than pass it through. Three ways to arrive with
/// no Host: HTTP/1.0 without one, HTTP/1.1 without one (hyper accepts it), and a
/// Host the client itself names in `Connection` (stripped as hop-by-hop before
/// `set_forwarded` runs).
#[tokio::test]
async fn a_spoofed_forwarded_host_never_reaches_the_upstream() {
    let proxy = TestProxy::start(ECHO, None).await;
    let cases = [
        "GET /h HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n",
        "GET /h HTTP/1.1\r\nConnection: close\r\nX-Forwarded-Host: evil.example\r\n\r\n",
        "GET /h HTTP/1.1\r\nHost: api.example.test\r\nConnection: close, host\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    ];
    let mut leaked = Vec::new();
    for request in cases {
        let answer = guard("echo", raw(proxy.addr, request)).await;
        assert_eq!(answer.status, 200, "{request:?}: {answer:?}");
        let echo = answer.json();
        if echo["headers"]["x-forwarded-host"] == "evil.example" {
            leaked.push(request);
        }
    }
    assert!(
        leaked.is_empty(),
        "the client's X-Forwarded-Host reached the upstream for {leaked:#?}"
    );
}
