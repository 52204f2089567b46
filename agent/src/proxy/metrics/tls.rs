//! TLS families: handshakes and their failures by reason, per listener
//! (termination) and per cluster (origination); certificate reloads.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::family::{MetricsError, counter};

/// Why a handshake failed: the `reason` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer's certificate did not verify (unknown issuer, name
    /// mismatch, expired, bad signature).
    VerifyFailed,
    /// A client certificate was required and none was sent.
    NoClientCertificate,
    /// The peer refused our certificate or the handshake with an alert.
    PeerAlert,
    /// No common TLS version or cipher suite.
    Incompatible,
    /// No common ALPN protocol.
    NoApplicationProtocol,
    /// The peer did not speak TLS (for example plain HTTP to a TLS port).
    NotTls,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// The connection closed or failed during the handshake.
    Io,
    Other,
}

impl HandshakeFailure {
    pub const ALL: [Self; 9] = [
        Self::VerifyFailed,
        Self::NoClientCertificate,
        Self::PeerAlert,
        Self::Incompatible,
        Self::NoApplicationProtocol,
        Self::NotTls,
        Self::Timeout,
        Self::Io,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyFailed => "verify_failed",
            Self::NoClientCertificate => "no_client_certificate",
            Self::PeerAlert => "peer_alert",
            Self::Incompatible => "incompatible",
            Self::NoApplicationProtocol => "no_application_protocol",
            Self::NotTls => "not_tls",
            Self::Timeout => "timeout",
            Self::Io => "io",
            Self::Other => "other",
        }
    }
}

pub(super) struct Families {
    ds_ok: IntCounterVec,
    ds_fail: IntCounterVec,
    us_ok: IntCounterVec,
    us_fail: IntCounterVec,
    reloads: IntCounterVec,
}

impl Families {
    pub(super) fn new(r: &Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            ds_ok: counter(
                r,
                "weir_tls_downstream_handshakes_total",
                "TLS handshakes completed with clients (listener ssl.handshake).",
                &["listener"],
            )?,
            ds_fail: counter(
                r,
                "weir_tls_downstream_handshake_failures_total",
                "TLS handshakes with clients that failed, by reason (ssl.connection_error, ssl.fail_verify_*).",
                &["listener", "reason"],
            )?,
            us_ok: counter(
                r,
                "weir_tls_upstream_handshakes_total",
                "TLS handshakes completed with upstream endpoints (cluster ssl.handshake).",
                &["cluster"],
            )?,
            us_fail: counter(
                r,
                "weir_tls_upstream_handshake_failures_total",
                "TLS handshakes with upstream endpoints that failed, by reason (cluster ssl.connection_error, ssl.fail_verify_*).",
                &["cluster", "reason"],
            )?,
            reloads: counter(
                r,
                "weir_tls_certificate_reloads_total",
                "Listener certificate files re-read after a change, by outcome (a failure keeps the old certificates).",
                &["listener", "outcome"],
            )?,
        })
    }

    pub(super) fn listener(&self, name: &str) -> TlsMetrics {
        TlsMetrics {
            handshakes: self.ds_ok.with_label_values(&[name]),
            failures: HandshakeFailure::ALL
                .map(|f| self.ds_fail.with_label_values(&[name, f.as_str()])),
            reloads: Some(CertReloads {
                ok: self.reloads.with_label_values(&[name, "success"]),
                failed: self.reloads.with_label_values(&[name, "failure"]),
            }),
        }
    }

    pub(super) fn cluster(&self, name: &str) -> TlsMetrics {
        TlsMetrics {
            handshakes: self.us_ok.with_label_values(&[name]),
            failures: HandshakeFailure::ALL
                .map(|f| self.us_fail.with_label_values(&[name, f.as_str()])),
            reloads: None,
        }
    }
}

/// TLS handles of one listener or cluster, resolved once.
#[derive(Clone)]
pub struct TlsMetrics {
    pub handshakes: IntCounter,
    failures: [IntCounter; 9],
    /// Listeners only: they reload their certificate files.
    pub reloads: Option<CertReloads>,
}

/// Certificate reloads of one listener, by outcome.
#[derive(Clone)]
pub struct CertReloads {
    pub ok: IntCounter,
    pub failed: IntCounter,
}

impl TlsMetrics {
    pub fn failure(&self, f: HandshakeFailure) {
        let i = HandshakeFailure::ALL
            .iter()
            .position(|x| *x == f)
            .unwrap_or(8);
        self.failures[i].inc();
    }
}
