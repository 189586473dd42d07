//! A deadline on a connection's first bytes.
//!
//! hyper-util's `auto` server reads the first bytes of a connection to tell HTTP/1
//! from HTTP/2 (the 24-byte HTTP/2 preface), with no timeout of its own; HTTP/1's
//! header read timeout starts only once that is decided. A client that connects and
//! sends nothing, or stops inside the preface, would hold the connection forever.
//! [`FirstBytes`] fails any read still waiting when the deadline passes, until the
//! first [`PREFACE_LEN`] bytes have arrived; then the protocol's own timeouts apply.
//! Without a deadline (the admin listener, which speaks only HTTP/1.1, and the
//! injector webhook) it passes reads and writes straight through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Bytes after which the protocol is known: the length of the HTTP/2 preface.
const PREFACE_LEN: usize = 24;

/// A stream whose first [`PREFACE_LEN`] bytes must arrive within a deadline.
#[derive(Debug)]
pub(crate) struct FirstBytes<S> {
    inner: S,
    /// Running until the first bytes are in; `None` after.
    deadline: Option<Pin<Box<Sleep>>>,
    read: usize,
}

impl<S> FirstBytes<S> {
    /// `inner`, whose first bytes must arrive within `timeout` from now (if there
    /// is one).
    pub(crate) fn new(inner: S, timeout: Option<Duration>) -> FirstBytes<S> {
        FirstBytes {
            inner,
            deadline: timeout.map(|timeout| Box::pin(tokio::time::sleep(timeout))),
            read: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if this.deadline.is_some() {
                    this.read += buf.filled().len() - before;
                    if this.read >= PREFACE_LEN {
                        this.deadline = None;
                    }
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request began within the header read timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_one_past_the_preface_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let mut silent = FirstBytes::new(server, Some(Duration::from_secs(10)));
        let mut buf = [0u8; 8];
        let error = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut talking = FirstBytes::new(server, Some(Duration::from_secs(10)));
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut preface = [0u8; 24];
        talking.read_exact(&mut preface).await.unwrap();
        // Past the preface, waiting is the protocol's business.
        let read = tokio::time::timeout(Duration::from_secs(60), talking.read(&mut buf)).await;
        assert!(read.is_err(), "no deadline after the first bytes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_stalled_inside_the_preface_times_out() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut stalled = FirstBytes::new(server, Some(Duration::from_secs(10)));
        client.write_all(b"PRI * HTT").await.unwrap();
        let mut buf = [0u8; 24];
        let n = stalled.read(&mut buf).await.unwrap();
        assert_eq!(n, 9);
        let error = stalled.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_a_silent_peer_is_left_alone() {
        let (_client, server) = tokio::io::duplex(64);
        let mut silent = FirstBytes::new(server, None);
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(60), silent.read(&mut buf)).await;
        assert!(read.is_err(), "no deadline at all");
    }
}
