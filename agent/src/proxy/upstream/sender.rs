//! A request sender on an upstream connection: HTTP/1.1 (one request at a
//! time, pooled), HTTP/2 (one multiplexed connection per endpoint), or
//! HTTP/1.1 on a connection its connector serves itself, with that
//! connector's per-request work ([`Exchange`]).

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};

use super::connector::Exchange;
use crate::proxy::body::request::ReqBody;

pub enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
    Served(http1::SendRequest<ReqBody>, Arc<dyn Exchange>),
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Self::H1(s) | Self::Served(s, _) => s.is_closed(),
            Self::H2(s) => s.is_closed(),
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self, Self::H2(_))
    }

    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Self::H1(s) | Self::Served(s, _) => s.ready().await,
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
            Self::Served(s, exchange) => {
                let mut req = req;
                let tag = exchange.sending(&mut req);
                let sent = std::time::Instant::now();
                let mut result = s.try_send_request(req).await;
                if let Ok(resp) = &mut result {
                    exchange.answered(tag, resp, sent.elapsed());
                }
                result
            }
        }
    }
}
