//! Oversized requests and connection floods: a request target, header set or
//! declared body beyond `server:`'s limits is refused with its envelope (414, 431,
//! 413) before anything else looks at it and before the upstream sees it; a streamed
//! body (no declared length) is cut off where it passes the limit, and answered 413
//! if the upstream has not answered yet; far beyond,
//! hyper's parser closes the connection; past `server.max_connections`, a new
//! connection is closed at once. After each, normal traffic is served again.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authmd_proxy::body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support;
use crate::support::{TestProxy, assert_envelope, client, raw};

const CONFIG: &str = r#"
upstream: {url: "{upstream}"}
server:
  max_uri: 1KiB
  max_headers: 20
  max_header_bytes: 4KiB
  max_body: 64KiB
  max_connections: 3
routes:
  - {path: /echo, access: public}
  - {path: "/echo/{*rest}", access: public}
"#;

async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let addr = support::upstream(move |_request| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            http::Response::new(Body::full("ok"))
        }
    })
    .await;
    (addr, count)
}

#[tokio::test]
async fn a_long_target_is_414_and_one_at_the_limit_passes() {
    let (upstream, count) = counting_upstream().await;
    let proxy = TestProxy::start(CONFIG, Some(upstream)).await;
    // The target is path and query: 1 KiB exactly passes.
    let at_limit = format!("/echo?q={}", "a".repeat(1024 - "/echo?q=".len()));
    let response = client().get(proxy.url(&at_limit)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let over = format!("{at_limit}a");
    let response = client().get(proxy.url(&over)).send().await.unwrap();
    assert_envelope(response, 414, "uri_too_long", "URI_TOO_LONG").await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "the long one never reached the API"
    );
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_431_and_far_too_large_ones_are_cut_off() {
    let (upstream, count) = counting_upstream().await;
    let proxy = TestProxy::start(CONFIG, Some(upstream)).await;
    let mut request = client().get(proxy.url("/echo"));
    for i in 0..21 {
        request = request.header(format!("x-h{i}"), "v");
    }
    assert_envelope(
        request.send().await.unwrap(),
        431,
        "request_header_fields_too_large",
        "HEADERS_TOO_LARGE",
    )
    .await;
    let response = client()
        .get(proxy.url("/echo"))
        .header("x-big", "b".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_envelope(
        response,
        431,
        "request_header_fields_too_large",
        "HEADERS_TOO_LARGE",
    )
    .await;
    assert_eq!(count.load(Ordering::SeqCst), 0);

    // Far beyond the limit hyper's parser stops reading: a bare 431, or the
    // connection closes; either way nothing is forwarded and the proxy goes on.
    let huge = format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nx-huge: {}\r\n\r\n",
        "h".repeat(64 << 10)
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let _ = stream.write_all(huge.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 0);
    let response = client().get(proxy.url("/echo")).send().await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "served again after the flood of bytes"
    );
}

#[tokio::test]
async fn a_declared_body_beyond_the_limit_is_413_without_reaching_the_api() {
    let (upstream, count) = counting_upstream().await;
    let proxy = TestProxy::start(CONFIG, Some(upstream)).await;
    let response = client()
        .post(proxy.url("/echo"))
        .body(vec![b'x'; (64 << 10) + 1])
        .send()
        .await
        .unwrap();
    assert_envelope(response, 413, "payload_too_large", "BODY_TOO_LARGE").await;
    assert_eq!(count.load(Ordering::SeqCst), 0);
    // A lie about the length is no way around it: the declared length is checked
    // before a byte of the body is read.
    let answer = raw(
        proxy.addr,
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(count.load(Ordering::SeqCst), 0);
    let response = client()
        .post(proxy.url("/echo"))
        .body(vec![b'x'; 64 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a body at the limit passes");
}

/// An upstream that reads each request's whole body before answering, and records
/// the length of each body it received complete (a body that broke off is not one).
async fn reading_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<usize>,
) {
    use http_body_util::BodyExt;
    let (seen, complete) = tokio::sync::mpsc::unbounded_channel();
    let addr = support::upstream(move |request: http::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            if let Ok(body) = request.into_body().collect().await {
                let _ = seen.send(body.to_bytes().len());
            }
            http::Response::new(Body::full("ok"))
        }
    })
    .await;
    (addr, complete)
}

/// A body with no declared length: `size` bytes in 4 KiB chunks.
fn streamed(size: usize) -> reqwest::Body {
    let chunks = (0..size.div_ceil(4096)).map(move |i| {
        let len = (size - i * 4096).min(4096);
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; len]))
    });
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn a_streamed_body_growing_past_the_limit_is_413_and_never_reaches_the_api_whole() {
    let (upstream, mut complete) = reading_upstream().await;
    let proxy = TestProxy::start(CONFIG, Some(upstream)).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (client, version) in [(client(), "HTTP/1.1 chunked"), (h2, "HTTP/2")] {
        let response = client
            .post(proxy.url("/echo"))
            .body(streamed((64 << 10) + 1))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.version() == http::Version::HTTP_2,
            version == "HTTP/2"
        );
        assert_envelope(response, 413, "payload_too_large", "BODY_TOO_LARGE").await;
        assert!(
            complete.try_recv().is_err(),
            "{version}: the upstream got a whole body"
        );
        // At the limit exactly, it streams through whole.
        let response = client
            .post(proxy.url("/echo"))
            .body(streamed(64 << 10))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{version}");
        assert_eq!(complete.recv().await, Some(64 << 10), "{version}");
    }
}

/// Opens a connection and completes one keep-alive request on it, so that the
/// proxy has certainly accepted it.
async fn open(proxy: &TestProxy) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream
}

#[tokio::test]
async fn past_the_connection_ceiling_a_new_connection_is_closed_and_a_freed_slot_is_reused() {
    let (upstream, _count) = counting_upstream().await;
    let proxy = TestProxy::start(CONFIG, Some(upstream)).await;
    let first = open(&proxy).await;
    let _second = open(&proxy).await;
    let _third = open(&proxy).await;

    // The fourth is accepted and closed before it is read.
    let mut fourth = TcpStream::connect(proxy.addr).await.unwrap();
    let _ = fourth
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = fourth.read_to_end(&mut answer).await;
    assert!(
        read.is_err() || answer.is_empty(),
        "no answer past the ceiling: {}",
        String::from_utf8_lossy(&answer)
    );

    // Closing one frees its slot (once the proxy has seen it close).
    drop(first);
    let mut served = false;
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = stream
            .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(served, "a freed slot serves a new connection");
}
