//! TLS and HTTP/2 settings of listeners (termination) and clusters
//! (origination). Certificates, keys and CA bundles are PEM, each given as
//! a file (`<name>_file`) or inline (`<name>`, the PEM text, as Envoy's
//! `inline_string`); they are read and checked when the config is built
//! (`proxy::tls`), errors name the field and the file.

use std::fmt;
use std::path::{Path, PathBuf};

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
    /// The PEM of `client_ca_file` inline, instead of a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
    /// Refuse clients without a valid certificate (needs `client_ca_file`
    /// or `client_ca`).
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// A certificate chain and its private key; files are re-read when they
/// change, inline PEM changes with the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificateConfig {
    /// PEM: the leaf first, then intermediates; this or `cert_chain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_chain_file: Option<PathBuf>,
    /// The PEM of `cert_chain_file` inline, instead of a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_chain: Option<String>,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key; this or `private_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// The PEM of `private_key_file` inline, instead of a file;
    /// `[redacted]` in `/config_dump`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<InlineKey>,
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
    /// PEM bundle of trusted CAs; absent (and no `ca`): the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The PEM of `ca_file` inline, instead of a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Accept any server certificate (logged at warn). Off by default.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Client certificate chain for mTLS upstreams (with `client_key_file`
    /// or `client_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// The PEM of `client_cert_file` inline, instead of a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// Its private key (PEM); this or `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// The PEM of `client_key_file` inline, instead of a file;
    /// `[redacted]` in `/config_dump`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<InlineKey>,
    /// ALPN protocols offered; empty: `h2` when the cluster has `http2: true`,
    /// else `http/1.1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<AlpnProtocol>,
    #[serde(default)]
    pub min_version: TlsVersion,
}

impl DownstreamTlsConfig {
    pub fn client_ca_pem(&self) -> PemField<'_> {
        PemField::new(
            "client_ca",
            self.client_ca_file.as_deref(),
            self.client_ca.as_deref(),
        )
    }
}

impl TlsCertificateConfig {
    pub fn cert_chain_pem(&self) -> PemField<'_> {
        PemField::new(
            "cert_chain",
            self.cert_chain_file.as_deref(),
            self.cert_chain.as_deref(),
        )
    }

    pub fn private_key_pem(&self) -> PemField<'_> {
        PemField::new(
            "private_key",
            self.private_key_file.as_deref(),
            self.private_key.as_ref().map(InlineKey::expose),
        )
        .holding_a_key()
    }
}

impl UpstreamTlsConfig {
    pub fn ca_pem(&self) -> PemField<'_> {
        PemField::new("ca", self.ca_file.as_deref(), self.ca.as_deref())
    }

    pub fn client_cert_pem(&self) -> PemField<'_> {
        PemField::new(
            "client_cert",
            self.client_cert_file.as_deref(),
            self.client_cert.as_deref(),
        )
    }

    pub fn client_key_pem(&self) -> PemField<'_> {
        PemField::new(
            "client_key",
            self.client_key_file.as_deref(),
            self.client_key.as_ref().map(InlineKey::expose),
        )
        .holding_a_key()
    }
}

/// Where PEM comes from: a file, or the config itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PemSource<'a> {
    File(&'a Path),
    Inline(&'a str),
}

impl fmt::Debug for PemSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            // The text may be a private key.
            Self::Inline(_) => f.write_str("Inline(..)"),
        }
    }
}

/// One PEM setting, spelled `<name>_file` (a path) or `<name>` (the text);
/// validation lets at most one spelling through.
#[derive(Clone, Copy)]
pub struct PemField<'a> {
    name: &'static str,
    file: Option<&'a Path>,
    inline: Option<&'a str>,
    /// Its inline text is an `InlineKey`: redacted wherever the config is
    /// shown or logged.
    key: bool,
}

impl<'a> PemField<'a> {
    fn new(name: &'static str, file: Option<&'a Path>, inline: Option<&'a str>) -> Self {
        Self {
            name,
            file,
            inline,
            key: false,
        }
    }

    fn holding_a_key(self) -> Self {
        Self { key: true, ..self }
    }

    /// A private key's field, whose inline text is kept out of
    /// `/config_dump` and logs.
    pub fn holds_a_key(&self) -> bool {
        self.key
    }

    /// The inline spelling's key, e.g. `private_key`.
    pub fn inline_key(&self) -> &'static str {
        self.name
    }

    /// The file spelling's key, e.g. `private_key_file`.
    pub fn file_key(&self) -> String {
        format!("{}_file", self.name)
    }

    /// Both spellings given.
    pub fn both(&self) -> bool {
        self.file.is_some() && self.inline.is_some()
    }

    /// This field when either spelling is given.
    pub fn given(self) -> Option<Self> {
        (self.file.is_some() || self.inline.is_some()).then_some(self)
    }

    /// The spelling given, the file when both are.
    pub fn source(&self) -> Option<PemSource<'a>> {
        match (self.file, self.inline) {
            (Some(path), _) => Some(PemSource::File(path)),
            (None, Some(text)) => Some(PemSource::Inline(text)),
            (None, None) => None,
        }
    }

    /// The key of the spelling given; the file's when neither is.
    pub fn key(&self) -> String {
        match self.source() {
            Some(PemSource::Inline(_)) => self.name.to_owned(),
            _ => self.file_key(),
        }
    }
}

impl fmt::Debug for PemField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemField")
            .field("name", &self.name)
            .field("file", &self.file)
            // The text may be a private key.
            .field("inline", &self.inline.map(|_| ".."))
            .finish()
    }
}

/// Names the PEM as a person reading the config would: the file, or the
/// inline field.
impl fmt::Display for PemField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source() {
            Some(PemSource::File(path)) => write!(f, "{}", path.display()),
            Some(PemSource::Inline(_)) => write!(f, "the inline {}", self.name),
            None => write!(f, "no {}", self.name),
        }
    }
}

/// A private key in PEM, given inline.
// Debug and Serialize print `[redacted]` so the key stays out of logs and
// `/config_dump` (Envoy's config_dump hides inline keys the same way);
// `weir convert-envoy`, which must write it, puts it back.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct InlineKey(String);

impl InlineKey {
    pub const REDACTED: &'static str = "[redacted]";

    pub fn new(pem: impl Into<String>) -> Self {
        Self(pem.into())
    }

    /// The PEM text, for the few places that must have it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl Serialize for InlineKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(Self::REDACTED)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The key stays out of every Debug print (config errors, logs) and
    /// every serialization (`/config_dump`, the logged effective config),
    /// yet deserializes and compares as its text.
    #[test]
    fn inline_keys_are_redacted_but_kept() {
        let yaml = "{cert_chain: CERT TEXT, private_key: KEY TEXT}";
        let c: TlsCertificateConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(c.private_key, Some(InlineKey::new("KEY TEXT")));
        assert_eq!(
            c.private_key_pem().source(),
            Some(PemSource::Inline("KEY TEXT"))
        );
        let upstream: UpstreamTlsConfig =
            serde_yaml::from_str("{client_cert: CERT TEXT, client_key: KEY TEXT}").unwrap();
        for shown in [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{:?}", c.private_key_pem()),
            serde_json::to_string(&c).unwrap(),
            serde_yaml::to_string(&c).unwrap(),
            format!("{upstream:?}"),
            serde_json::to_string(&upstream).unwrap(),
        ] {
            assert!(!shown.contains("KEY TEXT"), "{shown}");
        }
        assert_eq!(
            serde_json::to_value(&c).unwrap()["private_key"],
            "[redacted]"
        );
        assert_eq!(
            serde_json::to_value(&upstream).unwrap()["client_key"],
            "[redacted]"
        );
        assert_eq!(format!("{:?}", c.private_key), "Some([redacted])");
        // Certificates are public: shown as given.
        assert!(serde_json::to_string(&c).unwrap().contains("CERT TEXT"));
    }

    #[test]
    fn pem_fields_name_the_spelling_given() {
        let c: TlsCertificateConfig =
            serde_yaml::from_str("{cert_chain_file: /c.pem, private_key: K}").unwrap();
        let (chain, key) = (c.cert_chain_pem(), c.private_key_pem());
        assert_eq!(
            (chain.key(), chain.to_string()),
            ("cert_chain_file".to_owned(), "/c.pem".to_owned())
        );
        assert_eq!(
            (key.key(), key.to_string()),
            (
                "private_key".to_owned(),
                "the inline private_key".to_owned()
            )
        );
        let upstream = UpstreamTlsConfig::default();
        let none = upstream.ca_pem();
        assert!(none.given().is_none());
        assert_eq!(none.key(), "ca_file");
    }
}
