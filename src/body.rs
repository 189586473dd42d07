//! The response body type: either bytes the proxy made itself, or the upstream's body
//! streamed through frame by frame. A refusal's body also carries its envelope code,
//! so that the metrics and the access log read it off the response without a
//! per-response extensions map (two allocations on every refusal).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

/// A body that is a ready buffer or a streamed `Incoming`. An enum rather than a boxed
/// trait object, so a response costs no extra allocation.
#[derive(Debug)]
pub enum Body {
    /// A complete body; `None` once sent.
    Full(Option<Bytes>),
    /// A refusal's JSON envelope (`None` once sent), and its code.
    Refusal(Option<Bytes>, &'static str),
    /// Streamed from a peer.
    Stream(Incoming),
}

impl Body {
    /// A complete body.
    #[must_use]
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body::Full((!bytes.is_empty()).then_some(bytes))
    }

    /// An empty body.
    #[must_use]
    pub fn empty() -> Body {
        Body::Full(None)
    }

    /// A refusal's envelope, answered with its `code`.
    #[must_use]
    pub fn refusal(envelope: Bytes, code: &'static str) -> Body {
        Body::Refusal(Some(envelope), code)
    }

    /// The envelope code when this is a refusal's body.
    #[must_use]
    pub fn refusal_code(&self) -> Option<&'static str> {
        match self {
            Body::Refusal(_, code) => Some(code),
            Body::Full(_) | Body::Stream(_) => None,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Full(bytes) | Body::Refusal(bytes, _) => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
            Body::Stream(incoming) => Pin::new(incoming).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) | Body::Refusal(bytes, _) => bytes.is_none(),
            Body::Stream(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) | Body::Refusal(bytes, _) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Stream(incoming) => incoming.size_hint(),
        }
    }
}
