//! Locally generated responses, with Envoy's status codes and bodies.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::proxy::access_log::ResponseFlags;
use crate::proxy::body::response::RespBody;

pub const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
pub const UPSTREAM_TIMEOUT: &str = "upstream request timeout";
pub const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
pub const REQUEST_TIMEOUT: &str = "request timeout";
/// Envoy's dynamic forward proxy filter replies.
pub const DNS_RESOLUTION_FAILURE: &str = "DNS resolution failure";
pub const DNS_CACHE_OVERFLOW: &str = "DNS cache overflow";
/// A forward proxy request for weir's own admin or stats listener.
pub const OWN_LISTENER: &str = "destination is this proxy's admin or stats listener";

/// Why an upstream exchange failed before a response head: Envoy's reset
/// reasons, as its 503 bodies name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// Refused or unreachable.
    RemoteConnectionFailure,
    ConnectionTimeout,
    TlsVerifyFailed,
    TlsHandshakeFailed,
    /// The connection closed before the response head.
    ConnectionTermination,
    /// An HTTP/2 upstream refused the stream.
    RefusedStream,
    /// The request's source could not open a connection (an un-enrolled
    /// pod's, `upstream::egress`): not the upstream's fault.
    LocalReset,
}

impl ResetReason {
    fn text(self) -> &'static str {
        match self {
            Self::RemoteConnectionFailure => "remote connection failure",
            Self::ConnectionTimeout => "connection timeout",
            Self::TlsVerifyFailed => {
                "remote connection failure, transport failure reason: TLS error: certificate verify failed"
            }
            Self::TlsHandshakeFailed => {
                "remote connection failure, transport failure reason: TLS error: handshake failed"
            }
            Self::ConnectionTermination => "connection termination",
            Self::RefusedStream => "remote refused stream reset",
            Self::LocalReset => "local reset",
        }
    }

    /// Envoy's response flag for this reason.
    fn flag(self) -> ResponseFlags {
        match self {
            Self::RemoteConnectionFailure
            | Self::ConnectionTimeout
            | Self::TlsVerifyFailed
            | Self::TlsHandshakeFailed => ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            Self::ConnectionTermination => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            Self::RefusedStream => ResponseFlags::UPSTREAM_REMOTE_RESET,
            Self::LocalReset => ResponseFlags::LOCAL_RESET,
        }
    }
}

/// `r` marked with Envoy's response `flags` (read by the access log). Only
/// failures carry flags, so a served response pays nothing for them.
fn flagged(mut r: Response<RespBody>, flags: ResponseFlags) -> Response<RespBody> {
    r.extensions_mut().insert(flags);
    r
}

/// Envoy's 404 for a request no virtual host or route takes (`NR`).
pub fn no_route() -> Response<RespBody> {
    flagged(
        reply(StatusCode::NOT_FOUND, ""),
        ResponseFlags::NO_ROUTE_FOUND,
    )
}

/// 503 for a cluster with no endpoint to pick (`UH`).
pub fn no_healthy_upstream() -> Response<RespBody> {
    flagged(
        reply(StatusCode::SERVICE_UNAVAILABLE, NO_HEALTHY_UPSTREAM),
        ResponseFlags::NO_HEALTHY_UPSTREAM,
    )
}

/// 504 when the route's or a try's deadline passed (`UT`).
pub fn upstream_timeout() -> Response<RespBody> {
    flagged(
        reply(StatusCode::GATEWAY_TIMEOUT, UPSTREAM_TIMEOUT),
        ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
    )
}

/// 503 from the forward proxy's DNS cache (`DF`), `body` naming why.
pub fn dns_failure(body: &'static str) -> Response<RespBody> {
    flagged(
        reply(StatusCode::SERVICE_UNAVAILABLE, body),
        ResponseFlags::DNS_RESOLUTION_FAILED,
    )
}

/// A reply for a request whose client failed it (its body broke off: `DC`).
pub fn downstream_failed(r: Response<RespBody>) -> Response<RespBody> {
    flagged(r, ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION)
}

/// Envoy's 503 for an upstream that failed before answering; after retries
/// it names the latest attempt's reason ("retried and the latest reset reason").
pub fn upstream_reset(reason: ResetReason, retried: bool) -> Response<RespBody> {
    let body = format!(
        "upstream connect error or disconnect/reset before headers. {}reset reason: {}",
        if retried {
            "retried and the latest "
        } else {
            ""
        },
        reason.text()
    );
    let mut r = Response::new(RespBody::local(body));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let retries = if retried {
        ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
    } else {
        ResponseFlags::NONE
    };
    flagged(r, reason.flag().with(retries))
}

/// A local reply (a route's direct response too); a non-empty body is sent
/// as `text/plain`, as Envoy's local replies are.
pub fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    let body = body.into();
    let text = !body.is_empty();
    let mut r = Response::new(RespBody::local(body));
    *r.status_mut() = status;
    if text {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// 503 from a circuit breaker, flagged `x-envoy-overloaded` as Envoy does.
pub fn overloaded() -> Response<RespBody> {
    let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, OVERFLOW);
    r.headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    flagged(r, ResponseFlags::UPSTREAM_OVERFLOW)
}

/// Header naming why weir refused a request as overloaded (a short label).
pub const X_WEIR_OVERLOAD_REASON: &str = "x-weir-overload-reason";

/// [`overloaded`], for a request its source had no place for: the reason
/// is named in [`X_WEIR_OVERLOAD_REASON`].
pub fn overloaded_for(reason: &'static str) -> Response<RespBody> {
    let mut r = overloaded();
    r.headers_mut()
        .insert(X_WEIR_OVERLOAD_REASON, HeaderValue::from_static(reason));
    r
}

/// 403 for an upgrade the listener does not allow, closing the connection
/// as Envoy does (its `upgrade_failed`).
pub fn upgrade_refused() -> Response<RespBody> {
    let mut r = reply(StatusCode::FORBIDDEN, "");
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}
