//! Issuance, verification, real handshakes, rotation and bounds.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, ServerConfig};
use rustls_pki_types::CertificateDer;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::der::{self, CertFields};
use super::identities::lock;
use super::testing::{MeshRoot, write_foreign_mesh, write_mesh};
use super::*;

const TD: &str = "cluster.local";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn id(td: &str, ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://{td}/ns/{ns}/sa/{sa}")).unwrap()
}

fn load(config: &MeshConfig) -> Identities {
    Identities::load(config.clone()).unwrap()
}

fn roots(config: &MeshConfig) -> Vec<rustls_pki_types::TrustAnchor<'static>> {
    node_ca::load_bundle(&config.trust_bundle).unwrap()
}

fn node_ca_der(config: &MeshConfig) -> CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_file(&config.node_ca_cert).unwrap()
}

#[test]
fn issued_leaf_chains_to_the_bundle_and_names_the_workload() {
    let dir = tempfile::tempdir().unwrap();
    // A node CA shorter-lived than the workload TTL: the leaf must stop with it.
    let config = write_mesh(dir.path(), TD, Duration::from_secs(1800)).unwrap();
    let identities = load(&config);
    let web = id(TD, "prod", "web");
    let before = SystemTime::now();
    let key = identities.certified_key(&web).unwrap();

    assert_eq!(key.cert.len(), 2, "chain is [leaf, node CA]");
    assert_eq!(key.cert[1], node_ca_der(&config));
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        verify::verify_chain(&roots(&config), &key.cert[0], &key.cert[1..], before, usage).unwrap();
    }

    let leaf = CertFields::parse(&key.cert[0]).unwrap();
    let ca = CertFields::parse(&key.cert[1]).unwrap();
    assert_eq!(leaf.uri_sans().unwrap(), vec![web.to_string().as_str()]);
    assert!(leaf.extension(&[0x55, 0x1d, 0x11]).is_some());
    assert!(!leaf.is_ca().unwrap());
    assert!(leaf.not_after <= ca.not_after);
    assert!(leaf.not_after < before + DEFAULT_WORKLOAD_CERT_TTL);
    let skew = before.duration_since(leaf.not_before).unwrap();
    assert!(skew >= Duration::from_secs(299) && skew <= Duration::from_secs(302));
    // keyUsage: a BIT STRING with digitalSignature (the first bit) alone.
    let ku = leaf.extension(der::OID_KEY_USAGE).unwrap().value;
    let mut input = ku;
    let bits = der::next(&mut input).unwrap();
    assert_eq!(bits.tag, 0x03);
    assert_eq!(bits.body[1], 0x80);
    assert!(bits.body[2..].iter().all(|&b| b == 0));
    // The leaf names its issuer as the node CA names itself, by name and by
    // key identifier (OpenSSL-based peers check the latter).
    assert_eq!(der::issuer_name(&key.cert[0]).unwrap(), ca.subject);
    let aki = leaf.extension(&[0x55, 0x1d, 0x23]).unwrap().value;
    let mut input = aki;
    let mut body = der::next(&mut input).unwrap().body;
    let key_id = der::next(&mut body).unwrap();
    assert_eq!(key_id.tag, 0x80);
    assert_eq!(Some(key_id.body), ca.subject_key_id().unwrap());

    assert_eq!(identities.peer_identity(&key.cert).unwrap(), web);
}

#[test]
fn leaves_are_cut_at_the_node_ca_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = write_mesh(dir.path(), TD, Duration::from_secs(600)).unwrap();
    config.workload_cert_ttl = DAY;
    let identities = load(&config);
    let key = identities.certified_key(&id(TD, "a", "b")).unwrap();
    let leaf = CertFields::parse(&key.cert[0]).unwrap();
    let ca = CertFields::parse(&key.cert[1]).unwrap();
    assert_eq!(leaf.not_after, ca.not_after);
}

/// Runs a handshake over an in-memory pipe; each side's result.
async fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> (
    std::io::Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>>,
    std::io::Result<tokio_rustls::server::TlsStream<tokio::io::DuplexStream>>,
) {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let connect = TlsConnector::from(client).connect(server_name(), c);
    let accept = TlsAcceptor::from(server).accept(s);
    // TLS 1.3: the client is done before the server has checked its
    // certificate, so a refused client shows on the server's side only.
    tokio::join!(connect, accept)
}

fn tls_error(e: &std::io::Error) -> &rustls::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {e:?}"))
}

fn peer_error(e: &rustls::Error) -> &PeerError {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<PeerError>().unwrap()
        }
        other => panic!("not a peer identity error: {other:?}"),
    }
}

#[tokio::test]
async fn mutual_handshake_between_two_nodes_of_one_mesh() {
    let root = MeshRoot::generate().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node_a = load(&root.write_mesh(dir_a.path(), TD, DAY).unwrap());
    let node_b = load(&root.write_mesh(dir_b.path(), TD, DAY).unwrap());
    let (web, db) = (id(TD, "prod", "web"), id(TD, "data", "db"));

    let client = node_a.client_config(&web).unwrap();
    let server = node_b.server_config(&db).unwrap();
    assert!(Arc::ptr_eq(&client, &node_a.client_config(&web).unwrap()));
    let (c, s) = handshake(client, server).await;
    let (c, s) = (c.unwrap(), s.unwrap());

    let (_, conn) = c.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        node_a
            .peer_identity(conn.peer_certificates().unwrap())
            .unwrap(),
        db
    );
    let (_, conn) = s.get_ref();
    assert_eq!(
        node_b
            .peer_identity(conn.peer_certificates().unwrap())
            .unwrap(),
        web
    );
}

#[tokio::test]
async fn refuses_a_peer_of_another_mesh() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ours = load(&write_mesh(dir_a.path(), TD, DAY).unwrap());
    let theirs = load(&write_foreign_mesh(dir_b.path(), TD, DAY).unwrap());
    let web = id(TD, "prod", "web");

    let (c, _) = handshake(
        ours.client_config(&web).unwrap(),
        theirs.server_config(&web).unwrap(),
    )
    .await;
    let err = c.unwrap_err();
    assert!(is_foreign(tls_error(&err)), "{err}");

    // The server side refuses a foreign client the same way.
    let key = theirs.certified_key(&web).unwrap();
    let err = rustls::server::danger::ClientCertVerifier::verify_client_cert(
        ours.verifier().as_ref(),
        &key.cert[0],
        &key.cert[1..],
        rustls_pki_types::UnixTime::now(),
    )
    .unwrap_err();
    assert!(is_foreign(&err), "{err}");
}

/// Both meshes' roots carry the same name (as two real meshes may), so
/// webpki finds "our" root by name and then the signature fails; with
/// different names it finds no issuer at all.
fn is_foreign(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::BadSignature | CertificateError::UnknownIssuer
        )
    )
}

#[tokio::test]
async fn refuses_a_peer_of_another_trust_domain_under_the_same_root() {
    let root = MeshRoot::generate().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ours = load(&root.write_mesh(dir_a.path(), TD, DAY).unwrap());
    let other = load(&root.write_mesh(dir_b.path(), "other.example", DAY).unwrap());
    let stranger = id("other.example", "prod", "web");

    let (c, _) = handshake(
        ours.client_config(&id(TD, "prod", "web")).unwrap(),
        other.server_config(&stranger).unwrap(),
    )
    .await;
    let err = c.unwrap_err();
    assert!(matches!(
        peer_error(tls_error(&err)),
        PeerError::WrongTrustDomain { id, .. } if **id == stranger
    ));

    let key = other.certified_key(&stranger).unwrap();
    let err = rustls::server::danger::ClientCertVerifier::verify_client_cert(
        ours.verifier().as_ref(),
        &key.cert[0],
        &key.cert[1..],
        rustls_pki_types::UnixTime::now(),
    )
    .unwrap_err();
    assert!(matches!(
        peer_error(&err),
        PeerError::WrongTrustDomain { .. }
    ));
    assert!(matches!(
        ours.peer_identity(&key.cert),
        Err(MeshError::Peer(PeerError::WrongTrustDomain { .. }))
    ));
}

/// Serves one fixed certificate, whatever it is.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn server_with(identities: &Identities, key: Arc<CertifiedKey>) -> Arc<ServerConfig> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(identities.verifier())
            .with_cert_resolver(Arc::new(Fixed(key)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn refuses_an_expired_peer() {
    let dir = tempfile::tempdir().unwrap();
    let identities = load(&write_mesh(dir.path(), TD, DAY).unwrap());
    let web = id(TD, "prod", "web");
    let now = SystemTime::now();
    let (ca, _) = identities.inner.current_ca();
    let expired = issuer::issue_with_validity(
        &ca,
        &web,
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    )
    .unwrap();

    let (c, _) = handshake(
        identities.client_config(&web).unwrap(),
        server_with(&identities, expired.key),
    )
    .await;
    let err = c.unwrap_err();
    assert_eq!(
        tls_error(&err),
        &rustls::Error::InvalidCertificate(CertificateError::Expired)
    );
}

#[tokio::test]
async fn server_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let identities = load(&write_mesh(dir.path(), TD, DAY).unwrap());
    let web = id(TD, "prod", "web");
    let mut anonymous =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(identities.verifier())
            .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];

    let (_, s) = handshake(Arc::new(anonymous), identities.server_config(&web).unwrap()).await;
    let err = s.unwrap_err();
    assert_eq!(tls_error(&err), &rustls::Error::NoCertificatesPresented);
}

#[test]
fn leaf_is_reissued_past_half_its_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = write_mesh(dir.path(), TD, DAY).unwrap();
    config.workload_cert_ttl = Duration::from_secs(4);
    let identities = load(&config);
    let web = id(TD, "prod", "web");
    let t0 = SystemTime::now();
    let at = |secs: f64| {
        identities
            .inner
            .certified_key_at(&web, t0 + Duration::from_secs_f64(secs))
            .unwrap()
    };

    let first = at(0.0);
    let still = at(1.9);
    assert_eq!(first.cert[0], still.cert[0], "reissued before half-life");
    let renewed = at(2.1);
    assert_ne!(
        first.cert[0], renewed.cert[0],
        "not reissued past half-life"
    );
    assert_ne!(
        CertFields::parse(&first.cert[0]).unwrap().not_after,
        CertFields::parse(&renewed.cert[0]).unwrap().not_after
    );
    // The new one is kept until its own half-life.
    assert_eq!(at(3.0).cert[0], renewed.cert[0]);
}

#[test]
fn node_ca_rotation_and_a_bad_new_node_ca() {
    let root = MeshRoot::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = root.write_mesh(dir.path(), TD, DAY).unwrap();
    let identities = load(&config);
    let web = id(TD, "prod", "web");
    let old = identities.certified_key(&web).unwrap();
    let old_ca = node_ca_der(&config);
    assert_eq!(old.cert[1], old_ca);

    // Same root, new key: the next leaf chains to the new node CA.
    root.write_node_ca(&config.node_ca_cert, &config.node_ca_key, DAY)
        .unwrap();
    assert!(identities.inner.reload_node_ca(SystemTime::now()).unwrap());
    let new_ca = node_ca_der(&config);
    assert_ne!(new_ca, old_ca);
    let new = identities.certified_key(&web).unwrap();
    assert_eq!(new.cert[1], new_ca);
    assert_ne!(new.cert[0], old.cert[0]);
    verify::verify_chain(
        &roots(&config),
        &new.cert[0],
        &new.cert[1..],
        SystemTime::now(),
        webpki::KeyUsage::client_auth(),
    )
    .unwrap();
    // An unchanged pair is not read again.
    assert!(!identities.inner.reload_node_ca(SystemTime::now()).unwrap());

    // Garbage: refused, naming the file; the last good node CA keeps issuing.
    std::fs::write(&config.node_ca_cert, "not a certificate").unwrap();
    let err = identities
        .inner
        .reload_node_ca(SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(&err, MeshError::NodeCa { file, .. } if *file == config.node_ca_cert),
        "{err}"
    );
    let db = identities.certified_key(&id(TD, "data", "db")).unwrap();
    assert_eq!(db.cert[1], new_ca);

    // A node CA of another root: refused too.
    let foreign = tempfile::tempdir().unwrap();
    let other = write_foreign_mesh(foreign.path(), TD, DAY).unwrap();
    std::fs::copy(&other.node_ca_cert, &config.node_ca_cert).unwrap();
    std::fs::copy(&other.node_ca_key, &config.node_ca_key).unwrap();
    let err = identities
        .inner
        .reload_node_ca(SystemTime::now())
        .unwrap_err();
    assert!(err.to_string().contains("does not chain"), "{err}");
    let api = identities.certified_key(&id(TD, "prod", "api")).unwrap();
    assert_eq!(api.cert[1], new_ca);
}

#[test]
fn load_names_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_mesh(dir.path(), TD, DAY).unwrap();
    let foreign = tempfile::tempdir().unwrap();
    let other = write_foreign_mesh(foreign.path(), TD, DAY).unwrap();
    let message = |config: MeshConfig| Identities::load(config).unwrap_err().to_string();

    // A key that is not the node CA's.
    let wrong_key = MeshConfig {
        node_ca_key: other.node_ca_key.clone(),
        ..config.clone()
    };
    let m = message(wrong_key);
    assert!(m.contains(&other.node_ca_key.display().to_string()), "{m}");
    assert!(m.contains("not the key"), "{m}");

    // A node CA signed by a root not in the bundle.
    let foreign_ca = MeshConfig {
        trust_bundle: config.trust_bundle.clone(),
        ..other.clone()
    };
    let m = message(foreign_ca);
    assert!(m.contains("does not chain to the trust bundle"), "{m}");

    // A certificate that is not a CA.
    let leaf_dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::default()
        .self_signed(&key)
        .unwrap();
    let (leaf_cert, leaf_key) = (
        leaf_dir.path().join("leaf.crt"),
        leaf_dir.path().join("leaf.key"),
    );
    std::fs::write(&leaf_cert, leaf.pem()).unwrap();
    std::fs::write(&leaf_key, key.serialize_pem()).unwrap();
    let m = message(MeshConfig {
        node_ca_cert: leaf_cert.clone(),
        node_ca_key: leaf_key,
        ..config.clone()
    });
    assert!(
        m.contains("not a CA") && m.contains(&leaf_cert.display().to_string()),
        "{m}"
    );

    // An empty bundle.
    let empty = leaf_dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let m = message(MeshConfig {
        trust_bundle: empty.clone(),
        ..config.clone()
    });
    assert!(
        m.contains("trust bundle") && m.contains("no CERTIFICATE"),
        "{m}"
    );

    // An expired node CA.
    let expired_dir = tempfile::tempdir().unwrap();
    let expired = write_mesh(expired_dir.path(), TD, Duration::ZERO).unwrap();
    let m = message(expired);
    assert!(m.contains("expired"), "{m}");

    let m = message(MeshConfig {
        trust_domain: "Cluster.Local".into(),
        ..config
    });
    assert!(m.contains("trust domain"), "{m}");
}

#[test]
fn cache_holds_at_most_its_bound_and_drops_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_mesh(dir.path(), TD, DAY).unwrap();
    let identities = Identities::load_with_capacity(config, 3).unwrap();
    let ids: Vec<SpiffeId> = (0..8).map(|i| id(TD, "prod", &format!("sa{i}"))).collect();

    for i in &ids[..3] {
        identities.certified_key(i).unwrap();
    }
    identities.client_config(&ids[0]).unwrap(); // sa0 used again: sa1 is now the oldest
    identities.certified_key(&ids[3]).unwrap();
    {
        let cache = lock(&identities.inner.cache);
        assert_eq!(cache.len(), 3);
        assert!(cache.contains(&ids[0]));
        assert!(!cache.contains(&ids[1]));
        assert!(cache.contains(&ids[3]));
    }
    for i in &ids {
        identities.server_config(i).unwrap();
        assert!(lock(&identities.inner.cache).len() <= 3);
    }
    assert_eq!(MAX_IDENTITIES, 4096);
}

#[test]
fn peer_identity_wants_exactly_one_spiffe_uri() {
    let dir = tempfile::tempdir().unwrap();
    let identities = load(&write_mesh(dir.path(), TD, DAY).unwrap());
    let make = |sans: Vec<rcgen::SanType>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        vec![params.self_signed(&key).unwrap().der().clone()]
    };
    let uri = |s: &str| rcgen::SanType::URI(s.try_into().unwrap());

    let none = make(vec![rcgen::SanType::DnsName(
        "web.example".try_into().unwrap(),
    )]);
    assert!(matches!(
        identities.peer_identity(&none),
        Err(MeshError::Peer(PeerError::UriSanCount(0)))
    ));
    let two = make(vec![
        uri("spiffe://cluster.local/ns/a/sa/b"),
        uri("spiffe://cluster.local/ns/a/sa/c"),
    ]);
    assert!(matches!(
        identities.peer_identity(&two),
        Err(MeshError::Peer(PeerError::UriSanCount(2)))
    ));
    let not_spiffe = make(vec![uri("https://cluster.local/ns/a/sa/b")]);
    assert!(matches!(
        identities.peer_identity(&not_spiffe),
        Err(MeshError::Peer(PeerError::NotSpiffe(_)))
    ));
    assert!(matches!(
        identities.peer_identity(&[]),
        Err(MeshError::Peer(PeerError::NoCertificate))
    ));
    let one = make(vec![uri("spiffe://cluster.local/ns/a/sa/b")]);
    assert_eq!(identities.peer_identity(&one).unwrap(), id(TD, "a", "b"));
}
