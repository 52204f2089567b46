//! TLS with rustls (ring provider): termination on listeners (`server`),
//! origination to clusters (`client`), PEM files and inline PEM (`pem`), and the
//! classification of handshake failures for metrics and logs (`failure`),
//! SNI matching shared with interception (`server_names`), and the refusal
//! of client-initiated renegotiation (`renegotiation`).

pub mod client;
pub mod failure;
pub mod pem;
pub mod renegotiation;
pub mod server;
pub mod server_names;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;

use crate::config::TlsVersion;

/// A handshake must finish within this, else the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field}: reading {}: {source}", file.display())]
    Read {
        field: String,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{field}: {origin}: {reason}")]
    Pem {
        field: String,
        origin: PemOrigin,
        reason: String,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// Where PEM that did not parse came from; never its text, which may be a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemOrigin {
    File(PathBuf),
    Inline,
}

impl std::fmt::Display for PemOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Inline => f.write_str("inline PEM"),
        }
    }
}

/// The process-wide crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Protocol versions allowed from `min` up.
pub fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static ALL: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => &ALL,
        TlsVersion::Tls13 => &TLS13,
    }
}
