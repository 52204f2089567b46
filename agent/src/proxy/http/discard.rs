//! The unread body of a request weir answered itself (direct response, 404,
//! a refused method). HTTP/1 can only reuse the connection once the body is
//! off it, and hyper closes it silently otherwise, so the client's next
//! request on it fails. A small body is read and dropped within a bound,
//! keeping the connection; a bigger or slower one gets `connection: close`,
//! as Envoy always sends in this case.

use std::time::Duration;

use http::header::CONNECTION;
use http::{HeaderValue, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::proxy::body::response::RespBody;

/// The most body bytes read and dropped to keep a connection.
pub const MAX_DISCARD_BYTES: u64 = 1024 * 1024;

/// How long reading them may take.
pub const DISCARD_TIMEOUT: Duration = Duration::from_secs(1);

/// Read and drop `body` within the bounds; whether it all arrived.
pub async fn drain(mut body: Incoming) -> bool {
    let read = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(d) = frame.data_ref() {
                seen += d.len() as u64;
                if seen > MAX_DISCARD_BYTES {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DISCARD_TIMEOUT, read)
        .await
        .unwrap_or(false)
}

/// Make a local reply to a request with a body safe for HTTP/1 keep-alive:
/// drain what is left of the body, or say `connection: close`.
pub async fn settle(resp: &mut Response<RespBody>, unread: Option<Incoming>) {
    let kept = match unread {
        Some(b) if b.is_end_stream() => true,
        Some(b) => drain(b).await,
        // Partly sent upstream before weir answered: its rest is unknown.
        None => false,
    };
    if !kept {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}
