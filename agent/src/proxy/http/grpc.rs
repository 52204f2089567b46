//! gRPC-aware status counting: a response with `content-type:
//! application/grpc*` is counted by its `grpc-status`, from the headers
//! (trailers-only responses) or else from the trailers as they pass.

use std::task::Poll;

use bytes::Bytes;
use http::Response;
use http::header::CONTENT_TYPE;
use http_body::Frame;

use crate::proxy::body::response::{BodyError, RespBody};
use crate::proxy::metrics::GrpcMetrics;

static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Count `resp` if it is gRPC; its body is wrapped to see the trailers.
pub fn observe(resp: Response<RespBody>, metrics: &GrpcMetrics) -> Response<RespBody> {
    let is_grpc = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return resp;
    }
    if let Some(s) = resp.headers().get(&GRPC_STATUS) {
        metrics.status(s.as_bytes());
        return resp;
    }
    resp.map(|inner| {
        RespBody::Grpc(Box::new(GrpcBody {
            inner,
            metrics: Some(metrics.clone()),
        }))
    })
}

/// A gRPC response body that counts the `grpc-status` of its trailers
/// (or `unknown` when the stream ends without one). Polled by
/// [`RespBody`]'s one `Body` impl, which hands each frame to [`GrpcBody::saw`].
pub struct GrpcBody {
    pub(crate) inner: RespBody,
    metrics: Option<GrpcMetrics>,
}

impl GrpcBody {
    /// Count the status once: from trailers, or `unknown` at an end without them.
    pub(crate) fn saw(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, BodyError>>>) {
        match polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(t) = f.trailers_ref()
                    && let Some(m) = self.metrics.take()
                {
                    m.status(t.get(&GRPC_STATUS).map_or(b"", |v| v.as_bytes()));
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(m) = self.metrics.take() {
                    m.status(b"");
                }
            }
            Poll::Pending => {}
        }
    }
}
