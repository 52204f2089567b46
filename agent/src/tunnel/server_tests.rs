//! The server side against hand-made requests: what it refuses before the
//! handler sees it, and its deadlines.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use super::test_support::{Ca, SERVER_NAME, Server, client_config, exchange, server_config};
use super::{ClientSettings, ServerLimits, Spawner, TunnelConnection, TunnelError, TunnelServer};

/// A bare HTTP/2 client on a tunnel connection, to send what the tunnel
/// client never would.
async fn raw_client(server: &Server, tls: Arc<rustls::ClientConfig>) -> SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let tls = TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn status(send: &mut SendRequest<Empty<Bytes>>, method: Method, uri: &str) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Empty::new())
        .unwrap();
    send.send_request(request).await.unwrap().status()
}

#[tokio::test]
async fn only_connect_to_an_ip_and_port_reaches_the_handler() {
    let ca = Ca::new("tunnel test CA");
    let server = Server::start(server_config(&ca, &ca.issue(SERVER_NAME))).await;
    let client_tls = client_config(&ca, &ca.issue("client"), &[b"h2"]);
    let mut send = raw_client(&server, client_tls).await;

    assert_eq!(
        status(&mut send, Method::CONNECT, "example.com:80").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status(&mut send, Method::CONNECT, "10.0.0.1").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status(&mut send, Method::GET, "https://10.0.0.1:80/").await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert!(server.handler.admitted.lock().unwrap().is_empty());

    assert_eq!(
        status(&mut send, Method::CONNECT, "10.0.0.1:80").await,
        StatusCode::OK
    );
    assert_eq!(server.handler.admitted.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_peer_that_never_asks_is_dropped_after_the_header_timeout() {
    let ca = Ca::new("tunnel test CA");
    let server = TunnelServer::new(
        server_config(&ca, &ca.issue(SERVER_NAME)),
        Arc::new(super::test_support::Echo::default()),
        ServerLimits {
            header_read_timeout: Duration::from_millis(200),
            ..ServerLimits::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client_tls = client_config(&ca, &ca.issue("client"), &[b"h2"]);
    // TLS, then silence: no HTTP/2 preface, no request.
    let silent = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let tls = TlsConnector::from(client_tls)
            .connect(name, tcp)
            .await
            .unwrap();
        std::future::pending::<()>().await;
        drop(tls);
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let served = server.serve(tcp, None).await;
    assert!(matches!(served, Err(TunnelError::TimedOut)), "{served:?}");
    silent.abort();
}

#[tokio::test]
async fn a_client_without_a_certificate_fails_tls() {
    let ca = Ca::new("tunnel test CA");
    let server = TunnelServer::new(
        server_config(&ca, &ca.issue(SERVER_NAME)),
        Arc::new(super::test_support::Echo::default()),
        ServerLimits::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let anonymous = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    };
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        // TLS 1.3: the client may finish before the server refuses it.
        let _ = TlsConnector::from(anonymous).connect(name, tcp).await;
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let served = server.serve(tcp, None).await;
    assert!(matches!(served, Err(TunnelError::Tls(_))), "{served:?}");
    client.await.unwrap();
}

/// A served connection run to its end by the test, with a client of its own.
struct Served {
    server: TunnelServer<super::test_support::Echo>,
    listener: TcpListener,
    client_tls: Arc<rustls::ClientConfig>,
}

impl Served {
    async fn new(limits: ServerLimits) -> Served {
        let ca = Ca::new("tunnel test CA");
        Served {
            server: TunnelServer::new(
                server_config(&ca, &ca.issue(SERVER_NAME)),
                Arc::new(super::test_support::Echo::default()),
                limits,
            ),
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            client_tls: client_config(&ca, &ca.issue("client"), &[b"h2"]),
        }
    }

    /// A tunnel connection to the server, as the pool makes them.
    fn connect(&self) -> impl Future<Output = TunnelConnection> + use<> {
        let addr = self.listener.local_addr().unwrap();
        let tls = Arc::clone(&self.client_tls);
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from(SERVER_NAME).unwrap();
            let settings = ClientSettings::default();
            TunnelConnection::establish(tcp, tls, name, &settings, &Spawner::default())
                .await
                .unwrap()
        }
    }
}

const TARGET: &str = "10.0.0.1:80";
const IDLE: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_connection_without_streams_for_the_idle_timeout_is_closed() {
    let served = Served::new(ServerLimits {
        header_read_timeout: Duration::from_millis(100),
        idle_timeout: IDLE,
        ..ServerLimits::default()
    })
    .await;
    let connect = served.connect();
    let client = tokio::spawn(async move {
        let conn = connect.await;
        let stream = conn.open(TARGET.parse().unwrap()).await.unwrap();
        // Held across three idle timeouts: a connection with a stream
        // open is not idle, however quiet the stream.
        tokio::time::sleep(IDLE * 3).await;
        assert!(!conn.is_closed(), "closed while a stream was open");
        let echoed = exchange(stream, b"still here".to_vec()).await;
        assert!(echoed.starts_with(b"still here"));
        (conn, Instant::now())
    });
    let (tcp, _) = served.listener.accept().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), served.server.serve(tcp, None))
        .await
        .expect("an idle connection is closed");
    let closed = Instant::now();
    // The client may hang up on the GOAWAY before the server's last write.
    assert!(
        matches!(result, Ok(()) | Err(TunnelError::Serve(_))),
        "{result:?}"
    );
    let (conn, stream_ended) = client.await.unwrap();
    let idle = closed - stream_ended;
    assert!(idle >= IDLE, "closed {idle:?} after its last stream ended");
    assert!(idle < IDLE * 2 + Duration::from_millis(500), "{idle:?}");
    assert!(conn.open(TARGET.parse().unwrap()).await.is_err());
}

#[tokio::test]
async fn shutting_down_refuses_new_streams_and_lets_open_ones_finish() {
    let served = Served::new(ServerLimits::default()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let connect = served.connect();
    let client = tokio::spawn(async move {
        let conn = connect.await;
        let stream = conn.open(TARGET.parse().unwrap()).await.unwrap();
        stop.send(()).unwrap();
        // GOAWAY reaches the client: no new stream is sent there.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !conn.is_closed() {
            assert!(Instant::now() < deadline, "GOAWAY never arrived");
            if conn.open(TARGET.parse().unwrap()).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        // The stream open before the drain still carries bytes both ways.
        exchange(stream, b"after the drain".to_vec()).await
    });
    let (tcp, _) = served.listener.accept().await.unwrap();
    let shutdown = async {
        let _ = stopped.await;
    };
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        served.server.serve_until(tcp, None, shutdown),
    )
    .await
    .expect("the connection ends once its last stream did");
    assert!(result.is_ok(), "{result:?}");
    let echoed = client.await.unwrap();
    assert!(echoed.starts_with(b"after the drain"), "{echoed:?}");
}
