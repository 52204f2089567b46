//! What the tunnel tests share: a throwaway PKI (rcgen) with rustls configs
//! verifying by a plain root store (the real verifier is the identity
//! module's), and a loopback tunnel server whose handler echoes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{
    ALPN_H2, Dial, PeerInfo, Refusal, ServerLimits, TunnelHandler, TunnelServer, TunnelStream,
};

/// The name clients send and the test server's certificate carries.
pub const SERVER_NAME: &str = "tunnel.weir.invalid";

/// What the echo handler writes once it has read the client's EOF.
pub const AFTER_EOF: &[u8] = b"<after eof>";

/// A target port the handler refuses by policy.
pub const FORBIDDEN_PORT: u16 = 1;

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

pub struct Leaf {
    pub cert: CertificateDer<'static>,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn issue(&self, name: &str) -> Leaf {
        let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert: cert.der().clone(),
            key,
        }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        Arc::new(roots)
    }
}

impl Leaf {
    fn chain(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = PrivateKeyDer::Pkcs8(self.key.serialize_der().into());
        (vec![self.cert.clone()], key)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Presents `leaf`, requires a client certificate from `ca`, offers h2.
pub fn server_config(ca: &Ca, leaf: &Leaf) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(ca.roots(), provider())
        .build()
        .unwrap();
    let (chain, key) = leaf.chain();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Arc::new(config)
}

/// Trusts `ca`, presents `leaf`, offers `alpn`.
pub fn client_config(ca: &Ca, leaf: &Leaf, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let (chain, key) = leaf.chain();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(config)
}

/// A dial to `addr` with `tls`, as the pool takes it.
pub fn dial(
    addr: SocketAddr,
    tls: &Arc<ClientConfig>,
) -> Dial<impl FnOnce() -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send>>> {
    Dial {
        connect: move || {
            Box::pin(TcpStream::connect(addr)) as Pin<Box<dyn Future<Output = _> + Send>>
        },
        tls: Arc::clone(tls),
        server_name: ServerName::try_from(SERVER_NAME).unwrap(),
    }
}

/// Echoes, then after the client's EOF writes [`AFTER_EOF`] and ends its
/// side; refuses [`FORBIDDEN_PORT`]. Remembers what it was asked.
#[derive(Default)]
pub struct Echo {
    pub admitted: Mutex<Vec<(SocketAddr, Vec<CertificateDer<'static>>)>>,
    /// Each served stream's baggage, in the order they were served.
    pub baggage: Mutex<Vec<Option<String>>>,
}

impl TunnelHandler for Echo {
    fn admit(&self, peer: &PeerInfo, target: SocketAddr) -> Result<(), Refusal> {
        if target.port() == FORBIDDEN_PORT {
            return Err(Refusal::Forbidden);
        }
        self.admitted
            .lock()
            .unwrap()
            .push((target, peer.certs.clone()));
        Ok(())
    }

    fn serve(
        &self,
        _peer: Arc<PeerInfo>,
        _target: SocketAddr,
        mut stream: TunnelStream,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.baggage
            .lock()
            .unwrap()
            .push(stream.baggage().map(str::to_owned));
        Box::pin(async move {
            let mut buf = vec![0; 64 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            let _ = stream.write_all(AFTER_EOF).await;
            let _ = stream.shutdown().await;
        })
    }
}

/// A loopback tunnel server; its connections can be killed without
/// closing the listener.
pub struct Server {
    pub addr: SocketAddr,
    pub handler: Arc<Echo>,
    accepted: Arc<AtomicUsize>,
    connections: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(tls: Arc<ServerConfig>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(Echo::default());
        let server = TunnelServer::new(tls, Arc::clone(&handler), ServerLimits::default());
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let (accepted, connections) = (Arc::clone(&accepted), Arc::clone(&connections));
            async move {
                while let Ok((tcp, peer)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let server = server.clone();
                    connections.lock().unwrap().spawn(async move {
                        let _ = server.serve(tcp, Some(peer)).await;
                    });
                }
            }
        });
        Server {
            addr,
            handler,
            accepted,
            connections,
            accept,
        }
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Drops every connection served so far, as a crashed peer would.
    pub fn kill_connections(&self) {
        self.connections.lock().unwrap().abort_all();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        self.kill_connections();
    }
}

/// Writes `data`, ends the write side, reads to EOF.
pub async fn exchange(stream: TunnelStream, data: Vec<u8>) -> Vec<u8> {
    let (mut read, mut write) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        write.write_all(&data).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    read.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    got
}
