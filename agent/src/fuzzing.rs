//! Stable entry points for the fuzz targets in `fuzz/` (cargo-fuzz,
//! libFuzzer). Each function drives weir's real code the way weir runs it
//! and panics when an invariant that must hold for every input breaks; a
//! panic is what libFuzzer reports as a crash. The fuzz crate calls only
//! these, so moving a module inside weir changes this file, not `fuzz/`.
//! Not an API: nothing else may depend on it.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use http::header::{CONNECTION, HOST, TE, UPGRADE};
use http::{HeaderMap, Request, Response, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::intercept::{detect, sni};
use crate::proxy::http::sniff::{PREFACE, Proto, sniff};
use crate::proxy::http::{ListenerState, admission, forward, internal, request_id, upgrade};
use crate::proxy::route::action::Action;

/// `weir check-config` on `text`: parse and validate. What it accepts,
/// `weir proxy` must build (issue 10: check-config checks what proxy
/// checks): every cluster and listener is built too, TLS aside (its file
/// paths come from the input, and reading them is not what is fuzzed).
pub fn proxy_config(text: &str) {
    let Ok(mut cfg) = crate::config::parse_str(text, "fuzz") else {
        return;
    };
    let _ = cfg.summary();
    for c in &mut cfg.clusters {
        c.tls = None;
    }
    for l in &mut cfg.listeners {
        l.tls = None;
    }
    // STRICT_DNS clusters start resolving in the runtime they are built in;
    // a runtime per input drops them unpolled.
    let rt = runtime();
    let _guard = rt.enter();
    let metrics = metrics();
    let clusters = crate::proxy::build::clusters(&cfg, &Default::default(), &metrics, &tcp())
        .unwrap_or_else(|e| panic!("check-config accepts, weir proxy refuses a cluster: {e}"));
    for (i, l) in cfg.listeners.iter().enumerate() {
        if let Err(e) =
            crate::proxy::build::listener_state(l, &format!("listeners[{i}]"), &clusters, &metrics)
        {
            panic!("check-config accepts, weir proxy refuses a listener: {e}");
        }
    }
}

/// The pods file parser (`weir run --pods FILE`).
pub fn pods_file(text: &str) {
    let _ = crate::pods::parse_pods_str(text, "fuzz");
}

/// Protocol detection of an intercepted connection, on `bytes` arriving in
/// pieces of `chunk` bytes. The answer must not depend on how the bytes
/// were cut, and a TLS answer must carry the SNI the SNI parser finds.
pub fn intercept_detect(bytes: &[u8], chunk: usize) {
    let mut buf = BytesMut::new();
    let mut reader = Chunked::new(bytes, chunk);
    let found = poll_ready(detect::detect(&mut reader, &mut buf, None));
    assert!(buf.len() <= detect::MAX_DETECT_BYTES);
    assert_eq!(
        &buf[..],
        &bytes[..buf.len()],
        "detection must keep what it read"
    );
    let mut whole = BytesMut::new();
    let at_once = poll_ready(detect::detect(
        &mut Chunked::new(&buf, usize::MAX),
        &mut whole,
        None,
    ));
    assert_eq!(
        found, at_once,
        "the answer depends on how the bytes were cut"
    );
    if let Some(decided) = detect::classify(&buf) {
        assert_eq!(found, decided);
        if let detect::Detected::Tls { sni: name } = &decided {
            let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            assert_eq!(*name, sni::server_name(&buf[5..5 + len]));
        }
    }
}

/// The cleartext HTTP/2 preface sniff on `bytes` in pieces of `chunk`:
/// HTTP/2 exactly when the preface is there, nothing when the peer closed
/// inside it, and every byte replayed to the codec.
pub fn h2_preface(bytes: &[u8], chunk: usize) {
    let mut io = Chunked::new(bytes, chunk);
    let (proto, prefix) = poll_ready(sniff(&mut io)).expect("in-memory reads do not fail");
    let want = if bytes.starts_with(PREFACE) {
        Some(Proto::Http2)
    } else if PREFACE.starts_with(bytes) {
        None
    } else {
        Some(Proto::Http1)
    };
    assert_eq!(proto, want);
    let mut replayed = prefix.to_vec();
    poll_ready(io.read_to_end(&mut replayed)).expect("in-memory reads do not fail");
    assert_eq!(replayed, bytes, "the sniffed bytes must be replayed");
}

/// The SNI peek's answer, for regression tests of what fuzzing found.
pub fn server_name(handshake: &[u8]) -> Option<String> {
    sni::server_name(handshake)
}

/// The SNI peek on the payload of a first TLS record. A name found is
/// lower-case host-name characters; when rustls itself accepts the
/// ClientHello and reads a name, the peek must find the same one.
pub fn tls_server_name(handshake: &[u8]) {
    let ours = sni::server_name(handshake);
    if let Some(name) = &ours {
        assert!(!name.is_empty());
        assert!(name.bytes().all(|c| c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'-' | b'.' | b'_')));
    }
    let Ok(len) = u16::try_from(handshake.len()) else {
        return;
    };
    if len > 16 * 1024 {
        return;
    }
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&len.to_be_bytes());
    record.extend_from_slice(handshake);
    let mut acceptor = rustls::server::Acceptor::default();
    if acceptor.read_tls(&mut &record[..]).is_err() {
        return;
    }
    if let Ok(Some(accepted)) = acceptor.accept()
        && let Some(theirs) = accepted.client_hello().server_name()
    {
        assert_eq!(ours.as_deref(), Some(theirs.to_ascii_lowercase().as_str()));
    }
}

/// The routes the HTTP/1 target is matched against: every kind of match
/// and action `prepare_head` treats differently.
const ROUTES: &str = r#"
listeners:
  - name: fuzz
    address: 127.0.0.1:1
    upgrade_types: [websocket]
    virtual_hosts:
      - name: exact
        domains: ["allowed.example", "api.local:8080"]
        routes:
          - match: {prefix: /m, methods: [GET]}
            route: {cluster: a}
          - match: {prefix: /api/}
            route: {cluster: a, prefix_rewrite: /v2/, host_rewrite_literal: internal.local}
          - match: {safe_regex: "/v[0-9]+/items"}
            route: {cluster: a}
          - match: {prefix: /h, headers: [{name: x-canary, exact: "1"}]}
            direct_response: {status: 200, body: canary}
          - match: {prefix: /old/}
            redirect: {prefix_rewrite: /new/, response_code: 302}
          - match: {prefix: /}
            route: {cluster: a}
      - name: suffix
        domains: ["*.svc.cluster.local"]
        routes:
          - match: {prefix: /, case_sensitive: false}
            route: {cluster: a}
      - name: any
        domains: ["*"]
        routes:
          - match: {path: /only}
            route: {cluster: a}
clusters:
  - name: a
    type: STATIC
    endpoints: [{address: 127.0.0.1, port: 1}]
"#;

/// What the HTTP/1 target needs once: a runtime and the built routes.
struct Http1Fixture {
    rt: tokio::runtime::Runtime,
    state: ListenerState,
}

static HTTP1: LazyLock<Http1Fixture> = LazyLock::new(|| {
    let cfg = crate::config::parse_str(ROUTES, "fuzz routes").expect("the fuzz routes parse");
    let rt = runtime();
    let _guard = rt.enter();
    let clusters = crate::proxy::build::clusters(&cfg, &Default::default(), &metrics(), &tcp())
        .expect("the fuzz clusters build");
    let state =
        crate::proxy::build::listener_state(&cfg.listeners[0], "fuzz", &clusters, &metrics())
            .expect("the fuzz listener builds");
    drop(_guard);
    Http1Fixture { rt, state }
});

/// Bytes a client sent on an HTTP/1 connection: hyper parses the heads as
/// weir's listener does, and each request goes through weir's admission
/// (one authority, method, transfer coding), `x-weir-*` stripping, virtual
/// host and route matching and, when forwarded, the head rewrite. Panics
/// when a forwarded head breaks a rule of issue 10.
pub fn http1_request(bytes: &[u8]) {
    let fx = &*HTTP1;
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = failure.clone();
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        if let Err(why) = check_request(&fx.state, req) {
            seen.lock().expect("not poisoned").get_or_insert(why);
        }
        std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        )))
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.header_read_timeout(None)
        .max_header_size(fx.state.settings.max_header_bytes);
    let conn = b
        .serve_connection(
            hyper_util::rt::TokioIo::new(Chunked::new(bytes, usize::MAX)),
            svc,
        )
        .with_upgrades();
    let _ = fx.rt.block_on(conn);
    if let Some(why) = failure.lock().expect("not poisoned").take() {
        panic!("{why}");
    }
}

/// One request through weir's pipeline; `Err` names the broken rule.
fn check_request(
    state: &ListenerState,
    mut req: Request<hyper::body::Incoming>,
) -> Result<(), String> {
    let sent = req.headers().clone();
    let refused = admission::check(&mut req);
    internal::strip(req.headers_mut());
    no_weir_headers(req.headers())?;
    if refused.is_err() {
        return Ok(());
    }
    one_authority(&req)?;
    let authority = match req.uri().authority() {
        Some(a) => a.as_str().to_owned(),
        None => req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned(),
    };
    let Some(vhost) = state.routes.find_vhost(&authority) else {
        return Ok(());
    };
    let (mut parts, _body) = req.into_parts();
    let Ok(upgrading) = upgrade::requested(&mut parts, &state.settings.upgrade_types) else {
        return Ok(());
    };
    let upgrading = upgrading.is_some();
    let Some((route, matched)) = vhost.find_route(&parts) else {
        return Ok(());
    };
    if route.matcher.methods.is_some() && parts.method != http::Method::GET {
        return Err(format!("{} matched a GET-only route", parts.method));
    }
    let Action::Forward(fwd) = &route.action else {
        return Ok(());
    };
    forward::prepare_head(&mut parts, fwd, matched, upgrading);
    request_id::ensure(&mut parts.headers);
    vhost.request_headers.apply(&mut parts.headers);
    route.request_headers.apply(&mut parts.headers);
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        return Err(format!("forwarded target {} is not origin-form", parts.uri));
    }
    // HTTP/1.0 needs no Host (and is forwarded as HTTP/1.0).
    let hosts = parts.headers.get_all(HOST).iter().count();
    if hosts > 1 || (hosts == 0 && parts.version != Version::HTTP_10) {
        return Err(format!(
            "forwarded {:?} head with {hosts} Host headers",
            parts.version
        ));
    }
    no_weir_headers(&parts.headers)?;
    hop_by_hop_gone(&sent, &parts.headers, upgrading)
}

fn no_weir_headers(h: &HeaderMap) -> Result<(), String> {
    match h.keys().find(|k| k.as_str().starts_with(internal::PREFIX)) {
        Some(k) => Err(format!("{k} survived")),
        None => Ok(()),
    }
}

/// After admission, `Host` is the request's one valid authority.
fn one_authority<B>(req: &Request<B>) -> Result<(), String> {
    let hosts: Vec<_> = req.headers().get_all(HOST).iter().collect();
    if hosts.len() > 1 || (hosts.is_empty() && req.version() == Version::HTTP_11) {
        return Err(format!("{} Host headers after admission", hosts.len()));
    }
    if let (Some(auth), Some(host)) = (req.uri().authority(), hosts.first())
        && auth.as_str().as_bytes() != host.as_bytes()
    {
        return Err(format!("target authority {auth} but Host {host:?}"));
    }
    Ok(())
}

/// No header the client's `Connection` named, and no hop-by-hop header
/// (bar what an upgrade needs and `te: trailers`), reaches the upstream.
/// Weir's own (Host, the request id) are set after, whatever was named.
fn hop_by_hop_gone(sent: &HeaderMap, fwd: &HeaderMap, upgrading: bool) -> Result<(), String> {
    let set_by_weir: HashSet<&str> = ["host", "x-request-id", "x-envoy-expected-rq-timeout-ms"]
        .into_iter()
        .collect();
    let named = sent
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !(upgrading && (t == "upgrade" || t == "connection")));
    for name in named {
        if !set_by_weir.contains(name.as_str()) && fwd.contains_key(name.as_str()) {
            return Err(format!("{name}, named in Connection, was forwarded"));
        }
    }
    for name in ["keep-alive", "proxy-connection"] {
        if fwd.contains_key(name) {
            return Err(format!("{name} was forwarded"));
        }
    }
    if !upgrading && (fwd.contains_key(CONNECTION) || fwd.contains_key(UPGRADE)) {
        return Err("connection or upgrade forwarded without an upgrade".into());
    }
    if fwd.get_all(TE).iter().any(|v| v != "trailers") {
        return Err("a TE other than trailers was forwarded".into());
    }
    Ok(())
}

/// In-memory connection: reads its bytes in pieces of at most `chunk`,
/// then end of stream; writes go nowhere.
struct Chunked {
    bytes: bytes::Bytes,
    chunk: usize,
}

impl Chunked {
    fn new(bytes: &[u8], chunk: usize) -> Self {
        Self {
            bytes: bytes::Bytes::copy_from_slice(bytes),
            chunk: chunk.max(1),
        }
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.chunk.min(self.bytes.len()).min(buf.remaining());
        let head = self.bytes.split_to(n);
        buf.put_slice(&head);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Chunked {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

fn metrics() -> crate::proxy::metrics::Metrics {
    crate::proxy::metrics::Metrics::new().expect("metrics registry")
}

/// Runs a future whose I/O is all in memory (never pending) to its end.
fn poll_ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("in-memory I/O never waits"),
    }
}

/// Plain TCP upstream connections, as `weir proxy` makes them.
fn tcp() -> Arc<dyn crate::proxy::upstream::connector::Connector> {
    Arc::new(crate::proxy::upstream::connector::Tcp)
}
