//! One request as the access log sees it: what is read from the request
//! when it arrives ([`Entry::begin`]), from the response head
//! ([`Entry::responded`]), from the tries upstream ([`Exchange`]), and
//! from the body as it goes out ([`Entry::sent`], [`Entry::finish`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use http::HeaderMap;
use http::header::{HOST, USER_AGENT};

use super::AccessLog;
use super::flags::ResponseFlags;

/// A header value or path longer than this is cut to it (at a character
/// boundary), so that a client cannot make one line huge: a line holds at
/// most 8 such fields, so it stays under 9 KiB.
pub const MAX_FIELD_BYTES: usize = 1024;

static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
static X_ENVOY_ORIGINAL_PATH: http::HeaderName =
    http::HeaderName::from_static("x-envoy-original-path");
static X_ENVOY_UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");

/// What one access log line says. `None`: unknown (`-` in text, `null`
/// in JSON).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub start: Option<SystemTime>,
    pub method: Option<String>,
    /// `x-envoy-original-path` when the request has one, else its path.
    pub path: Option<String>,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: Option<&'static str>,
    /// 0 when no response head went out (Envoy's convention).
    pub status: u16,
    pub flags: ResponseFlags,
    /// Request body bytes read and sent upstream.
    pub bytes_received: u64,
    /// Response body bytes handed to the connection.
    pub bytes_sent: u64,
    /// From the request head read to the last body byte sent.
    pub duration_ms: u64,
    /// The response's `x-envoy-upstream-service-time`.
    pub upstream_service_time: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub authority: Option<String>,
    /// The endpoint of the last try.
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<Arc<str>>,
    pub downstream_remote: Option<SocketAddr>,
}

/// A value as logged: lossy UTF-8, at most [`MAX_FIELD_BYTES`]; empty is
/// unknown, as Envoy writes `-` for an empty header.
pub fn field(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let cut = &bytes[..bytes.len().min(MAX_FIELD_BYTES)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if s.len() > MAX_FIELD_BYTES {
        // A character cut in two became U+FFFD (3 bytes): cut before it.
        let mut end = MAX_FIELD_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    Some(s)
}

fn header(headers: &HeaderMap, name: &http::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| field(v.as_bytes()))
}

/// What the tries of one request tell the access log; rides in the
/// request's extensions (only when the listener logs) to the retry stage,
/// each try and the request body.
#[derive(Clone, Default)]
pub struct Exchange(Arc<ExchangeState>);

#[derive(Default)]
struct ExchangeState {
    received: AtomicU64,
    /// The latest try's endpoint and cluster; written once per try.
    upstream: Mutex<Option<(SocketAddr, Arc<str>)>>,
}

impl Exchange {
    /// Request body bytes passed on upstream.
    pub fn received(&self, n: usize) {
        self.0.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A try goes to `addr` of `cluster`.
    pub fn upstream(&self, addr: SocketAddr, cluster: &Arc<str>) {
        if let Ok(mut u) = self.0.upstream.lock() {
            *u = Some((addr, cluster.clone()));
        }
    }
}

/// One request being logged; written once, when the response ends or the
/// request is abandoned (dropped unfinished: `DC`).
pub struct Entry {
    log: Arc<AccessLog>,
    record: Record,
    exchange: Exchange,
    started: Instant,
    done: bool,
}

impl Entry {
    /// Reads the request head and puts an [`Exchange`] in its extensions.
    pub fn begin<B>(
        log: &Arc<AccessLog>,
        req: &mut http::Request<B>,
        protocol: &'static str,
        client: SocketAddr,
    ) -> Self {
        let exchange = Exchange::default();
        req.extensions_mut().insert(exchange.clone());
        let h = req.headers();
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| h.get(HOST).map(|v| v.as_bytes()))
            .and_then(field);
        let path = header(h, &X_ENVOY_ORIGINAL_PATH).or_else(|| {
            req.uri()
                .path_and_query()
                .and_then(|p| field(p.as_str().as_bytes()))
        });
        let record = Record {
            start: Some(SystemTime::now()),
            method: field(req.method().as_str().as_bytes()),
            path,
            protocol: Some(protocol),
            x_forwarded_for: header(h, &X_FORWARDED_FOR),
            user_agent: header(h, &USER_AGENT),
            request_id: header(h, &X_REQUEST_ID),
            authority,
            downstream_remote: Some(client),
            ..Record::default()
        };
        Self {
            log: log.clone(),
            record,
            exchange,
            started: Instant::now(),
            done: false,
        }
    }

    /// The response head: its status, the flags a local reply carries,
    /// the upstream's service time.
    pub fn responded<B>(&mut self, resp: &http::Response<B>) {
        self.record.status = resp.status().as_u16();
        if let Some(f) = resp.extensions().get::<ResponseFlags>() {
            self.record.flags = self.record.flags.with(*f);
        }
        self.record.upstream_service_time = header(resp.headers(), &X_ENVOY_UPSTREAM_SERVICE_TIME);
    }

    /// Response body bytes handed to the connection.
    pub fn sent(&mut self, n: usize) {
        self.record.bytes_sent += n as u64;
    }

    /// The response ended (`flags`: how, beyond the head's): write the line.
    pub fn finish(&mut self, flags: ResponseFlags) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let r = &mut self.record;
        r.flags = r.flags.with(flags);
        r.duration_ms = self.started.elapsed().as_millis() as u64;
        let x = &self.exchange.0;
        r.bytes_received = x.received.load(Ordering::Relaxed);
        if let Ok(mut u) = x.upstream.lock()
            && let Some((addr, cluster)) = u.take()
        {
            r.upstream_host = Some(addr);
            r.upstream_cluster = Some(cluster);
        }
        self.log.write(&self.record);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.finish(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cut_at_a_character_boundary() {
        assert_eq!(field(b""), None);
        let long = "é".repeat(MAX_FIELD_BYTES);
        let f = field(long.as_bytes()).unwrap();
        assert_eq!(f.len(), MAX_FIELD_BYTES);
        assert!(f.chars().all(|c| c == 'é'));
        let odd = format!("a{}", "é".repeat(MAX_FIELD_BYTES));
        let f = field(odd.as_bytes()).unwrap();
        assert!(f.len() <= MAX_FIELD_BYTES && f.len() >= MAX_FIELD_BYTES - 3);
        assert!(!f.contains('\u{fffd}'));
    }
}
