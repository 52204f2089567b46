//! What goes downstream: a local reply, an upstream response body (which
//! returns its connection to the pool when complete), or a gRPC one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;

use crate::proxy::access_log::{Entry, ResponseFlags};
use crate::proxy::upstream::pool::Pooled;

/// Why a response body stopped short.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The route timeout ran out while the upstream body was still coming (the
/// downstream stream is reset, as Envoy does once headers went out).
#[derive(Debug, thiserror::Error)]
#[error("upstream request timeout while streaming the response body")]
pub struct BodyTimeout;

/// The route deadline of an upstream response body, and what counts it.
/// Its timer is made only when the body has to wait: a body that is all
/// there when the head is (most small responses) costs a clock read per
/// frame, not a timer registered and cancelled (a lock of the time driver
/// each) and a heap allocation per request.
pub struct BodyDeadline {
    at: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeouts: IntCounter,
}

impl BodyDeadline {
    pub fn new(at: tokio::time::Instant, timeouts: IntCounter) -> Self {
        Self {
            at,
            sleep: None,
            timeouts,
        }
    }

    /// Whether the deadline has passed (counted when it has); `waiting`:
    /// the body is about to wait, so the timer must wake it then.
    fn passed(&mut self, cx: &mut Context<'_>, waiting: bool) -> bool {
        if waiting && self.sleep.is_none() {
            self.sleep = Some(Box::pin(tokio::time::sleep_until(self.at)));
        }
        let passed = match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => tokio::time::Instant::now() >= self.at,
        };
        if passed {
            self.timeouts.inc();
        }
        passed
    }
}

/// A response body sent downstream: a local reply, or the upstream body
/// (which returns its connection to the pool when it ends).
pub enum RespBody {
    Local(Option<Bytes>),
    Upstream {
        inner: Incoming,
        conn: Option<Pooled>,
        /// The cluster's `upstream_cx_rx_bytes_total` (none: counted elsewhere).
        rx_bytes: Option<IntCounter>,
        /// Envoy's route timeout covers the response body too.
        deadline: Option<BodyDeadline>,
    },
    /// A gRPC response whose trailers are counted (`http::grpc`).
    Grpc(Box<crate::proxy::http::grpc::GrpcBody>),
    /// A response the listener's access log waits for (`access_log`).
    Logged(Box<Logged>),
}

/// A response body counted for the access log, whose line is written when
/// it ends: complete, failed, or dropped unfinished (the client left: `DC`).
pub struct Logged {
    inner: RespBody,
    entry: Entry,
}

impl Drop for Logged {
    fn drop(&mut self) {
        // `finish` writes once: a body that ended already wrote its line.
        let how = if self.inner.is_end_stream() {
            ResponseFlags::NONE
        } else {
            ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION
        };
        self.entry.finish(how);
    }
}

impl RespBody {
    pub fn local(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        Self::Local(if b.is_empty() { None } else { Some(b) })
    }

    pub fn empty() -> Self {
        Self::Local(None)
    }

    /// `inner`, its end written to the access log through `entry`.
    pub fn logged(inner: Self, entry: Entry) -> Self {
        Self::Logged(Box::new(Logged { inner, entry }))
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
                // The deadline is checked before the body is read and, when
                // the body has to wait, set to wake it then.
                let mut r = Poll::Pending;
                for waiting in [false, true] {
                    if deadline.as_mut().is_some_and(|d| d.passed(cx, waiting)) {
                        *deadline = None;
                        drop(conn.take());
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                    }
                    if waiting {
                        break;
                    }
                    r = Pin::new(&mut *inner).poll_frame(cx);
                    if r.is_ready() {
                        break;
                    }
                }
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref()
                            && let Some(c) = rx_bytes
                        {
                            c.inc_by(d.len() as u64);
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
            Self::Grpc(g) => {
                let r = Pin::new(&mut g.inner).poll_frame(cx);
                g.saw(&r);
                r
            }
            Self::Logged(l) => {
                let r = Pin::new(&mut l.inner).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            l.entry.sent(d.len());
                        }
                        if l.inner.is_end_stream() {
                            l.entry.finish(ResponseFlags::NONE);
                        }
                    }
                    Poll::Ready(None) => l.entry.finish(ResponseFlags::NONE),
                    Poll::Ready(Some(Err(e))) => l.entry.finish(if e.is::<BodyTimeout>() {
                        ResponseFlags::UPSTREAM_REQUEST_TIMEOUT
                    } else {
                        ResponseFlags::UPSTREAM_CONNECTION_TERMINATION
                    }),
                    Poll::Pending => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Local(b) => b.is_none(),
            Self::Upstream { inner, .. } => inner.is_end_stream(),
            Self::Grpc(g) => g.inner.is_end_stream(),
            Self::Logged(l) => l.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Upstream { inner, .. } => inner.size_hint(),
            Self::Grpc(g) => g.inner.size_hint(),
            Self::Logged(l) => l.inner.size_hint(),
        }
    }
}
