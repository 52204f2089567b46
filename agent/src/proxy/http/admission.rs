//! Checks on a request head before it is routed, refusing what Envoy 1.40
//! refuses (checked against it): an ambiguous, missing or malformed
//! authority (400, `authority`), a method with lower-case letters (400:
//! methods are case-sensitive, so `get` must not pass a `methods: [GET]`
//! match nor reach an upstream that reads it as GET), and a transfer coding
//! other than `chunked` (501, as Envoy and nginx). Each refusal closes the
//! connection, as Envoy's codec errors do.

use http::header::{CONNECTION, TRANSFER_ENCODING};
use http::{HeaderValue, Request, Response, StatusCode};

use super::authority::{self, Invalid};
use super::local;
use crate::proxy::body::response::RespBody;

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Authority(#[from] Invalid),
    #[error("method with lower-case letters")]
    Method,
    #[error("transfer coding other than chunked")]
    TransferCoding,
}

impl Refusal {
    /// The local reply: Envoy's status and body, `connection: close`.
    pub fn reply(self) -> Response<RespBody> {
        let (status, body) = match self {
            Self::TransferCoding => (StatusCode::NOT_IMPLEMENTED, "Not Implemented"),
            _ => (StatusCode::BAD_REQUEST, "Bad Request"),
        };
        let mut r = local::reply(status, body);
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        r
    }
}

/// Check `req` and make `Host` its one authority.
pub fn check<B>(req: &mut Request<B>) -> Result<(), Refusal> {
    if req
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
    {
        return Err(Refusal::Method);
    }
    // hyper takes a body as chunked when the last coding is `chunked`
    // and refuses other codings only when they come alone; Envoy knows
    // no coding but chunked.
    let mut codings = req.headers().get_all(TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next()
        && (codings.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(Refusal::TransferCoding);
    }
    let (uri, version) = (req.uri().clone(), req.version());
    authority::normalize(&uri, version, req.headers_mut())?;
    Ok(())
}
