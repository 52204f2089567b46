//! gRPC-aware status counting: a response with `content-type:
//! application/grpc*` is counted by its `grpc-status`, from the headers
//! (trailers-only responses) or else from the trailers as they pass.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http::header::CONTENT_TYPE;
use http_body::{Body, Frame, SizeHint};

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
/// (or `unknown` when the stream ends without one).
pub struct GrpcBody {
    inner: RespBody,
    metrics: Option<GrpcMetrics>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(t) = f.trailers_ref()
                    && let Some(m) = this.metrics.take()
                {
                    m.status(t.get(&GRPC_STATUS).map_or(b"", |v| v.as_bytes()));
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(m) = this.metrics.take() {
                    m.status(b"");
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
