//! Checking a peer: its chain to the trust bundle (webpki), then its SPIFFE
//! ID. One verifier serves both sides of a handshake.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use super::der::CertFields;
use super::error::PeerError;
use super::spiffe::{SpiffeId, TrustDomain};

/// Accepts a peer whose chain leads to a root of the trust bundle and whose
/// certificate names exactly one SPIFFE ID, of our trust domain. The TLS
/// server name plays no part.
#[derive(Debug)]
pub struct MeshVerifier {
    roots: Arc<[TrustAnchor<'static>]>,
    trust_domain: TrustDomain,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MeshVerifier {
    pub(crate) fn new(roots: Arc<[TrustAnchor<'static>]>, trust_domain: TrustDomain) -> Self {
        Self {
            roots,
            trust_domain,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    /// The peer's identity once its chain and name check out, as of `now`.
    pub fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<SpiffeId, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.roots,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(pki_error)?;
        spiffe_id(end_entity, &self.trust_domain).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })
    }
}

/// webpki's verdict on `leaf` against `roots` at `now`, without the name
/// check: what the node CA probe needs.
pub(crate) fn verify_chain(
    roots: &[TrustAnchor<'static>],
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: SystemTime,
    usage: webpki::KeyUsage,
) -> Result<(), webpki::Error> {
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let now = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    webpki::EndEntityCert::try_from(leaf)?
        .verify_for_usage(algorithms.all, roots, intermediates, now, usage, None, None)
        .map(|_| ())
}

/// The SPIFFE ID of a certificate: its only URI SAN, of `trust_domain`.
/// Trusts the certificate: call it only on one a verifier accepted.
pub(crate) fn spiffe_id(
    cert: &CertificateDer<'_>,
    trust_domain: &TrustDomain,
) -> Result<SpiffeId, PeerError> {
    let fields = CertFields::parse(cert)?;
    let uris = fields.uri_sans()?;
    let [uri] = uris.as_slice() else {
        return Err(PeerError::UriSanCount(uris.len()));
    };
    let id = SpiffeId::parse(uri).map_err(PeerError::NotSpiffe)?;
    if &id.trust_domain != trust_domain {
        return Err(PeerError::WrongTrustDomain {
            id: Box::new(id),
            expected: trust_domain.clone(),
        });
    }
    Ok(id)
}

/// webpki's errors as rustls reports them, so logs and alerts say "expired"
/// or "unknown issuer" rather than a generic failure.
fn pki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let cert_error = match e {
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::CertRevoked => CertificateError::Revoked,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::UnsupportedCriticalExtension => CertificateError::UnhandledCriticalExtension,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}

impl ServerCertVerifier for MeshVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_peer(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for MeshVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Clients have exactly one certificate; hints would only cost bytes.
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_peer(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
