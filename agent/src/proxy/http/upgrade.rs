//! HTTP/1.1 upgrades (WebSocket and the listener's other `upgrade_types`),
//! as Envoy's `upgrade_configs`: an upgrade the listener allows is sent
//! upstream with its `Connection: upgrade` / `Upgrade` headers; when the
//! upstream answers 101 both connections are handed over from hyper and
//! spliced. An upgrade the listener does not allow gets Envoy's 403.

use http::header::{CONNECTION, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// What a request asked to upgrade to.
pub struct Requested {
    /// The `Upgrade` header, as sent.
    pub protocol: HeaderValue,
    /// The downstream connection, once hyper has sent the 101.
    pub downstream: OnUpgrade,
}

/// Why an upgrade request is not tunnelled.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not in the listener's `upgrade_types` (Envoy: 403, `upgrade_failed`).
    NotAllowed,
}

/// The upgrade an HTTP/1.1 request asks for, with its downstream
/// connection, if any. `Err` when the listener does not allow it.
pub fn requested<S: AsRef<str>>(
    parts: &mut Parts,
    allowed: &[S],
) -> Result<Option<Requested>, Refused> {
    drop_h2c(&mut parts.headers);
    let Some(protocol) = protocol(parts, allowed)? else {
        return Ok(None);
    };
    // hyper's server puts it there for requests with upgrade headers.
    let downstream = parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or(Refused::NotAllowed)?;
    Ok(Some(Requested {
        protocol,
        downstream,
    }))
}

/// The protocol an HTTP/1.1 request asks to upgrade to: `Connection` lists
/// `upgrade` and `Upgrade` names it.
fn protocol<S: AsRef<str>>(parts: &Parts, allowed: &[S]) -> Result<Option<HeaderValue>, Refused> {
    if parts.version != Version::HTTP_11 || !connection_has_upgrade(&parts.headers) {
        return Ok(None);
    }
    let Some(protocol) = parts.headers.get(UPGRADE) else {
        return Ok(None);
    };
    let wanted = protocol.to_str().unwrap_or("").trim().to_ascii_lowercase();
    if !allowed.iter().any(|a| a.as_ref() == wanted) {
        return Err(Refused::NotAllowed);
    }
    Ok(Some(protocol.clone()))
}

/// An HTTP/1.1 client offering to switch to cleartext HTTP/2 (`Upgrade:
/// h2c`) is served as HTTP/1.1 without its upgrade headers, as Envoy's
/// HTTP/1 codec does; the offer is not an upgrade anyone asked weir to allow.
fn drop_h2c(headers: &mut HeaderMap) {
    let h2c = headers
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"h2c"));
    if h2c {
        // What `Connection` names goes with it (fuzzing found
        // `Connection: Upgrade, x-secret` forwarding `x-secret`).
        super::hop::strip_connection_options(headers, false);
        headers.remove(UPGRADE);
        headers.remove(&HTTP2_SETTINGS);
        headers.remove(CONNECTION);
    }
}

static HTTP2_SETTINGS: http::HeaderName = http::HeaderName::from_static("http2-settings");

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The upstream accepted (101): splice the two connections once hyper has
/// handed both over; ends when either side closes.
pub fn tunnel<B>(downstream: OnUpgrade, upstream: &mut Response<B>, protocol: &HeaderValue) {
    let upstream = hyper::upgrade::on(upstream);
    let protocol = protocol.to_str().unwrap_or("?").to_owned();
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(both) => both,
            Err(e) => {
                log::debug!("{protocol} upgrade not completed: {e}");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        if let Err(e) = crate::proxy::copy::copy_both(&mut down, &mut up).await {
            log::debug!("{protocol} tunnel ended: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri("/chat");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn upgrade_requests_by_listener_setting() {
        let ws = ["websocket".to_owned()];
        let upgrade = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert_eq!(
            protocol(&parts(&upgrade), &ws),
            Ok(Some(HeaderValue::from_static("WebSocket")))
        );
        assert_eq!(
            protocol(&parts(&upgrade), &[] as &[&str]),
            Err(Refused::NotAllowed)
        );
        let other = [("connection", "upgrade"), ("upgrade", "spdy/3")];
        assert_eq!(protocol(&parts(&other), &ws), Err(Refused::NotAllowed));
        // Not an upgrade: no Connection token, no Upgrade header, or not HTTP/1.1.
        assert_eq!(protocol(&parts(&[("upgrade", "websocket")]), &ws), Ok(None));
        assert_eq!(
            protocol(&parts(&[("connection", "upgrade")]), &ws),
            Ok(None)
        );
        let mut h2 = parts(&upgrade);
        h2.version = Version::HTTP_2;
        assert_eq!(protocol(&h2, &ws), Ok(None));
        // Without the connection hyper hands over, there is nothing to splice.
        assert_eq!(
            requested(&mut parts(&upgrade), &ws).err(),
            Some(Refused::NotAllowed)
        );
    }

    #[test]
    fn an_h2c_offer_is_served_as_http1_without_its_upgrade_headers() {
        let mut h2c = parts(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("accept", "*/*"),
        ]);
        assert!(requested(&mut h2c, &[] as &[&str]).unwrap().is_none());
        let names: Vec<_> = h2c.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn an_h2c_offer_takes_the_headers_its_connection_names_along() {
        let mut h2c = parts(&[
            ("connection", "Upgrade, HTTP2-Settings, x-secret"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("x-secret", "1"),
            ("accept", "*/*"),
        ]);
        assert!(requested(&mut h2c, &[] as &[&str]).unwrap().is_none());
        let names: Vec<_> = h2c.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }
}
