//! The seam between enrollment and the proxy: every intercepted connection is
//! served by the `Interceptor`, which detects its protocol and routes,
//! passes through or forwards it to the pod's application.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use crate::enroll::{InboundConn, Intercept, LocalPodGuard, OutboundConn, PodContext};
use crate::intercept::{AppConnector, Interceptor, LocalPod, PodIdentity};
use crate::pods::InboundPorts;

pub(super) fn for_interceptor(interceptor: &Interceptor) -> Arc<dyn Intercept> {
    Arc::new(ProxyIntercept {
        interceptor: interceptor.clone(),
    })
}

struct ProxyIntercept {
    interceptor: Interceptor,
}

fn identity(pod: &PodContext) -> PodIdentity {
    PodIdentity {
        namespace: Arc::clone(&pod.namespace),
        name: Arc::clone(&pod.name),
    }
}

impl Intercept for ProxyIntercept {
    fn outbound(&self, conn: OutboundConn) {
        let interceptor = self.interceptor.clone();
        tokio::spawn(async move {
            let source = identity(&conn.pod);
            interceptor
                .serve_outbound(conn.stream, conn.orig_dst, source)
                .await;
        });
    }

    fn inbound(&self, conn: InboundConn) {
        let interceptor = self.interceptor.clone();
        tokio::spawn(async move {
            let pod = identity(&conn.pod);
            let app: Arc<dyn AppConnector> = Arc::new(PodApp(Arc::clone(&conn.pod)));
            interceptor
                .serve_inbound(conn.stream, conn.dst, conn.peer, pod, app)
                .await;
        });
    }

    fn local_pod(
        &self,
        pod: &Arc<PodContext>,
        ips: &[IpAddr],
        ports: &InboundPorts,
    ) -> Option<LocalPodGuard> {
        let guard = self.interceptor.register_local(
            ips,
            LocalPod {
                identity: identity(pod),
                ports: ports.clone(),
                app: Arc::new(PodApp(Arc::clone(pod))),
            },
        );
        Some(Box::new(guard))
    }
}

/// Reaches the pod's application from inside its namespace, from 127.0.0.6.
struct PodApp(Arc<PodContext>);

impl AppConnector for PodApp {
    fn connect_app(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<tokio::net::TcpStream>> + Send + '_>> {
        Box::pin(self.0.connect_app(addr))
    }
}
