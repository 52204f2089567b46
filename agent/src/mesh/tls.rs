//! rustls configs for mesh connections: TLS 1.3 only, ALPN `h2` (HBONE is
//! HTTP/2 CONNECT), mutual authentication by [`MeshVerifier`].
//!
//! The configs do not hold a certificate: their resolvers ask the identity
//! cache at each handshake, so a reissued leaf reaches new handshakes without
//! rebuilding configs. The resolvers hold the cache weakly, because the cache
//! holds the configs.

use std::sync::{Arc, Weak};

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};
use rustls_pki_types::ServerName;

use super::error::MeshError;
use super::identities::Inner;
use super::spiffe::SpiffeId;

/// The server name clients pass to rustls. Mesh certificates carry no DNS
/// names and the verifier ignores it; it only has to be a valid name.
/// `.invalid` (RFC 2606) can never resolve nor mean a real host.
pub fn server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls_pki_types::DnsName::try_from("mesh.weir.invalid")
            .expect("a constant, valid DNS name")
            .to_owned(),
    )
}

pub(crate) fn client_config(
    inner: &Arc<Inner>,
    id: &SpiffeId,
) -> Result<Arc<ClientConfig>, MeshError> {
    let fail = |source| MeshError::Config {
        id: id.to_string(),
        source: Box::new(source),
    };
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(fail)?
            .dangerous()
            .with_custom_certificate_verifier(inner.verifier.clone())
            .with_client_cert_resolver(Arc::new(Resolver::new(inner, id)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

pub(crate) fn server_config(
    inner: &Arc<Inner>,
    id: &SpiffeId,
) -> Result<Arc<ServerConfig>, MeshError> {
    let fail = |source| MeshError::Config {
        id: id.to_string(),
        source: Box::new(source),
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(fail)?
            .with_client_cert_verifier(inner.verifier.clone())
            .with_cert_resolver(Arc::new(Resolver::new(inner, id)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// One identity's current certificate, for either side of a handshake.
struct Resolver {
    inner: Weak<Inner>,
    id: SpiffeId,
}

impl Resolver {
    fn new(inner: &Arc<Inner>, id: &SpiffeId) -> Self {
        Self {
            inner: Arc::downgrade(inner),
            id: id.clone(),
        }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let inner = self.inner.upgrade()?;
        inner
            .certified_key_at(&self.id, std::time::SystemTime::now())
            .inspect_err(|e| tracing::warn!(error = %e, "mesh: no certificate for the handshake"))
            .ok()
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("id", &self.id).finish()
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // Leaves are always ECDSA P-256, which every mesh peer (this same
        // code) offers.
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}
