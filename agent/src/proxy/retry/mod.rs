//! The retry stage: the policy (Envoy `retry_on` semantics) and jittered
//! exponential back-off here, the loop that runs a request's tries
//! (`http::attempt`) within the route's deadlines in [`stage`].
//!
//! # When a request is retried
//!
//! A request can only be retried if it can be replayed: its body must be
//! empty, or announced by `content-length` as at most [`MAX_RETRY_BODY_BYTES`]
//! (then it is buffered fully before the first try). Requests with a larger or
//! chunked body are streamed to the upstream and never retried, because bytes
//! already sent on cannot be taken back. Retries also stop when the route
//! timeout has no time left or the cluster's `max_retries` breaker is full.

pub mod stage;

use std::time::Duration;

use http::HeaderMap;

use crate::proxy::route::matcher::HeaderMatcher;

/// Largest request body buffered so the request stays retriable.
pub const MAX_RETRY_BODY_BYTES: u64 = 64 * 1024;

pub const ON_5XX: u16 = 1;
pub const ON_GATEWAY_ERROR: u16 = 1 << 1;
pub const ON_CONNECT_FAILURE: u16 = 1 << 2;
pub const ON_RESET: u16 = 1 << 3;
pub const ON_RETRIABLE_4XX: u16 = 1 << 4;
pub const ON_RETRIABLE_STATUS_CODES: u16 = 1 << 5;
pub const ON_REFUSED_STREAM: u16 = 1 << 6;
pub const ON_CANCELLED: u16 = 1 << 7;
pub const ON_DEADLINE_EXCEEDED: u16 = 1 << 8;
pub const ON_RESOURCE_EXHAUSTED: u16 = 1 << 9;
pub const ON_INTERNAL: u16 = 1 << 10;
pub const ON_UNAVAILABLE: u16 = 1 << 11;
pub const ON_RETRIABLE_HEADERS: u16 = 1 << 12;

/// gRPC status codes the gRPC conditions name, with their bits.
const GRPC_CONDITIONS: [(u8, u16); 5] = [
    (1, ON_CANCELLED),
    (4, ON_DEADLINE_EXCEEDED),
    (8, ON_RESOURCE_EXHAUSTED),
    (13, ON_INTERNAL),
    (14, ON_UNAVAILABLE),
];

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub on: u16,
    /// `retriable-status-codes`: the codes retried.
    pub status_codes: Vec<u16>,
    /// `retriable-headers`: a response with a header matching one is retried.
    pub headers: Vec<HeaderMatcher>,
    /// `previous_hosts`: a retry avoids the endpoints earlier tries went to,
    /// picking up to this many more times before taking the last pick.
    /// `None`: no host predicate.
    pub avoid_previous_hosts: Option<u32>,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub base_interval: Duration,
    pub max_interval: Duration,
}

/// Why a try failed, as retry policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Status(u16),
    /// `grpc-status` in the response headers (a trailers-only response).
    Grpc(u8),
    Connect,
    Reset,
    /// An HTTP/2 upstream refused the stream before it saw the request.
    RefusedStream,
    PerTryTimeout,
}

impl RetryPolicy {
    /// `retriable-headers`: does the response carry a header it names?
    pub fn retries_headers(&self, response: &HeaderMap) -> bool {
        self.on & ON_RETRIABLE_HEADERS != 0 && self.headers.iter().any(|h| h.matches(response))
    }

    pub fn should_retry(&self, f: Failure) -> bool {
        let on = |bit| self.on & bit != 0;
        match f {
            Failure::Status(s) => {
                (on(ON_5XX) && s >= 500)
                    || (on(ON_GATEWAY_ERROR) && matches!(s, 502..=504))
                    || (on(ON_RETRIABLE_4XX) && s == 409)
                    || (on(ON_RETRIABLE_STATUS_CODES) && self.status_codes.contains(&s))
            }
            Failure::Grpc(code) => GRPC_CONDITIONS
                .iter()
                .any(|(c, bit)| *c == code && on(*bit)),
            Failure::RefusedStream => {
                on(ON_REFUSED_STREAM) || on(ON_5XX) || on(ON_GATEWAY_ERROR) || on(ON_RESET)
            }
            // Envoy retries a failed connect under `reset` too (checked against 1.40).
            Failure::Connect => {
                on(ON_5XX) || on(ON_GATEWAY_ERROR) || on(ON_CONNECT_FAILURE) || on(ON_RESET)
            }
            Failure::Reset | Failure::PerTryTimeout => {
                on(ON_5XX) || on(ON_GATEWAY_ERROR) || on(ON_RESET)
            }
        }
    }

    /// Fully jittered exponential back-off before retry number `n` (1-based),
    /// as Envoy's: uniform in `[0, min(base * (2^n - 1), max))` milliseconds.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = (1u32 << n.clamp(1, 16)) - 1;
        let cap = self
            .base_interval
            .saturating_mul(factor)
            .min(self.max_interval);
        let ms = cap.as_millis() as u64;
        Duration::from_millis(if ms == 0 { 0 } else { fastrand::u64(..ms) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(on: u16) -> RetryPolicy {
        RetryPolicy {
            on,
            status_codes: vec![503],
            headers: Vec::new(),
            avoid_previous_hosts: None,
            num_retries: 2,
            per_try_timeout: None,
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
        }
    }

    #[test]
    fn retry_on() {
        assert!(p(ON_5XX).should_retry(Failure::Status(500)));
        assert!(!p(ON_GATEWAY_ERROR).should_retry(Failure::Status(500)));
        assert!(p(ON_GATEWAY_ERROR).should_retry(Failure::Status(503)));
        assert!(p(ON_CONNECT_FAILURE).should_retry(Failure::Connect));
        assert!(p(ON_RESET).should_retry(Failure::Connect));
        assert!(!p(ON_RETRIABLE_4XX).should_retry(Failure::Connect));
        assert!(!p(ON_CONNECT_FAILURE).should_retry(Failure::Reset));
        assert!(p(ON_RESET).should_retry(Failure::Reset));
        assert!(p(ON_RETRIABLE_4XX).should_retry(Failure::Status(409)));
        assert!(!p(ON_5XX).should_retry(Failure::Status(404)));
    }

    #[test]
    fn backoff_bounded() {
        let pol = p(ON_5XX);
        for n in 1..10 {
            assert!(pol.backoff(n) < Duration::from_millis(250));
        }
        // Retry 1 waits below base, retry 2 below 3 x base (Envoy's ranges).
        assert!((0..200).all(|_| pol.backoff(1) < Duration::from_millis(25)));
        assert!((0..200).all(|_| pol.backoff(2) < Duration::from_millis(75)));
        assert!((0..200).any(|_| pol.backoff(2) >= Duration::from_millis(25)));
    }
}
