//! gRPC through weir: a tonic client and server (hand-written prost
//! messages, no protoc), unary and server-streaming calls, an error
//! status, and the gRPC status metric. Downstream h2 by prior knowledge,
//! upstream `http2: true`.

#![expect(
    clippy::result_large_err,
    reason = "tonic's stream items are Result<_, Status>"
)]

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::*;
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codec::ProstCodec;
use tonic::{Code, Status};

#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
}

const SAY_HELLO: &str = "/test.Greeter/SayHello";
const COUNT: &str = "/test.Greeter/Count";

struct SayHello;

impl tonic::server::UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<HelloReply>, Status>> + Send>>;

    fn call(&mut self, req: tonic::Request<HelloRequest>) -> Self::Future {
        let name = req.into_inner().name;
        Box::pin(async move {
            if name.is_empty() {
                return Err(Status::not_found("no name"));
            }
            Ok(tonic::Response::new(HelloReply {
                message: format!("hello {name}"),
            }))
        })
    }
}

struct Count;

type ReplyStream = tokio_stream::Iter<std::vec::IntoIter<Result<HelloReply, Status>>>;

#[expect(
    clippy::result_large_err,
    reason = "tonic's stream item type is Result<_, Status>"
)]
fn tick(name: &str, i: u32) -> Result<HelloReply, Status> {
    Ok(HelloReply {
        message: format!("{name} {i}"),
    })
}

impl tonic::server::ServerStreamingService<HelloRequest> for Count {
    type Response = HelloReply;
    type ResponseStream = ReplyStream;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<ReplyStream>, Status>> + Send>>;

    fn call(&mut self, req: tonic::Request<HelloRequest>) -> Self::Future {
        let r = req.into_inner();
        Box::pin(async move {
            let items: Vec<_> = (1..=r.count).map(|i| tick(&r.name, i)).collect();
            Ok(tonic::Response::new(tokio_stream::iter(items)))
        })
    }
}

/// A tonic server on a hyper HTTP/2 connection per accepted socket.
async fn grpc_server() -> (u16, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let mut g = tonic::server::Grpc::new(
                            ProstCodec::<HelloReply, HelloRequest>::default(),
                        );
                        let resp = match req.uri().path() {
                            SAY_HELLO => g.unary(SayHello, req).await,
                            COUNT => g.server_streaming(Count, req).await,
                            _ => Status::unimplemented("no such method").into_http(),
                        };
                        Ok::<_, Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (port, task)
}

/// tonic's client over one hyper HTTP/2 connection (prior knowledge).
#[derive(Clone)]
struct H2Channel(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower_service::Service<http::Request<tonic::body::Body>> for H2Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

async fn grpc_client(addr: std::net::SocketAddr) -> tonic::client::Grpc<H2Channel> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let origin = format!("http://{addr}").parse().unwrap();
    tonic::client::Grpc::with_origin(H2Channel(tx), origin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_server_streaming_through_weir() {
    let (port, server) = grpc_server().await;
    let cfg = format!(
        r#"listeners:
  - name: grpc
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{prefix: /test.Greeter/}}
            route: {{cluster: greeter}}
clusters:
{}"#,
        static_cluster("greeter", &[port], "    http2: true\n")
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("grpc").await;
    let mut c = grpc_client(l).await;

    c.ready().await.unwrap();
    let reply = c
        .unary(
            tonic::Request::new(HelloRequest {
                name: "weir".into(),
                count: 0,
            }),
            PathAndQuery::from_static(SAY_HELLO),
            ProstCodec::<HelloRequest, HelloReply>::default(),
        )
        .await
        .expect("unary call");
    assert_eq!(reply.into_inner().message, "hello weir");

    c.ready().await.unwrap();
    let mut stream = c
        .server_streaming(
            tonic::Request::new(HelloRequest {
                name: "tick".into(),
                count: 3,
            }),
            PathAndQuery::from_static(COUNT),
            ProstCodec::<HelloRequest, HelloReply>::default(),
        )
        .await
        .expect("streaming call")
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.expect("stream message") {
        got.push(m.message);
    }
    assert_eq!(got, ["tick 1", "tick 2", "tick 3"]);
    let trailers = stream.trailers().await.unwrap();
    assert!(trailers.is_some(), "grpc-status trailers passed through");

    c.ready().await.unwrap();
    let err = c
        .unary(
            tonic::Request::new(HelloRequest::default()),
            PathAndQuery::from_static(SAY_HELLO),
            ProstCodec::<HelloRequest, HelloReply>::default(),
        )
        .await
        .expect_err("status from the server");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no name");

    let series = |code: &str| {
        format!(
            r#"weir_http_downstream_grpc_responses_total{{grpc_status="{code}",listener="grpc"}}"#
        )
    };
    eventually(
        "gRPC statuses counted",
        std::time::Duration::from_secs(5),
        || async { p.metric(&series("0")).await == 2.0 && p.metric(&series("5")).await == 1.0 },
    )
    .await;
    server.abort();
}
