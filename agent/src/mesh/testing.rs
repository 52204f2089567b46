//! Mesh roots and node CAs made on the spot, for tests and the demo. Not for
//! production: the root key lives in memory here, which is exactly what a
//! real mesh never does.
//!
//! Every [`write_mesh`] call makes a new root, so two calls give two meshes
//! that do not trust each other; [`MeshRoot::write_mesh`] gives another node
//! (or a rotated node CA) of the same mesh.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use super::error::MeshError;
use super::{DEFAULT_WORKLOAD_CERT_TTL, MeshConfig};

/// File names [`write_mesh`] uses inside its directory.
pub const TRUST_BUNDLE_FILE: &str = "trust-bundle.pem";
pub const NODE_CA_CERT_FILE: &str = "node-ca.crt";
pub const NODE_CA_KEY_FILE: &str = "node-ca.key";

/// How long a test root is valid.
const ROOT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A mesh root with its key at hand.
pub struct MeshRoot {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for MeshRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshRoot").finish_non_exhaustive()
    }
}

fn fail(reason: impl std::fmt::Display) -> MeshError {
    MeshError::NodeCa {
        file: PathBuf::from("<test CA>"),
        reason: reason.to_string(),
    }
}

fn write(file: &Path, contents: &str) -> Result<(), MeshError> {
    std::fs::write(file, contents).map_err(|source| MeshError::Write {
        file: file.to_owned(),
        source,
    })
}

impl MeshRoot {
    /// A new self-signed ECDSA P-256 root.
    pub fn generate() -> Result<Self, MeshError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "weir");
        dn.push(DnType::CommonName, "weir test mesh root");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_TTL).into();
        let cert = params.self_signed(&key).map_err(fail)?;
        Ok(Self { cert, key })
    }

    /// The root certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes a node CA signed by this root, valid from five minutes ago
    /// for `ttl`, with a new key (PKCS#8). Writing over an existing pair
    /// rotates it.
    pub fn write_node_ca(
        &self,
        cert_file: &Path,
        key_file: &Path,
        ttl: Duration,
    ) -> Result<(), MeshError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "weir");
        dn.push(DnType::CommonName, "weir test node CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ttl).into();
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(fail)?;
        write(key_file, &key.serialize_pem())?;
        write(cert_file, &cert.pem())
    }

    /// Writes this root as the trust bundle and a new node CA into `dir`
    /// (see [`TRUST_BUNDLE_FILE`] and the other names), and returns the
    /// config that reads them, with the default workload TTL.
    pub fn write_mesh(
        &self,
        dir: &Path,
        trust_domain: &str,
        node_ca_ttl: Duration,
    ) -> Result<MeshConfig, MeshError> {
        let config = MeshConfig {
            trust_domain: trust_domain.to_owned(),
            trust_bundle: dir.join(TRUST_BUNDLE_FILE),
            node_ca_cert: dir.join(NODE_CA_CERT_FILE),
            node_ca_key: dir.join(NODE_CA_KEY_FILE),
            workload_cert_ttl: DEFAULT_WORKLOAD_CERT_TTL,
        };
        write(&config.trust_bundle, &self.pem())?;
        self.write_node_ca(&config.node_ca_cert, &config.node_ca_key, node_ca_ttl)?;
        Ok(config)
    }
}

/// A new mesh in `dir`: a new root (the trust bundle) and a node CA signed by
/// it, valid for `node_ca_ttl`. Each call makes a different root: a second
/// call in another directory is a foreign mesh.
pub fn write_mesh(
    dir: &Path,
    trust_domain: &str,
    node_ca_ttl: Duration,
) -> Result<MeshConfig, MeshError> {
    MeshRoot::generate()?.write_mesh(dir, trust_domain, node_ca_ttl)
}

/// The same as [`write_mesh`], named for what a test means by it: a mesh
/// whose root the other meshes of the test do not trust.
pub fn write_foreign_mesh(
    dir: &Path,
    trust_domain: &str,
    node_ca_ttl: Duration,
) -> Result<MeshConfig, MeshError> {
    write_mesh(dir, trust_domain, node_ca_ttl)
}
