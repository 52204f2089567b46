//! The client side against a loopback tunnel server: streams, pooling,
//! failures and the pool's bound.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::test_support::{AFTER_EOF, Ca, Server, client_config, dial, exchange, server_config};
use super::{PoolConfig, Reuse, TunnelError, TunnelPool};

const TIMEOUT: Duration = Duration::from_secs(10);

fn target(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 1, 2, 3], port))
}

struct Setup {
    server: Server,
    client_tls: std::sync::Arc<rustls::ClientConfig>,
    client_cert: rustls_pki_types::CertificateDer<'static>,
    server_cert: rustls_pki_types::CertificateDer<'static>,
}

async fn setup() -> Setup {
    let ca = Ca::new("tunnel test CA");
    let server_leaf = ca.issue(super::test_support::SERVER_NAME);
    let client_leaf = ca.issue("client.weir.invalid");
    Setup {
        server: Server::start(server_config(&ca, &server_leaf)).await,
        client_tls: client_config(&ca, &client_leaf, &[b"h2"]),
        client_cert: client_leaf.cert.clone(),
        server_cert: server_leaf.cert.clone(),
    }
}

#[tokio::test]
async fn bytes_round_trip_to_the_asked_target_with_both_chains() {
    let s = setup().await;
    let pool = TunnelPool::new(PoolConfig::default());
    let tunnel = pool
        .connect(
            &"a",
            target(8080),
            dial(s.server.addr, &s.client_tls),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(tunnel.reuse, Reuse::New);
    assert_eq!(tunnel.peer_certs.first(), Some(&s.server_cert));

    let mut stream = tunnel.stream;
    stream.write_all(b"hello").await.unwrap();
    let mut got = [0; 5];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");

    let admitted = s.server.handler.admitted.lock().unwrap().clone();
    assert_eq!(admitted.len(), 1);
    let (seen_target, seen_chain) = &admitted[0];
    assert_eq!(*seen_target, target(8080));
    assert_eq!(seen_chain.first(), Some(&s.client_cert));
}

#[tokio::test]
async fn ipv6_target_reaches_the_handler_unchanged() {
    let s = setup().await;
    let pool = TunnelPool::new(PoolConfig::default());
    let v6: SocketAddr = "[fd00::17]:443".parse().unwrap();
    pool.connect(&"a", v6, dial(s.server.addr, &s.client_tls), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(s.server.handler.admitted.lock().unwrap()[0].0, v6);
}

#[tokio::test]
async fn streams_of_one_key_share_a_connection_and_keys_do_not() {
    let s = setup().await;
    let pool = TunnelPool::new(PoolConfig::default());
    let connect = |key: &'static str| {
        let pool = pool.clone();
        let dial = dial(s.server.addr, &s.client_tls);
        async move { pool.connect(&key, target(80), dial, TIMEOUT).await.unwrap() }
    };

    let first = connect("a").await;
    let second = connect("a").await;
    assert_eq!((first.reuse, second.reuse), (Reuse::New, Reuse::Reused));
    assert_eq!(s.server.accepted(), 1);
    // Both streams are live at once on the one connection.
    assert_eq!(
        exchange(second.stream, b"2".to_vec()).await,
        [b"2", AFTER_EOF].concat()
    );
    assert_eq!(
        exchange(first.stream, b"1".to_vec()).await,
        [b"1", AFTER_EOF].concat()
    );

    let other = connect("b").await;
    assert_eq!(other.reuse, Reuse::New);
    assert_eq!(s.server.accepted(), 2);

    // Concurrent first opens of a key wait for one connection.
    let many = futures_util::future::join_all((0..5).map(|_| connect("c"))).await;
    let new = many.iter().filter(|t| t.reuse == Reuse::New).count();
    assert_eq!(new, 1);
    assert_eq!(s.server.accepted(), 3);
}

#[tokio::test]
async fn half_close_reaches_the_server_and_its_reply_still_arrives() {
    let s = setup().await;
    let pool = TunnelPool::new(PoolConfig::default());
    let mut stream = pool
        .connect(
            &"a",
            target(80),
            dial(s.server.addr, &s.client_tls),
            TIMEOUT,
        )
        .await
        .unwrap()
        .stream;
    stream.write_all(b"ping").await.unwrap();
    stream.shutdown().await.unwrap();
    // The handler writes AFTER_EOF only once it read our EOF, after which
    // its bytes must still reach us, and then its own EOF.
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, [b"ping", AFTER_EOF].concat());
}

#[tokio::test]
async fn eight_mebibytes_each_way() {
    let s = setup().await;
    let pool = TunnelPool::new(PoolConfig::default());
    let stream = pool
        .connect(
            &"a",
            target(80),
            dial(s.server.addr, &s.client_tls),
            TIMEOUT,
        )
        .await
        .unwrap()
        .stream;
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let got = exchange(stream, data.clone()).await;
    assert_eq!(got.len(), data.len() + AFTER_EOF.len());
    assert!(got[..data.len()] == data[..], "the bytes came back changed");
}

#[tokio::test]
async fn refused_by_the_handler_is_its_status() {
    let s = setup().await;
    let pool = TunnelPool::new(PoolConfig::default());
    let refused = pool
        .connect(
            &"a",
            target(super::test_support::FORBIDDEN_PORT),
            dial(s.server.addr, &s.client_tls),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, TunnelError::Status(status) if status == 403),
        "{refused:?}"
    );
    // A refused stream leaves the connection pooled.
    let next = pool
        .connect(
            &"a",
            target(80),
            dial(s.server.addr, &s.client_tls),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(next.reuse, Reuse::Reused);
}

#[tokio::test]
async fn nobody_listening_is_refused_and_leaves_no_entry() {
    let (ca, leaf) = (Ca::new("ca"), Ca::new("other").issue("client"));
    let free = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let pool = TunnelPool::new(PoolConfig::default());
    let error = pool
        .connect(
            &"a",
            target(80),
            dial(free, &client_config(&ca, &leaf, &[b"h2"])),
            TIMEOUT,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, TunnelError::Dial(_)), "{error:?}");
    assert!(error.is_refused());
    assert!(pool.is_empty());
}

#[tokio::test]
async fn server_from_another_ca_is_a_tls_failure_not_a_refusal() {
    let s = setup().await;
    let stranger = Ca::new("another CA");
    let client_tls = client_config(&stranger, &stranger.issue("client"), &[b"h2"]);
    let pool = TunnelPool::new(PoolConfig::default());
    let error = pool
        .connect(&"a", target(80), dial(s.server.addr, &client_tls), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(error, TunnelError::Tls(_)), "{error:?}");
    assert!(!error.is_refused());
    assert!(pool.is_empty());
}

#[tokio::test]
async fn a_peer_without_h2_is_refused() {
    let s = setup().await;
    let no_alpn = {
        let mut config = (*s.client_tls).clone();
        config.alpn_protocols.clear();
        std::sync::Arc::new(config)
    };
    let pool = TunnelPool::new(PoolConfig::default());
    let error = pool
        .connect(&"a", target(80), dial(s.server.addr, &no_alpn), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(error, TunnelError::NoH2), "{error:?}");
}

#[tokio::test]
async fn a_closed_connection_is_replaced() {
    let s = setup().await;
    let pool = TunnelPool::new(PoolConfig::default());
    let mut first = pool
        .connect(
            &"a",
            target(80),
            dial(s.server.addr, &s.client_tls),
            TIMEOUT,
        )
        .await
        .unwrap()
        .stream;
    s.server.kill_connections();
    // The stream ends once the client side has seen the connection go.
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest).await;

    let next = pool
        .connect(
            &"a",
            target(80),
            dial(s.server.addr, &s.client_tls),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(next.reuse, Reuse::New);
    assert_eq!(s.server.accepted(), 2);
    assert_eq!(
        exchange(next.stream, b"x".to_vec()).await,
        [b"x", AFTER_EOF].concat()
    );
}

#[tokio::test]
async fn the_pool_never_holds_more_keys_than_its_bound() {
    let s = setup().await;
    let pool = TunnelPool::new(PoolConfig {
        max_keys: 3,
        ..PoolConfig::default()
    });
    let mut streams = Vec::new();
    for key in 0..8 {
        let tunnel = pool
            .connect(
                &key,
                target(80),
                dial(s.server.addr, &s.client_tls),
                TIMEOUT,
            )
            .await
            .unwrap();
        assert_eq!(tunnel.reuse, Reuse::New);
        assert!(pool.len() <= 3, "{} keys", pool.len());
        streams.push(tunnel.stream);
    }
    assert_eq!(pool.len(), 3);
    // Eviction forgot connections that still carried a stream; the
    // streams go on.
    for (i, stream) in streams.into_iter().enumerate() {
        let byte = vec![i as u8];
        assert_eq!(
            exchange(stream, byte.clone()).await,
            [&byte[..], AFTER_EOF].concat()
        );
    }
}

#[tokio::test]
async fn a_dial_that_outlives_the_timeout_is_timed_out_and_leaves_no_entry() {
    let s = setup().await;
    let pool = TunnelPool::<&str>::new(PoolConfig::default());
    let never = super::Dial {
        connect: || std::future::pending::<std::io::Result<tokio::net::TcpStream>>(),
        tls: s.client_tls.clone(),
        server_name: rustls_pki_types::ServerName::try_from(super::test_support::SERVER_NAME)
            .unwrap(),
    };
    let error = pool
        .connect(&"a", target(80), never, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(error, TunnelError::TimedOut), "{error:?}");
    assert!(!error.is_refused());
    assert!(pool.is_empty());
}

/// Callers spawn these futures, so they must be `Send`; checked when
/// compiling, never run.
#[expect(dead_code, reason = "a compile-time check")]
fn futures_are_send(
    pool: TunnelPool<(u32, SocketAddr)>,
    server: super::TunnelServer<super::test_support::Echo>,
    tls: std::sync::Arc<rustls::ClientConfig>,
    tcp: tokio::net::TcpStream,
) {
    fn send<T: Send>(_: T) {}
    let addr = target(80);
    send(pool.connect(&(1, addr), addr, dial(addr, &tls), TIMEOUT));
    send(server.serve(tcp, None));
}

#[tokio::test]
async fn baggage_reaches_the_handler_within_its_bound() {
    let s = setup().await;
    let pool = TunnelPool::new(PoolConfig::default());
    let said = HeaderValue::from_static("k8s.namespace.name=shop,k8s.workload.name=web");
    let too_long = HeaderValue::from_str(&"x".repeat(super::MAX_BAGGAGE + 1)).unwrap();
    for baggage in [Some(&said), None, Some(&too_long)] {
        let tunnel = pool
            .connect_with(
                &"a",
                (target(8080), baggage),
                dial(s.server.addr, &s.client_tls),
                TIMEOUT,
            )
            .await
            .unwrap();
        // Served once bytes flow: the handler has run by the echo.
        let echoed = exchange(tunnel.stream, b"x".to_vec()).await;
        assert!(echoed.starts_with(b"x"));
    }
    let seen = s.server.handler.baggage.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            Some("k8s.namespace.name=shop,k8s.workload.name=web".to_owned()),
            None,
            None
        ]
    );
}
