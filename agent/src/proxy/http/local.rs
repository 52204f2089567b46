//! Locally generated responses, with Envoy's status codes and bodies.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::proxy::body::RespBody;

pub const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
pub const UPSTREAM_TIMEOUT: &str = "upstream request timeout";
pub const CONNECT_FAILURE: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
pub const RESET: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
pub const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
pub const TLS_VERIFY_FAILURE: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: certificate verify failed";
pub const TLS_FAILURE: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: TLS error: handshake failed";
pub const REQUEST_TIMEOUT: &str = "request timeout";

/// A local reply; a non-empty body is sent as `text/plain`.
pub fn reply(status: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut r = Response::new(RespBody::local(body));
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// 503 from a circuit breaker, flagged like Envoy's `x-envoy-overloaded`.
pub fn overloaded() -> Response<RespBody> {
    let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, OVERFLOW);
    r.headers_mut()
        .insert("x-weir-overloaded", HeaderValue::from_static("true"));
    r
}
