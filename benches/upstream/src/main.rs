//! The upstream of the end-to-end load benchmark: HTTP/1.1 keep-alive on one
//! current-thread runtime, answering every request with `200` and a fixed JSON body
//! of 100 bytes, or of 100 KiB for paths under `/v1/large`. It does as little as an
//! HTTP server can, so that what the benchmark measures is the proxy in front of it.
//!
//! `authmd-bench-upstream [ADDR]` (default `127.0.0.1:8080`).

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The small body: 100 bytes of JSON.
const SMALL: &[u8] = b"{\"ok\":true,\"from\":\"authmd-bench-upstream\",\"pad\":\".................................................\"}";
const _: () = assert!(SMALL.len() == 100);

/// The size of the large body.
const LARGE_LEN: usize = 100 * 1024;

fn large() -> Bytes {
    let mut body = Vec::with_capacity(LARGE_LEN);
    body.extend_from_slice(b"{\"pad\":\"");
    body.resize(LARGE_LEN - 2, b'.');
    body.extend_from_slice(b"\"}");
    Bytes::from(body)
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(text) => text
            .parse()
            .map_err(|_| std::io::Error::other(format!("not an address: {text}")))?,
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let large = large();
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let large = large.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let body = if request.uri().path().starts_with("/v1/large") {
                large.clone()
            } else {
                Bytes::from_static(SMALL)
            };
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            // A client that goes away mid-request is not the benchmark's concern.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
