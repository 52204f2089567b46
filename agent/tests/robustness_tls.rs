//! TLS as scanners see it (issue 10, item 8): client-initiated
//! renegotiation closes at once, the server's cipher order wins, TLS 1.2
//! sessions resume across a certificate reload (tickets), and failed
//! handshakes are counted but logged at a bounded rate.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

struct Setup {
    p: Proxy,
    l: std::net::SocketAddr,
    ca: tls::Ca,
    dir: tempfile::TempDir,
    _backend: Backend,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "ca");
    let leaf = ca.issue(dir.path(), "server", &["proxy.test"]);
    let backend = Backend::named("svc").await;
    let cfg = format!(
        r#"listeners:
  - name: https
    address: 127.0.0.1:0
    tls:
      certificates: [{{cert_chain_file: {}, private_key_file: {}}}]
    virtual_hosts:
      - {{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: svc}}}}]}}
clusters:
{}"#,
        leaf.cert_file.display(),
        leaf.key_file.display(),
        static_cluster("svc", &[backend.port()], "")
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("https").await;
    Setup {
        p,
        l,
        ca,
        dir,
        _backend: backend,
    }
}

fn tls12_only(ca: &tls::Ca) -> Arc<rustls::ClientConfig> {
    tls::client_config(Some(&ca.pem_file), None, &[], &[&rustls::version::TLS12])
}

/// Handshake with `cfg`; the connection's state afterwards.
async fn handshake(
    l: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(l).await.unwrap();
    let name = ServerName::try_from("proxy.test").unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_renegotiation_is_refused_at_once() {
    tls::require_tool("openssl");
    let s = setup().await;
    let mut child = Command::new("openssl")
        .args(["s_client", "-tls1_2", "-msg", "-connect", &s.l.to_string()])
        .args(["-servername", "proxy.test", "-CAfile"])
        .arg(&s.ca.pem_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut child = Kill(child);
    // Wait for the handshake's summary before asking to renegotiate.
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = false;
    for line in lines.by_ref().map_while(Result::ok) {
        if line.contains("Verify return code") {
            seen = true;
            break;
        }
    }
    assert!(seen, "s_client finished no handshake");
    // What the client reads from here on (`-msg`: every record's type).
    let after = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    // "R" asks s_client to renegotiate; stdin stays open so only the
    // server's answer can end it.
    stdin.write_all(b"R\n").unwrap();
    stdin.flush().unwrap();
    let asked = Instant::now();
    let mut exited = false;
    while asked.elapsed() < Duration::from_secs(8) {
        if child.0.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited, "the renegotiating client still waits after 8 s");
    drop(stdin);
    // weir says why before closing, as nginx does: rustls' no_renegotiation
    // warning (then close_notify, which s_client, giving up on the warning
    // with its own handshake_failure, may exit before reading), not a bare FIN.
    let after = after.join().unwrap();
    assert!(
        after.iter().any(|l| l.starts_with("<<< ")
            && l.ends_with("Alert [length 0002], warning no_renegotiation")),
        "no no_renegotiation alert from weir:\n{}",
        after.join("\n")
    );
}

/// The server picks its own strongest suite, not the client's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_cipher_order_wins() {
    let s = setup().await;
    let mut provider = rustls::crypto::ring::default_provider();
    // A client that lists the suites weakest first.
    provider.cipher_suites.reverse();
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::certs(&s.ca.pem_file) {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = handshake(s.l, Arc::new(cfg)).await;
    let suite = conn.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(
        suite,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    );
}

/// A TLS 1.2 session resumes after the certificate files changed (the
/// ticket keys outlive the reload; a session cache would not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_sessions_resume_across_a_certificate_reload() {
    let s = setup().await;
    let resuming = tls12_only(&s.ca);
    let mut first = handshake(s.l, resuming.clone()).await;
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    let _ = first.shutdown().await;
    let renewed = s.ca.issue(s.dir.path(), "server", &["proxy.test"]);
    eventually(
        "the new certificate served",
        Duration::from_secs(10),
        || async {
            let c = handshake(s.l, tls12_only(&s.ca)).await;
            c.get_ref().1.peer_certificates().unwrap()[0] == renewed.der
        },
    )
    .await;
    let again = handshake(s.l, resuming).await;
    assert_eq!(
        again.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
}

/// 200 failed handshakes: all counted, at most a couple of log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_are_counted_and_logged_at_a_bounded_rate() {
    let s = setup().await;
    for _ in 0..200 {
        let mut c = TcpStream::connect(s.l).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut c, &mut buf),
        )
        .await;
    }
    eventually("every failure counted", Duration::from_secs(10), || async {
        let m = s.p.metrics().await;
        let total: f64 = m
            .lines()
            .filter(|l| l.starts_with("weir_tls_downstream_handshake_failures_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        total >= 200.0
    })
    .await;
    let logged = s.p.stderr().matches("TLS handshake from").count();
    assert!(
        (1..=3).contains(&logged),
        "{logged} log lines for 200 failures"
    );
}
