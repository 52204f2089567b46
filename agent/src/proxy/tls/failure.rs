//! Map a failed handshake's error to a bounded reason, and log failures at
//! a bounded rate: a scanner or a flood of bad handshakes must not fill the
//! node's logs (every failure is still counted in the metrics).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::proxy::metrics::HandshakeFailure;

/// The reason label for a handshake that ended with `e` (tokio-rustls
/// wraps rustls errors in `io::Error`).
pub fn classify(e: &std::io::Error) -> HandshakeFailure {
    use rustls::Error as E;
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return HandshakeFailure::Io;
    };
    match inner {
        E::InvalidCertificate(_) => HandshakeFailure::VerifyFailed,
        E::NoCertificatesPresented => HandshakeFailure::NoClientCertificate,
        E::AlertReceived(_) => HandshakeFailure::PeerAlert,
        E::PeerIncompatible(_) => HandshakeFailure::Incompatible,
        E::NoApplicationProtocol => HandshakeFailure::NoApplicationProtocol,
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => HandshakeFailure::NotTls,
        _ => HandshakeFailure::Other,
    }
}

/// At most one line per [`LogLimit::PERIOD`]; the next line says how many
/// were left out meanwhile.
#[derive(Default)]
pub struct LogLimit(Mutex<Option<(Instant, u64)>>);

impl LogLimit {
    pub const PERIOD: Duration = Duration::from_secs(10);

    /// `Some(n)` when a line may be written now, `n` lines having been
    /// suppressed since the last one.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let Ok(mut slot) = self.0.lock() else {
            return None;
        };
        match &mut *slot {
            Some((last, skipped)) if now.duration_since(*last) < Self::PERIOD => {
                *skipped += 1;
                None
            }
            Some((last, skipped)) => {
                let n = *skipped;
                *last = now;
                *skipped = 0;
                Some(n)
            }
            None => {
                *slot = Some((now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period() {
        let l = LogLimit::default();
        assert_eq!(l.admit(), Some(0));
        for _ in 0..100 {
            assert_eq!(l.admit(), None);
        }
        if let Ok(mut s) = l.0.lock() {
            let (last, _) = s.as_mut().unwrap();
            *last -= LogLimit::PERIOD;
        }
        assert_eq!(l.admit(), Some(100));
    }
}
