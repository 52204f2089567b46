//! HTTP/1.1 upgrades (WebSocket) as Envoy's `upgrade_configs`: tunnelled
//! when the listener allows the type, refused with Envoy's 403 otherwise.

mod common;
#[path = "common/upgrade.rs"]
mod upgrade;

use common::*;
use upgrade::{TUNNEL_MESSAGE, UpgradeServer, upgrade_and_echo};

fn config(listener_extra: &str, cluster_port: u16) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
{listener_extra}    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{prefix: /}}
            route: {{cluster: up, retry_policy: {{retry_on: [5xx, reset], num_retries: 2}}}}
clusters:
{}"#,
        static_cluster("up", &[cluster_port], "")
    )
}

/// A listener with `upgrade_types: [websocket]`: the 101 comes through with
/// its headers, then bytes flow both ways and a half-close is passed on;
/// plain requests on the same listener are unaffected, and the connection
/// an upgrade took (an idle pooled one here) never goes back to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled_when_allowed() {
    let server = UpgradeServer::start().await;
    let mut p = Proxy::start(&config(
        "    upgrade_types: [websocket]\n",
        server.addr.port(),
    ))
    .await;
    let l = p.listener("main").await;
    let plain = || async { get(&format!("http://{l}/")).await.0 };
    // The server answers plain requests 426; the connection stays pooled.
    assert_eq!(plain().await, 426);
    let up = upgrade_and_echo(l, "chat.local").await;
    let head = up.head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{}", up.head);
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{}", up.head);
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{}", up.head);
    assert!(head.contains("\r\nsec-websocket-accept: "), "{}", up.head);
    assert!(head.contains("\r\nserver: envoy\r\n"), "{}", up.head);
    // As Envoy 1.40's 101: no service time.
    assert!(
        !head.contains("x-envoy-upstream-service-time"),
        "{}",
        up.head
    );
    let (echoed, closed) = up.echoed.expect("tunnel");
    assert_eq!(echoed, TUNNEL_MESSAGE);
    assert!(closed, "half-close passed through and back");
    assert_eq!(server.upgrades.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_requests_total{cluster="up",response_code_class="1xx"}"#)
            .await,
        1.0
    );
    // The upgrade took the pooled connection: the next plain request needs
    // a new one (sent into the tunnel instead, it would come back echoed).
    assert_eq!(plain().await, 426);
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_connections_total{cluster="up"}"#)
            .await,
        2.0
    );
}

/// An offer to switch to cleartext HTTP/2 (`curl --http2 http://`, Java's
/// HttpClient) is served as HTTP/1.1 without its upgrade headers, as Envoy
/// does, even where no upgrade is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_offer_is_served_as_http1() {
    let backend = Backend::named("plain").await;
    let mut p = Proxy::start(&config("", backend.port())).await;
    let l = p.listener("main").await;
    let r = send(
        &client(),
        req(
            "GET",
            &format!("http://{l}/"),
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "plain"));
    for header in [
        "x-echo-upgrade",
        "x-echo-http2-settings",
        "x-echo-connection",
    ] {
        assert!(!r.headers.contains_key(header), "{header}: {:?}", r.headers);
    }
}

/// Envoy's default: a listener without `upgrade_types` answers an upgrade
/// request with 403, empty, and closes (checked against Envoy 1.40); the
/// upstream never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_not_configured_is_refused_with_403() {
    let server = UpgradeServer::start().await;
    let mut p = Proxy::start(&config("", server.addr.port())).await;
    let l = p.listener("main").await;
    let up = upgrade_and_echo(l, "chat.local").await;
    let head = up.head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 403"), "{}", up.head);
    assert!(head.contains("\r\ncontent-length: 0\r\n"), "{}", up.head);
    assert!(head.contains("\r\nconnection: close\r\n"), "{}", up.head);
    assert!(up.echoed.is_none());
    assert_eq!(server.upgrades.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(
        p.metric(
            r#"weir_http_downstream_requests_total{listener="main",response_code_class="4xx"}"#
        )
        .await,
        1.0
    );
}
