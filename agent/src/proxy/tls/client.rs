//! TLS origination for a cluster: one rustls client config, built once
//! when the cluster is built; SNI explicit or derived; verification on
//! unless `insecure_skip_verify` (logged at warn).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use super::{HANDSHAKE_TIMEOUT, TlsError, failure, pem, provider, versions};
use crate::config::{AlpnProtocol, UpstreamTlsConfig};
use crate::proxy::metrics::{HandshakeFailure, TlsMetrics};

pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    /// None: the endpoint's IP address.
    sni: Option<ServerName<'static>>,
    cluster: Arc<str>,
    pub metrics: TlsMetrics,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("cluster", &self.cluster)
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

/// A failed upstream handshake: its reason and the error text.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {addr} failed ({}): {message}", reason.as_str())]
pub struct HandshakeError {
    pub addr: SocketAddr,
    pub reason: HandshakeFailure,
    pub message: String,
}

impl TlsClient {
    /// `default_sni`: the name to use when `sni` is not set (a STRICT_DNS
    /// endpoint name); `http2`: the cluster speaks HTTP/2 (default ALPN).
    pub fn new(
        cfg: &UpstreamTlsConfig,
        http2: bool,
        default_sni: Option<&str>,
        path: &str,
        cluster: &str,
        metrics: TlsMetrics,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let invalid = |field: String, e: &dyn std::fmt::Display| TlsError::Invalid {
            field,
            reason: e.to_string(),
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(cfg.min_version))
            .map_err(|e| invalid(format!("{path}.min_version"), &e))?;
        let builder = if cfg.insecure_skip_verify {
            log::warn!(
                "cluster {cluster}: insecure_skip_verify is set: upstream certificates are NOT verified"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
        } else {
            let roots = match cfg.ca_pem().given() {
                Some(ca) => pem::roots(path, ca)?,
                None => system_roots(cluster),
            };
            builder.with_root_certificates(roots)
        };
        let mut cc = match (cfg.client_cert_pem().given(), cfg.client_key_pem().given()) {
            (Some(c), Some(k)) => {
                let chain = pem::certs(path, c)?;
                let key = pem::key(path, k)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid(pem::field_name(path, &k), &e))?
            }
            _ => builder.with_no_client_auth(),
        };
        cc.alpn_protocols = if cfg.alpn.is_empty() {
            vec![
                if http2 {
                    AlpnProtocol::H2
                } else {
                    AlpnProtocol::Http11
                }
                .id()
                .to_vec(),
            ]
        } else {
            cfg.alpn.iter().map(|p| p.id().to_vec()).collect()
        };
        let sni = match cfg.sni.as_deref().or(default_sni) {
            Some(n) => Some(
                ServerName::try_from(n.to_owned())
                    .map_err(|e| invalid(format!("{path}.sni"), &e))?,
            ),
            None => None,
        };
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(cc)),
            sni,
            cluster: cluster.into(),
            metrics,
        })
    }

    /// Handshake on `tcp` within [`HANDSHAKE_TIMEOUT`]; a failure is
    /// counted and logged once with its reason.
    pub async fn connect<IO>(
        &self,
        tcp: IO,
        addr: SocketAddr,
    ) -> Result<TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self
            .sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let (reason, message) = match tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.connector.connect(name, tcp),
        )
        .await
        {
            Ok(Ok(s)) => {
                self.metrics.handshakes.inc();
                return Ok(s);
            }
            Ok(Err(e)) => (failure::classify(&e), e.to_string()),
            Err(_) => (HandshakeFailure::Timeout, "timed out".to_owned()),
        };
        self.metrics.failure(reason);
        let e = HandshakeError {
            addr,
            reason,
            message,
        };
        log::warn!("cluster {}: {e}", self.cluster);
        Err(e)
    }
}

/// The system's trusted roots (Debian: ca-certificates); unreadable ones are logged.
fn system_roots(cluster: &str) -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        log::warn!("cluster {cluster}: loading system CA certificates: {e}");
    }
    let mut store = RootCertStore::empty();
    let (ok, bad) = store.add_parsable_certificates(found.certs);
    if bad > 0 || ok == 0 {
        log::warn!("cluster {cluster}: {ok} system CA certificates loaded, {bad} unusable");
    }
    store
}

/// `insecure_skip_verify`: any certificate is accepted, but handshake
/// signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
