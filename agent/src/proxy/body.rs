//! Body types: what goes upstream ([`ReqBody`]) and what goes downstream ([`RespBody`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;

use super::upstream::pool::Pooled;

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
            } => {
                let r = Pin::new(inner).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            tx_bytes.inc_by(d.len() as u64);
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

/// Why a response body stopped short.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The route timeout ran out while the upstream body was still coming (the
/// downstream stream is reset, as Envoy does once headers went out).
#[derive(Debug, thiserror::Error)]
#[error("upstream request timeout while streaming the response body")]
pub struct BodyTimeout;

/// The route deadline of an upstream response body, and what counts it.
pub struct BodyDeadline {
    pub sleep: Pin<Box<tokio::time::Sleep>>,
    pub timeouts: IntCounter,
}

/// A response body sent downstream: a local reply, or the upstream body
/// (which returns its connection to the pool when it ends).
pub enum RespBody {
    Local(Option<Bytes>),
    Upstream {
        inner: Incoming,
        conn: Option<Pooled>,
        rx_bytes: IntCounter,
        /// Envoy's route timeout covers the response body too.
        deadline: Option<BodyDeadline>,
    },
    /// A gRPC response whose trailers are counted (`http::grpc`).
    Grpc(Box<crate::proxy::http::grpc::GrpcBody>),
}

impl RespBody {
    pub fn local(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        Self::Local(if b.is_empty() { None } else { Some(b) })
    }

    pub fn empty() -> Self {
        Self::Local(None)
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Local(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            Self::Upstream {
                inner,
                conn,
                rx_bytes,
                deadline,
            } => {
                if let Some(d) = deadline
                    && d.sleep.as_mut().poll(cx).is_ready()
                {
                    d.timeouts.inc();
                    *deadline = None;
                    drop(conn.take());
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
                let r = Pin::new(&mut *inner).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            rx_bytes.inc_by(d.len() as u64);
                        }
                        if inner.is_end_stream()
                            && let Some(c) = conn.take()
                        {
                            c.release();
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(c) = conn.take() {
                            c.release();
                        }
                    }
                    // An errored body leaves the connection unusable: drop it.
                    Poll::Ready(Some(Err(_))) => drop(conn.take()),
                    Poll::Pending => {}
                }
                r.map(|o| o.map(|f| f.map_err(BodyError::from)))
            }
            Self::Grpc(g) => Pin::new(&mut **g).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Local(b) => b.is_none(),
            Self::Upstream { inner, .. } => inner.is_end_stream(),
            Self::Grpc(g) => g.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Upstream { inner, .. } => inner.size_hint(),
            Self::Grpc(g) => g.size_hint(),
        }
    }
}
