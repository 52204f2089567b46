//! Downstream TLS: seed 001 (`curl -k` over https), certificates by SNI,
//! client certificates (mTLS), minimum version, certificate reload, inline
//! PEM (its key kept out of `/config_dump` and the log), and clear errors
//! for bad files and failed handshakes.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::time::Duration;

use common::*;

fn tls_config(backend: u16, tls_block: &str) -> String {
    format!(
        r#"listeners:
  - name: https
    address: 127.0.0.1:0
    tls:
{tls_block}
    virtual_hosts:
      - name: backend
        domains: ["*"]
        routes:
          - match: {{prefix: /}}
            route: {{cluster: films}}
clusters:
{}"#,
        static_cluster("films", &[backend], "")
    )
}

/// Seed 001: `curl -kvs https://127.0.0.1:PORT/films` through a TLS listener
/// with a self-signed certificate from files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_curl_https_films() {
    tls::require_tool("curl");
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(dir.path(), "envoy", &["localhost"]);
    let film = Backend::named("film-service").await;
    let certificates = format!(
        "      certificates:\n        - cert_chain_file: {}\n          private_key_file: {}\n",
        cert.cert_file.display(),
        cert.key_file.display()
    );
    // As the seed's Envoy listener, which sets no ALPN: curl offers h2 and
    // http/1.1, the server agrees to neither, and HTTP/1.1 it is.
    let mut plain = Proxy::start(&tls_config(film.port(), &certificates)).await;
    let l = plain.listener("https").await;
    let out = tokio::process::Command::new("curl")
        .args(["-kvs", "--max-time", "10"])
        .arg(format!("https://127.0.0.1:{}/films", l.port()))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "film-service");
    assert!(
        stderr.contains("server did not agree") && stderr.contains("< HTTP/1.1 200"),
        "no ALPN by default: {stderr}"
    );
    assert!(stderr.contains("< server: envoy"), "{stderr}");

    // With `alpn: [h2, http/1.1]`, both.
    let cfg = tls_config(
        film.port(),
        &format!("{certificates}      alpn: [h2, http/1.1]\n"),
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("https").await;
    for http in ["--http1.1", "--http2"] {
        let out = tokio::process::Command::new("curl")
            .args(["-kvs", http, "--max-time", "10"])
            .arg(format!("https://127.0.0.1:{}/films", l.port()))
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "curl {http} failed: {stderr}");
        assert_eq!(stdout, "film-service", "curl {http}: {stderr}");
        let want = if http == "--http2" {
            "ALPN: server accepted h2"
        } else {
            "ALPN: server accepted http/1.1"
        };
        assert!(stderr.contains(want), "curl {http}: {stderr}");
    }
    assert_eq!(
        p.metric(r#"weir_tls_downstream_handshakes_total{listener="https"}"#)
            .await,
        2.0
    );
    assert_eq!(
        p.metric(
            r#"weir_http_downstream_requests_by_protocol_total{listener="https",protocol="HTTP/2"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        p.metric(r#"weir_http_downstream_requests_by_protocol_total{listener="https",protocol="HTTP/1.1"}"#)
            .await,
        1.0
    );
}

/// Two certificates chosen by SNI; an unknown name gets the first (default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "ca");
    let a = ca.issue(dir.path(), "a", &["a.test"]);
    let b = ca.issue(dir.path(), "b", &["b.test", "*.b.test"]);
    let backend = Backend::named("svc").await;
    let cfg = tls_config(
        backend.port(),
        &format!(
            "      certificates:\n        - {{cert_chain_file: {}, private_key_file: {}, server_names: [a.test]}}\n        - {{cert_chain_file: {}, private_key_file: {}, server_names: [b.test, \"*.b.test\"]}}\n",
            a.cert_file.display(),
            a.key_file.display(),
            b.cert_file.display(),
            b.key_file.display()
        ),
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("https").await;
    let cc = tls::client_config(
        Some(&ca.pem_file),
        None,
        &[b"http/1.1"],
        tls::default_versions(),
    );
    for (sni, want) in [("a.test", &a.der), ("b.test", &b.der), ("x.b.test", &b.der)] {
        let r = tls::get(l, sni, cc.clone(), "/").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "svc");
        assert_eq!(&r.peer_cert, want, "certificate for {sni}");
    }
    // Unknown name: the default certificate (a.test), which then fails verification.
    let any = tls::client_config(None, None, &[b"http/1.1"], tls::default_versions());
    let r = tls::get(l, "other.test", any, "/").await.unwrap();
    assert_eq!(r.peer_cert, a.der);
}

/// A certificate and key given inline (Envoy's `inline_string`) are
/// served; `/config_dump` and the logged effective config show the
/// certificate but `[redacted]` for the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "ca");
    let server = ca.issue(dir.path(), "server", &["proxy.test"]);
    let client_ca = tls::Ca::new(dir.path(), "clients");
    let client = client_ca.issue(dir.path(), "client", &["client.test"]);
    let (cert, key) = (server.cert_pem(), server.key_pem());
    let backend = Backend::named("inline").await;
    let cfg = tls_config(
        backend.port(),
        &format!(
            "      certificates:\n        - cert_chain: {}          private_key: {}      client_ca: {}",
            tls::yaml_block(&cert, 12),
            tls::yaml_block(&key, 12),
            tls::yaml_block(&std::fs::read_to_string(&client_ca.pem_file).unwrap(), 8),
        ),
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("https").await;
    let cc = tls::client_config(
        Some(&ca.pem_file),
        Some(&client),
        &[b"http/1.1"],
        tls::default_versions(),
    );
    let r = tls::get(l, "proxy.test", cc, "/").await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "inline"));
    assert_eq!(r.peer_cert, server.der);

    let (_, dump) = p.admin_get("/config_dump").await;
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let served = &v["listeners"][0]["tls"]["certificates"][0];
    assert_eq!(served["private_key"], "[redacted]");
    assert_eq!(served["cert_chain"], cert.as_str());
    // Any line of the key's base64, not only its armour, would be a leak.
    let secret = key.lines().nth(1).unwrap();
    for shown in [&dump, &p.stderr()] {
        assert!(!shown.contains(secret) && !shown.contains("PRIVATE KEY"));
    }
    assert!(p.stderr().contains("[redacted]"), "effective config logged");
}

/// require_client_certificate: no certificate is refused (counted), a
/// certificate signed by client_ca_file passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_required() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "ca");
    let server = ca.issue(dir.path(), "server", &["proxy.test"]);
    let client_ca = tls::Ca::new(dir.path(), "clients");
    let good = client_ca.issue(dir.path(), "good", &["client.test"]);
    let rogue = ca.issue(dir.path(), "rogue", &["client.test"]);
    let backend = Backend::named("secure").await;
    let cfg = tls_config(
        backend.port(),
        &format!(
            "      certificates: [{{cert_chain_file: {}, private_key_file: {}}}]\n      client_ca_file: {}\n      require_client_certificate: true\n",
            server.cert_file.display(),
            server.key_file.display(),
            client_ca.pem_file.display()
        ),
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("https").await;
    let v = tls::default_versions();
    let none = tls::client_config(Some(&ca.pem_file), None, &[b"http/1.1"], v);
    assert!(tls::get(l, "proxy.test", none, "/").await.is_err());
    let bad = tls::client_config(Some(&ca.pem_file), Some(&rogue), &[b"http/1.1"], v);
    assert!(tls::get(l, "proxy.test", bad, "/").await.is_err());
    let ok = tls::client_config(Some(&ca.pem_file), Some(&good), &[b"http/1.1"], v);
    let r = tls::get(l, "proxy.test", ok, "/").await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "secure"));
    let fail = |reason: &str| {
        format!(
            r#"weir_tls_downstream_handshake_failures_total{{listener="https",reason="{reason}"}}"#
        )
    };
    eventually("both refusals counted", Duration::from_secs(5), || async {
        p.metric(&fail("no_client_certificate")).await == 1.0
            && p.metric(&fail("verify_failed")).await == 1.0
    })
    .await;
    assert!(p.stderr().contains("TLS handshake from"), "failure logged");
}

/// min_version TLSv1_3 refuses a TLS 1.2-only client; plain HTTP to the TLS
/// port is counted as not_tls; the listener keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_and_bad_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "ca");
    let server = ca.issue(dir.path(), "server", &["proxy.test"]);
    let backend = Backend::named("svc").await;
    let cfg = tls_config(
        backend.port(),
        &format!(
            "      certificates: [{{cert_chain_file: {}, private_key_file: {}}}]\n      min_version: TLSv1_3\n",
            server.cert_file.display(),
            server.key_file.display()
        ),
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("https").await;
    let old = tls::client_config(Some(&ca.pem_file), None, &[], &[&rustls::version::TLS12]);
    assert!(tls::get(l, "proxy.test", old, "/").await.is_err());
    let _ = reqwest_plain(l).await;
    let new = tls::client_config(Some(&ca.pem_file), None, &[], &[&rustls::version::TLS13]);
    let r = tls::get(l, "proxy.test", new, "/").await.unwrap();
    assert_eq!(r.status, 200);
    let fail = |reason: &str| {
        format!(
            r#"weir_tls_downstream_handshake_failures_total{{listener="https",reason="{reason}"}}"#
        )
    };
    eventually("failures counted", Duration::from_secs(5), || async {
        p.metric(&fail("incompatible")).await == 1.0 && p.metric(&fail("not_tls")).await == 1.0
    })
    .await;
}

/// Plain HTTP/1.1 bytes to a TLS port.
async fn reqwest_plain(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    Ok(())
}

/// Changed certificate files are served without a restart; a bad file keeps
/// the old certificate (reload failure counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "ca");
    let first = ca.issue(dir.path(), "server", &["proxy.test"]);
    let backend = Backend::named("svc").await;
    let cfg = tls_config(
        backend.port(),
        &format!(
            "      certificates: [{{cert_chain_file: {}, private_key_file: {}}}]\n",
            first.cert_file.display(),
            first.key_file.display()
        ),
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("https").await;
    // A fresh client each time: a resumed session (tickets) shows the
    // certificate of the session, not the one being served now.
    let served = || async {
        let cc = tls::client_config(Some(&ca.pem_file), None, &[], tls::default_versions());
        tls::get(l, "proxy.test", cc, "/").await.unwrap().peer_cert
    };
    assert_eq!(served().await, first.der);
    // Same file names, new certificate and key.
    let second = ca.issue(dir.path(), "server", &["proxy.test"]);
    eventually(
        "new certificate served",
        Duration::from_secs(10),
        || async { served().await == second.der },
    )
    .await;
    // A broken key: the second certificate stays.
    std::fs::write(&second.key_file, "not a key").unwrap();
    eventually(
        "reload failure counted",
        Duration::from_secs(10),
        || async {
            p.metric(r#"weir_tls_certificate_reloads_total{listener="https",outcome="failure"}"#)
                .await
                >= 1.0
        },
    )
    .await;
    assert_eq!(served().await, second.der);
    assert!(p.stderr().contains("keeping the old certificates"));
}

/// A missing or bad file at startup is a clear error naming field and file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let missing = dir.path().join("missing.pem");
    for (cert, want) in [
        (&missing, "does not exist"),
        (&garbage, "no CERTIFICATE block found"),
    ] {
        let cfg = tls_config(
            9,
            &format!(
                "      certificates: [{{cert_chain_file: {}, private_key_file: {}}}]\n",
                cert.display(),
                garbage.display()
            ),
        );
        let path = dir.path().join("weir.yaml");
        std::fs::write(&path, format!("admin:\n  address: 127.0.0.1:0\n{cfg}")).unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
                .args(["proxy", "--config"])
                .arg(&path)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("weir exits on a bad certificate file")
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(want) && err.contains("cert_chain_file"),
            "{err}"
        );
        assert!(err.contains(&cert.display().to_string()), "{err}");
    }
}
