//! Map a failed handshake's error to a bounded reason.

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
