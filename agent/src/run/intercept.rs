//! What the agent does with intercepted connections: L4 passthrough to where
//! they were going (outbound) or to the pod's application (inbound).

use std::sync::Arc;

use tokio::io::copy_bidirectional;

use crate::enroll::{InboundConn, Intercept, OutboundConn};
use crate::proxy::runtime::Runtime;

pub(super) fn for_runtime(_runtime: &Arc<Runtime>) -> Arc<dyn Intercept> {
    Arc::new(Passthrough)
}

struct Passthrough;

impl Intercept for Passthrough {
    fn outbound(&self, mut conn: OutboundConn) {
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(conn.orig_dst).await {
                Ok(mut upstream) => {
                    let _ = copy_bidirectional(&mut conn.stream, &mut upstream).await;
                }
                Err(e) => log::debug!(
                    "pod {}/{}: connecting to {}: {e}",
                    conn.pod.namespace,
                    conn.pod.name,
                    conn.orig_dst
                ),
            }
        });
    }

    fn inbound(&self, mut conn: InboundConn) {
        tokio::spawn(async move {
            match conn.pod.connect_app(conn.dst).await {
                Ok(mut app) => {
                    let _ = copy_bidirectional(&mut conn.stream, &mut app).await;
                }
                Err(e) => log::debug!(
                    "pod {}/{}: connecting to the app at {}: {e}",
                    conn.pod.namespace,
                    conn.pod.name,
                    conn.dst
                ),
            }
        });
    }
}
