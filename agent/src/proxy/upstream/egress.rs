//! Where a request's upstream connections leave from.
//!
//! The engine alone connects from its own network namespace and keeps one
//! pool per endpoint. Whoever embeds it may name a source for a downstream
//! connection (interception: the enrolled pod the connection came from) as
//! an [`Egress`]: its [`SocketMaker`] makes the sockets (inside the pod's
//! network namespace, so a connection leaves with the pod's address and
//! follows the pod's routes), and its requests are pooled apart from every
//! other source's (`pool::SourcePools`): a pooled connection never carries
//! another source's request.
//!
//! The source is never taken from what a client sends: the caller of
//! `http::serve` that accepted the connection names it
//! (`http::Downstream::egress`), and it travels with each request down to
//! the try that picks a pool and opens a connection (`http::attempt`).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::net::{TcpSocket, TcpStream};

pub type MakingSocket<'a> = Pin<Box<dyn Future<Output = io::Result<TcpSocket>> + Send + 'a>>;

/// Makes the sockets of one source's upstream connections.
pub trait SocketMaker: Send + Sync + 'static {
    /// A new TCP socket, not yet connected, of the family of `remote`, from
    /// which the source reaches `remote` (made in the source's network
    /// namespace: the socket keeps it, so the engine connects it from its
    /// own threads afterwards).
    fn socket(&self, remote: SocketAddr) -> MakingSocket<'_>;
}

/// Why a source could not open a connection.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// [`Egress::close`] was called: the source is gone (an un-enrolled pod).
    #[error("its source {0} is no longer served")]
    Closed(Arc<str>),
    /// The source's [`SocketMaker`] failed.
    #[error("making a socket in the network of {source_name}: {error}")]
    Socket {
        source_name: Arc<str>,
        #[source]
        error: io::Error,
    },
    /// The connect itself failed (the destination's doing, not the source's).
    #[error(transparent)]
    Connect(io::Error),
}

/// What a source's pool offers [`Egress::close`] (the pool module's pools).
pub(super) trait Clear: Send + Sync {
    /// Close every idle connection now.
    fn clear(&self);
}

/// A source of upstream connections other than the engine's own network
/// namespace. Cheap to clone; clones are the same source.
#[derive(Clone)]
pub struct Egress(Arc<Inner>);

struct Inner {
    /// For logs and errors (interception: `namespace/pod`).
    name: Arc<str>,
    /// What the embedder knows of the source, opaque to the engine
    /// (interception: the pod's workload, which names its mesh identity).
    tag: Option<Box<dyn Any + Send + Sync>>,
    sockets: Box<dyn SocketMaker>,
    closed: AtomicBool,
    /// The pools this source has, to empty at once on [`Egress::close`].
    pools: Mutex<Vec<Weak<dyn Clear>>>,
}

/// Tells one [`Egress`] from another while both exist (pools are keyed by
/// it; a pool holds its egress, so the key is not reused while the pool is
/// there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EgressId(usize);

impl Egress {
    pub fn new(name: impl Into<Arc<str>>, sockets: impl SocketMaker) -> Self {
        Self::tagged(name, sockets, None)
    }

    /// A source carrying `tag`, which the engine only hands back
    /// ([`Egress::tag`]) to whatever connects for it.
    pub fn tagged(
        name: impl Into<Arc<str>>,
        sockets: impl SocketMaker,
        tag: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        Self(Arc::new(Inner {
            name: name.into(),
            tag,
            sockets: Box::new(sockets),
            closed: AtomicBool::new(false),
            pools: Mutex::new(Vec::new()),
        }))
    }

    pub fn id(&self) -> EgressId {
        EgressId(Arc::as_ptr(&self.0) as usize)
    }

    pub fn name(&self) -> &Arc<str> {
        &self.0.name
    }

    /// The tag it was made with, if it is a `T`.
    pub fn tag<T: Any>(&self) -> Option<&T> {
        self.0.tag.as_deref()?.downcast_ref()
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// The source is gone: no new connection leaves from it (a try that
    /// would open one fails, as a connect failure: a 503 for HTTP), its
    /// idle pooled connections close now, and a connection carrying one of
    /// its requests finishes that request and is not pooled again.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        let pools = match self.0.pools.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        for pool in pools.iter().filter_map(Weak::upgrade) {
            pool.clear();
        }
    }

    /// Remember `pool` as one of this source's, for [`Egress::close`].
    pub(super) fn adopt<P: Clear + 'static>(&self, pool: &Arc<P>) {
        let Ok(mut pools) = self.0.pools.lock() else {
            return;
        };
        // Pools of endpoints gone meanwhile leave dead entries: drop them
        // whenever the list doubles, so it stays within twice the live ones.
        if pools.len() >= 16 && pools.len().is_power_of_two() {
            pools.retain(|p| p.strong_count() > 0);
        }
        let weak: Weak<dyn Clear> = Arc::downgrade(pool) as Weak<dyn Clear>;
        pools.push(weak);
        drop(pools);
        if self.is_closed() {
            // Closed while the pool was being made: it keeps nothing.
            pool.clear();
        }
    }

    /// Connect to `addr` from this source (with a socket its maker made).
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, EgressError> {
        if self.is_closed() {
            return Err(EgressError::Closed(Arc::clone(&self.0.name)));
        }
        let socket = self
            .0
            .sockets
            .socket(addr)
            .await
            .map_err(|error| EgressError::Socket {
                source_name: Arc::clone(&self.0.name),
                error,
            })?;
        socket.connect(addr).await.map_err(EgressError::Connect)
    }
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("name", &self.0.name)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Sockets of the test's own namespace, counting how many it made.
    #[derive(Default, Clone)]
    pub(crate) struct Counting(pub Arc<std::sync::atomic::AtomicUsize>);

    impl SocketMaker for Counting {
        fn socket(&self, remote: SocketAddr) -> MakingSocket<'_> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                match remote {
                    SocketAddr::V4(_) => TcpSocket::new_v4(),
                    SocketAddr::V6(_) => TcpSocket::new_v6(),
                }
            })
        }
    }

    /// A source whose sockets cannot be made (its factory stopped).
    struct Broken;

    impl SocketMaker for Broken {
        fn socket(&self, _: SocketAddr) -> MakingSocket<'_> {
            Box::pin(async { Err(io::Error::other("the pod's socket factory has stopped")) })
        }
    }

    #[test]
    fn a_tag_comes_back_only_as_its_own_type() {
        let tagged = Egress::tagged("ns/a", Counting::default(), Some(Box::new(7_u32)));
        assert_eq!(tagged.tag::<u32>(), Some(&7));
        assert_eq!(tagged.tag::<String>(), None);
        assert_eq!(Egress::new("ns/b", Counting::default()).tag::<u32>(), None);
    }

    #[tokio::test]
    async fn connects_with_its_own_sockets_until_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let made = Counting::default();
        let egress = Egress::new("ns/a", made.clone());
        egress.connect(addr).await.unwrap();
        assert_eq!(made.0.load(Ordering::Relaxed), 1);
        egress.close();
        let err = egress.connect(addr).await.unwrap_err();
        assert!(
            matches!(&err, EgressError::Closed(n) if &**n == "ns/a"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failed_socket_is_a_typed_connect_error() {
        let egress = Egress::new("ns/b", Broken);
        let addr: SocketAddr = "192.0.2.9:80".parse().unwrap();
        let err = egress.connect(addr).await.unwrap_err();
        assert!(
            matches!(&err, EgressError::Socket { source_name, .. } if &**source_name == "ns/b"),
            "{err}"
        );
        assert!(
            err.to_string().contains("socket factory has stopped"),
            "{err}"
        );
    }

    #[test]
    fn clones_are_one_source() {
        let a = Egress::new("ns/a", Counting::default());
        let b = Egress::new("ns/a", Counting::default());
        assert_eq!(a.id(), a.clone().id());
        assert_ne!(a.id(), b.id());
    }
}
