//! Interception: what the proxy does with a connection the eBPF data path
//! redirected to it. Modules follow the life of an intercepted connection:
//! `detect` (first bytes: HTTP/1, TLS + `sni`, or opaque) -> `outbound`
//! (route by original destination: `table`) or `inbound` (to the pod's
//! application through an [`AppConnector`]) -> `passthrough` (L4 splice,
//! implicit HTTP passthrough, black hole). `peers` and the `x-weir-source`
//! header (a `source` token, not a name) carry the source pod's identity from the outbound side to the
//! inbound side; `local` delivers to pods on this node in one pass;
//! `metrics` counts everything with that identity.
//! Design: `docs/architecture.md` ("Identity"); metrics: `docs/metrics.md`.

pub mod detect;
pub mod inbound;
pub mod io;
pub mod local;
pub mod metrics;
pub mod outbound;
pub mod passthrough;
pub mod peers;
pub mod sni;
pub mod source;
pub mod table;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::addr::{ClientAddr, OrigDstAddr};
use super::drain::{self, DrainSignal, DrainWatch};
use super::runtime::Runtime;

/// How long intercepted connections may finish after [`Interceptor::drain`].
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// An enrolled pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodIdentity {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// Connects to an enrolled pod's application (implemented by the
/// enrollment code: from the proxy's reserved source inside the pod).
pub trait AppConnector: Send + Sync + 'static {
    /// Connect to the pod's application at `addr` (from the proxy's reserved source inside the pod).
    fn connect_app(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>>;
}

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("connect to original destination {0}: {1}")]
    Connect(SocketAddr, #[source] std::io::Error),
    #[error("connect to original destination {0}: timed out")]
    ConnectTimeout(SocketAddr),
    #[error("connect to the application at {0}: {1}")]
    App(SocketAddr, #[source] std::io::Error),
    #[error("splicing: {0}")]
    Splice(#[source] std::io::Error),
    #[error("building the passthrough route for {0}: {1}")]
    Build(SocketAddr, String),
}

/// Serves intercepted connections with the runtime's current config
/// (read per connection, so reloads apply to new connections).
#[derive(Clone)]
pub struct Interceptor {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    drain_signal: DrainSignal,
    drain: DrainWatch,
    passthrough: passthrough::HttpPassthrough,
}

impl Interceptor {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        let (drain_signal, drain) = drain::channel(DRAIN_GRACE);
        let passthrough = passthrough::HttpPassthrough::new(runtime.metrics.clone());
        Self {
            inner: Arc::new(Inner {
                runtime,
                drain_signal,
                drain,
                passthrough,
            }),
        }
    }

    /// An enrolled pod's application connected to `orig_dst`; serve it.
    pub async fn serve_outbound(
        &self,
        stream: TcpStream,
        orig_dst: SocketAddr,
        source: PodIdentity,
    ) {
        outbound::serve(&self.inner, stream, OrigDstAddr(orig_dst), source).await;
    }

    /// A connection to enrolled pod `pod` at `dst` (its own address:port) from `peer`; serve it.
    pub async fn serve_inbound(
        &self,
        stream: TcpStream,
        dst: SocketAddr,
        peer: SocketAddr,
        pod: PodIdentity,
        app: Arc<dyn AppConnector>,
    ) {
        let inner = &self.inner;
        inbound::serve(inner, stream, dst, ClientAddr(peer), pod, app).await;
    }

    /// Finish intercepted HTTP connections gracefully (forced after
    /// [`DRAIN_GRACE`]); spliced TCP connections run until either side closes.
    pub fn drain(&self) {
        self.inner.drain_signal.drain();
    }
}
