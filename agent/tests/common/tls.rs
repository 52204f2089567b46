//! TLS helpers for the acceptance tests: a throwaway CA and certificates
//! (rcgen), rustls clients, and TLS backends. Included with
//! `#[path = "common/tls.rs"] mod tls;` beside `mod common;`.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

/// A CA that issues certificates; files are written under `dir`.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub pem_file: PathBuf,
}

/// A certificate and key written as PEM files.
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let pem_file = dir.join(format!("{name}.ca.pem"));
        std::fs::write(&pem_file, cert.pem()).unwrap();
        Ca {
            cert,
            key,
            pem_file,
        }
    }

    /// A leaf for `names` (DNS names or IPs), files `<file>.pem`/`<file>.key`.
    pub fn issue(&self, dir: &Path, file: &str, names: &[&str]) -> Issued {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(file));
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        write_pair(dir, file, &cert, &key)
    }
}

/// A self-signed leaf (seed 001's certificate, trusted with `-k`).
pub fn self_signed(dir: &Path, file: &str, names: &[&str]) -> Issued {
    let p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    write_pair(dir, file, &cert, &key)
}

fn write_pair(dir: &Path, file: &str, cert: &rcgen::Certificate, key: &KeyPair) -> Issued {
    let cert_file = dir.join(format!("{file}.pem"));
    let key_file = dir.join(format!("{file}.key"));
    // write + rename, so a watcher never sees half a file
    for (path, text) in [(&cert_file, cert.pem()), (&key_file, key.serialize_pem())] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    Issued {
        cert_file,
        key_file,
        der: cert.der().clone(),
    }
}

impl Issued {
    /// The certificate's PEM text, for inline config.
    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.cert_file).unwrap()
    }

    /// The private key's PEM text, for inline config.
    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(&self.key_file).unwrap()
    }
}

/// `text` as the YAML literal block scalar (`|`) of a key, its lines
/// indented by `indent` spaces.
pub fn yaml_block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let lines: String = text.lines().map(|l| format!("{pad}{l}\n")).collect();
    format!("|\n{lines}")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client trusting `ca` (None: trusting anything, like `curl -k`),
/// optionally presenting a client certificate, offering `alpn`.
pub fn client_config(
    ca: Option<&Path>,
    client: Option<&Issued>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap();
    let b = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            b.with_root_certificates(roots)
        }
        None => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider()))),
    };
    let mut cfg = match client {
        Some(c) => b
            .with_client_auth_cert(certs(&c.cert_file), key(&c.key_file))
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

pub fn default_versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    rustls::DEFAULT_VERSIONS
}

pub fn certs(f: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(f)
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

pub fn key(f: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(f).unwrap()
}

/// What a TLS exchange saw.
#[derive(Debug)]
pub struct TlsReply {
    pub status: u16,
    pub body: String,
    pub headers: http::HeaderMap,
    /// The server's leaf certificate.
    pub peer_cert: CertificateDer<'static>,
    pub alpn: Option<Vec<u8>>,
    /// The TLS version the handshake settled on.
    pub version: Option<rustls::ProtocolVersion>,
}

/// GET `path` over TLS to `addr` with SNI `sni`, HTTP/1.1 or HTTP/2 by ALPN.
pub async fn get(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<TlsReply, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    let peer_cert = conn.peer_certificates().unwrap()[0].clone().into_owned();
    let alpn = conn.alpn_protocol().map(|a| a.to_vec());
    let version = conn.protocol_version();
    let io = TokioIo::new(tls);
    let uri = format!("https://{sni}{path}");
    let req = Request::get(&uri)
        .header("host", sni)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = if alpn.as_deref() == Some(b"h2") {
        let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        tx.send_request(req).await
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        tx.send_request(req).await
    }
    .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(TlsReply {
        status: parts.status.as_u16(),
        body: String::from_utf8_lossy(&body).into_owned(),
        headers: parts.headers,
        peer_cert,
        alpn,
        version,
    })
}

/// A TLS backend answering `name` as body and echoing the SNI it saw in
/// `x-seen-sni`; requires a client certificate signed by `client_ca` if given.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub snis: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    pub async fn start(name: &str, leaf: &Issued, client_ca: Option<&Path>) -> TlsBackend {
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(ca) {
                    roots.add(c).unwrap();
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .unwrap();
                b.with_client_cert_verifier(v)
            }
            None => b.with_no_client_auth(),
        };
        let mut cfg = b
            .with_single_cert(certs(&leaf.cert_file), key(&leaf.key_file))
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let snis: Arc<Mutex<Vec<String>>> = Arc::default();
        let s2 = snis.clone();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = tcp.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let snis = s2.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                    snis.lock().unwrap().push(sni.clone());
                    let svc =
                        hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                            let name = name.clone();
                            let sni = sni.clone();
                            async move {
                                Ok::<_, Infallible>(
                                    Response::builder()
                                        .header("x-seen-sni", sni)
                                        .body(Full::new(Bytes::from(name)))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsBackend { addr, snis, task }
    }
}

/// `curl -k`: accepts any server certificate (signatures still checked).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Fail clearly when an external tool is missing.
pub fn require_tool(tool: &str) {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: run `cargo xtask test` (installs it) or `apt-get install -y nghttp2-client curl`"
    );
}
