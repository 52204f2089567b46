//! TLS and HTTP/2 settings of listeners (termination) and clusters
//! (origination). Files are PEM; they are read and checked when the config
//! is built (`proxy::tls`), errors name the field and the file.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Downstream TLS on a listener (`listeners[].tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownstreamTlsConfig {
    /// At least one; chosen by SNI (`server_names`), the first is the default.
    pub certificates: Vec<TlsCertificateConfig>,
    /// ALPN protocols offered, in order of preference: `h2`, `http/1.1`.
    /// Default none, as an Envoy listener without `alpn_protocols`: clients
    /// fall back to HTTP/1.1 (seed 001's "server did not agree to a protocol").
    #[serde(default)]
    pub alpn: Vec<AlpnProtocol>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// PEM bundle of CAs that sign client certificates; enables mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `client_ca_file`).
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// A certificate chain and its private key, re-read when the files change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificateConfig {
    /// PEM: the leaf first, then intermediates.
    pub cert_chain_file: PathBuf,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key.
    pub private_key_file: PathBuf,
    /// SNI names served with this certificate (exact, or `*.suffix`);
    /// empty: only as the default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
}

/// Upstream TLS of a cluster (`clusters[].tls`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Server name sent (and verified); absent: the STRICT_DNS name of the
    /// first endpoint, else the endpoint's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// PEM bundle of trusted CAs; absent: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (logged at warn). Off by default.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Client certificate chain for mTLS upstreams (with `client_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// ALPN protocols offered; empty: `h2` when the cluster has `http2: true`,
    /// else `http/1.1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<AlpnProtocol>,
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// An ALPN protocol id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AlpnProtocol {
    #[serde(rename = "h2")]
    H2,
    #[serde(rename = "http/1.1")]
    Http11,
}

impl AlpnProtocol {
    pub fn id(self) -> &'static [u8] {
        match self {
            Self::H2 => b"h2",
            Self::Http11 => b"http/1.1",
        }
    }
}

/// Lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "TLSv1_2")]
    Tls12,
    #[serde(rename = "TLSv1_3")]
    Tls13,
}

/// HTTP codec of a listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// TLS: by ALPN; cleartext: HTTP/2 when the connection starts with the
    /// HTTP/2 preface (prior knowledge), else HTTP/1.1.
    #[default]
    Auto,
    Http1,
    Http2,
}
