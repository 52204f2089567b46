//! Server name indication from a TLS ClientHello (RFC 8446 4.1.2, RFC 6066 3).
//! Read only: the connection is passed through, never terminated.

/// Handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Extension type `server_name`.
const EXT_SERVER_NAME: u16 = 0;
/// `NameType` `host_name`.
const HOST_NAME: u8 = 0;

/// A cursor over a byte slice; every read is bounds checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a `len_bytes`-byte length prefix.
    fn vec(&mut self, len_bytes: usize) -> Option<&'a [u8]> {
        let len = match len_bytes {
            1 => usize::from(self.u8()?),
            2 => usize::from(self.u16()?),
            _ => return None,
        };
        self.take(len)
    }
}

/// The host name from the `server_name` extension of the ClientHello at the
/// start of `handshake` (the payload of the first TLS record), lower-cased.
/// `None` when absent, malformed, not ASCII, or cut off before it.
pub fn server_name(handshake: &[u8]) -> Option<String> {
    let mut r = Reader(handshake);
    if r.u8()? != CLIENT_HELLO {
        return None;
    }
    let len = r.take(3)?;
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    // A ClientHello split over several records is parsed as far as it goes.
    let body = &r.0[..len.min(r.0.len())];
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec(1)?; // legacy_session_id
    r.vec(2)?; // cipher_suites
    r.vec(1)?; // legacy_compression_methods
    let mut exts = Reader(r.vec(2).unwrap_or(r.0));
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec(2)?;
        if ty != EXT_SERVER_NAME {
            continue;
        }
        let mut list = Reader(Reader(data).vec(2)?);
        while !list.0.is_empty() {
            let kind = list.u8()?;
            let name = list.vec(2)?;
            if kind == HOST_NAME {
                let s = std::str::from_utf8(name).ok()?;
                // RFC 6066 forbids a trailing dot; rustls strips one, and
                // so does this, so one host gets one name (fuzzing found it).
                let s = s.strip_suffix('.').unwrap_or(s);
                let valid = !s.is_empty()
                    && s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_');
                return valid.then(|| s.to_ascii_lowercase());
            }
        }
        return None;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The first TLS record a real client (rustls) sends for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn real_client_hello() {
        let rec = client_hello("Reviews.Bookinfo.svc.cluster.local");
        assert_eq!(rec[0], 0x16);
        let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
        assert_eq!(rec.len(), 5 + len);
        assert_eq!(
            server_name(&rec[5..]).as_deref(),
            Some("reviews.bookinfo.svc.cluster.local")
        );
        // classified by the detector as TLS with the same name
        assert_eq!(
            super::super::detect::classify(&rec),
            Some(super::super::detect::Detected::Tls {
                sni: Some("reviews.bookinfo.svc.cluster.local".into())
            })
        );
    }

    #[test]
    fn no_sni_for_ip_addresses() {
        // rustls sends no server_name for an IP address (RFC 6066).
        let rec = client_hello("127.0.0.1");
        assert_eq!(server_name(&rec[5..]), None);
    }

    #[test]
    fn truncated_and_garbage_input() {
        let rec = client_hello("example.com");
        for cut in 0..rec.len() - 5 {
            // never panics; finds the name only once it is all there
            let _ = server_name(&rec[5..5 + cut]);
        }
        assert_eq!(server_name(b"\x02\x00\x00\x00"), None);
        assert_eq!(server_name(&[0xff; 64]), None);
    }
}
