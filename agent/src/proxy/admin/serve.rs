//! The accept loop and HTTP/1 server shared by the admin and stats
//! listeners, hardened against what a peer on the network can do to them:
//! a full fd table (EMFILE/ENFILE) backs the loop off instead of spinning,
//! a request head must arrive within [`HEADER_READ_TIMEOUT`] (slowloris),
//! and at most [`MAX_CONNECTIONS`] connections are served at once.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A request head (and an idle keep-alive connection's next one) must
/// arrive within this; Prometheus and kubelet probes send theirs at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 64;

/// Bind `addr`, then serve every connection with `handle` on a spawned task.
pub async fn bind<H, F>(
    addr: SocketAddr,
    what: &'static str,
    handle: H,
) -> std::io::Result<SocketAddr>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let tcp = listen_shared(addr)?;
    let bound = tcp.local_addr()?;
    tokio::spawn(accept_loop(tcp, what, handle));
    Ok(bound)
}

/// Bound with SO_REUSEPORT: during a rolling update two agents run on the
/// node's network at once (the DaemonSet's `maxSurge`), both on the
/// configured admin port; the kernel spreads connections over the two
/// until the old one closes its socket. Only processes of the same user
/// can join a port this way.
fn listen_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop<H, F>(tcp: TcpListener, what: &'static str, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut errors = crate::proxy::accept_errors::AcceptErrors::new(what);
    loop {
        // Take the slot before accepting, so excess peers queue in the kernel.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match tcp.accept().await {
            Ok((stream, _)) => {
                errors.accepted();
                stream
            }
            Err(e) => {
                errors.failed(&e).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let reply = handle(req);
                async move { Ok::<_, Infallible>(reply.await) }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
            drop(slot);
        });
    }
}
