//! What goes upstream: a request body streamed from downstream or
//! buffered (so the request can be retried).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;

use crate::proxy::access_log::Exchange;

/// A request body sent upstream: streamed from downstream, or buffered
/// (so the request can be retried).
pub enum ReqBody {
    Stream {
        inner: Incoming,
        tx_bytes: IntCounter,
        /// Set when reading from downstream failed (malformed chunked
        /// encoding, client gone mid-body): the upstream exchange then
        /// fails through no fault of the upstream's.
        fault: DownstreamFault,
        /// Counts the body for the access log, when the listener logs.
        exchange: Option<Exchange>,
    },
    Buffered(Option<Bytes>),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Stream {
                inner,
                tx_bytes,
                fault,
                exchange,
            } => {
                let r = Pin::new(inner).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            tx_bytes.inc_by(d.len() as u64);
                            if let Some(x) = exchange {
                                x.received(d.len());
                            }
                        }
                    }
                    Poll::Ready(Some(Err(_))) => fault.set(),
                    _ => {}
                }
                r
            }
            Self::Buffered(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream { inner, .. } => inner.is_end_stream(),
            Self::Buffered(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream { inner, .. } => inner.size_hint(),
            Self::Buffered(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Whether a streamed request body failed on the downstream side; shared
/// between the body (which sets it) and the request's forwarding (which
/// reads it to tell a client's fault from an upstream's).
#[derive(Clone, Default)]
pub struct DownstreamFault(Arc<AtomicBool>);

impl DownstreamFault {
    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
