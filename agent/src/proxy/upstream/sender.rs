//! A request sender on an upstream connection: HTTP/1.1 (one request at a
//! time, pooled), HTTP/2 (one multiplexed connection per endpoint), or
//! HTTP/1.1 straight to the application of a pod on this node, doing the
//! inbound side's per-request work (`intercept::local`).

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};

use crate::proxy::body::ReqBody;
use crate::proxy::intercept::local::LocalInbound;

pub enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
    SameNode(http1::SendRequest<ReqBody>, Arc<LocalInbound>),
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Self::H1(s) | Self::SameNode(s, _) => s.is_closed(),
            Self::H2(s) => s.is_closed(),
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Self::H2(_))
    }

    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Self::H1(s) | Self::SameNode(s, _) => s.ready().await,
            Self::H2(s) => s.ready().await,
        }
    }

    /// Send `req`; on a connection found not ready the request comes back
    /// in the error, unsent.
    pub async fn send(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ReqBody>>> {
        match self {
            Self::H1(s) => s.try_send_request(req).await,
            Self::H2(s) => s.try_send_request(req).await,
            Self::SameNode(s, inbound) => {
                let mut req = req;
                let source = inbound.take_source(&mut req);
                let mut result = s.try_send_request(req).await;
                if let Ok(resp) = &mut result {
                    inbound.answered(source, resp);
                }
                result
            }
        }
    }
}
