//! Upstream TLS: verification with the cluster's CA (a wrong CA is a 503
//! and a counted verify failure), SNI, client certificates for mTLS
//! upstreams, the same given inline (the key hidden in `/config_dump`),
//! explicit insecure_skip_verify.

mod common;
#[path = "common/tls.rs"]
mod tls;

use common::*;

fn config(clusters: &[(&str, u16, String)]) -> String {
    let mut routes = String::new();
    let mut blocks = String::new();
    for (name, port, tls) in clusters {
        routes.push_str(&format!(
            "          - match: {{prefix: /{name}}}\n            route: {{cluster: {name}}}\n"
        ));
        blocks.push_str(&static_cluster(name, &[*port], &format!("    tls:\n{tls}")));
        blocks.push('\n');
    }
    format!(
        r#"listeners:
  - name: l
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
{routes}clusters:
{blocks}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origination_verifies_with_ca_and_sends_sni() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "ca");
    let other = tls::Ca::new(dir.path(), "other");
    let leaf = ca.issue(dir.path(), "backend", &["backend.test"]);
    let backend = tls::TlsBackend::start("tls-backend", &leaf, None).await;
    let port = backend.addr.port();
    let cfg = config(&[
        (
            "good",
            port,
            format!(
                "      sni: backend.test\n      ca_file: {}\n",
                ca.pem_file.display()
            ),
        ),
        (
            "wrongca",
            port,
            format!(
                "      sni: backend.test\n      ca_file: {}\n",
                other.pem_file.display()
            ),
        ),
        (
            "wrongname",
            port,
            format!(
                "      sni: elsewhere.test\n      ca_file: {}\n",
                ca.pem_file.display()
            ),
        ),
        (
            "insecure",
            port,
            "      insecure_skip_verify: true\n".to_string(),
        ),
    ]);
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("l").await;
    let r = send(&client(), req("GET", &format!("http://{l}/good"), &[], "")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "tls-backend"));
    assert_eq!(r.headers["x-seen-sni"], "backend.test");
    for bad in ["wrongca", "wrongname"] {
        let r = send(&client(), req("GET", &format!("http://{l}/{bad}"), &[], "")).await;
        assert_eq!(r.status, 503, "{bad}");
        assert!(
            r.body.contains("certificate verify failed"),
            "{bad}: {}",
            r.body
        );
        let series = format!(
            r#"weir_tls_upstream_handshake_failures_total{{cluster="{bad}",reason="verify_failed"}}"#
        );
        assert_eq!(p.metric(&series).await, 1.0, "{bad}");
    }
    let r = send(
        &client(),
        req("GET", &format!("http://{l}/insecure"), &[], ""),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(p.stderr().contains("insecure_skip_verify is set"));
    assert_eq!(
        p.metric(r#"weir_tls_upstream_handshakes_total{cluster="good"}"#)
            .await,
        1.0
    );
    assert!(p.stderr().contains("TLS handshake with"), "failure logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origination_with_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "ca");
    let leaf = ca.issue(dir.path(), "backend", &["127.0.0.1"]);
    let client_ca = tls::Ca::new(dir.path(), "clients");
    let weir = client_ca.issue(dir.path(), "weir", &["weir.test"]);
    let backend = tls::TlsBackend::start("mtls-backend", &leaf, Some(&client_ca.pem_file)).await;
    let port = backend.addr.port();
    let cfg = config(&[
        (
            "withcert",
            port,
            format!(
                "      ca_file: {}\n      client_cert_file: {}\n      client_key_file: {}\n",
                ca.pem_file.display(),
                weir.cert_file.display(),
                weir.key_file.display()
            ),
        ),
        (
            "nocert",
            port,
            format!("      ca_file: {}\n", ca.pem_file.display()),
        ),
    ]);
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("l").await;
    // No sni: the endpoint's IP is verified against the certificate's IP SAN.
    let r = send(
        &client(),
        req("GET", &format!("http://{l}/withcert"), &[], ""),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "mtls-backend"));
    let r = send(
        &client(),
        req("GET", &format!("http://{l}/nocert"), &[], ""),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
}

/// The CA, client certificate and key given inline: verified and presented
/// as from files; `/config_dump` shows `[redacted]` for the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origination_with_inline_pem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::Ca::new(dir.path(), "ca");
    let other = tls::Ca::new(dir.path(), "other");
    let leaf = ca.issue(dir.path(), "backend", &["backend.test"]);
    let client_ca = tls::Ca::new(dir.path(), "clients");
    let weir = client_ca.issue(dir.path(), "weir", &["weir.test"]);
    let backend = tls::TlsBackend::start("inline-backend", &leaf, Some(&client_ca.pem_file)).await;
    let port = backend.addr.port();
    let inline_ca = |ca: &tls::Ca| {
        let pem = std::fs::read_to_string(&ca.pem_file).unwrap();
        format!(
            "      sni: backend.test\n      ca: {}",
            tls::yaml_block(&pem, 8)
        )
    };
    let cfg = config(&[
        (
            "inline",
            port,
            format!(
                "{}      client_cert: {}      client_key: {}",
                inline_ca(&ca),
                tls::yaml_block(&weir.cert_pem(), 8),
                tls::yaml_block(&weir.key_pem(), 8)
            ),
        ),
        ("wrongca", port, inline_ca(&other)),
    ]);
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("l").await;
    let r = send(
        &client(),
        req("GET", &format!("http://{l}/inline"), &[], ""),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "inline-backend"));
    assert_eq!(r.headers["x-seen-sni"], "backend.test");
    let r = send(
        &client(),
        req("GET", &format!("http://{l}/wrongca"), &[], ""),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("certificate verify failed"), "{}", r.body);

    let (_, dump) = p.admin_get("/config_dump").await;
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(v["clusters"][0]["tls"]["client_key"], "[redacted]");
    assert_eq!(
        v["clusters"][0]["tls"]["client_cert"],
        weir.cert_pem().as_str()
    );
    let secret = weir.key_pem().lines().nth(1).unwrap().to_owned();
    assert!(!dump.contains(&secret) && !dump.contains("PRIVATE KEY"));
    assert!(!p.stderr().contains(&secret));
}
