//! Harness for the proxy acceptance tests: the real `weir` binary over real
//! sockets, backends written in the test, everything on 127.0.0.1.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type Body = Full<Bytes>;

/// A running `weir proxy`; killed (by PID) on drop.
pub struct Proxy {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    stderr_path: PathBuf,
}

impl Proxy {
    /// Start with `config` (YAML); `admin:` is added (port 0). Waits for `/ready`.
    pub async fn start(config: &str) -> Proxy {
        Self::start_with(config, &[]).await
    }

    pub async fn start_with(config: &str, extra_args: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("weir.yaml");
        std::fs::write(&config_path, with_admin(config)).expect("write config");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("proxy")
            .arg("--config")
            .arg(&config_path)
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn weir");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let mut p = Proxy {
            child,
            dir,
            config_path,
            admin: "0.0.0.0:0".parse().unwrap(),
            lines,
            stderr_path,
        };
        let admin = p.wait_line("weir: admin listening on ").await;
        p.admin = admin.parse().expect("admin addr");
        p.wait_ready().await;
        p
    }

    /// The rest of the latest stdout line starting with `prefix` (a bound address).
    pub async fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|l| l.starts_with(prefix))
            {
                return l[prefix.len()..].trim().to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "weir exited ({status}) before printing {prefix:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix:?} line; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = client();
        loop {
            let uri = format!("http://{}/ready", self.admin);
            if let Ok(r) = client.get(uri.parse().unwrap()).await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy not ready; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Bound address of a listener (the latest, after reloads).
    pub async fn listener(&mut self, name: &str) -> SocketAddr {
        let l = self
            .wait_line(&format!("weir: listener {name} listening on "))
            .await;
        l.parse().expect("listener addr")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Replace the config file atomically (write + rename).
    pub fn write_config(&self, config: &str) {
        let tmp = self.dir.path().join("weir.yaml.tmp");
        std::fs::write(&tmp, with_admin(config)).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    pub fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    /// Whether the process has exited, polling up to `limit`.
    pub async fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn sighup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        get(&format!("http://{}{path}", self.admin)).await
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/stats/prometheus").await.1
    }

    /// Value of one sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn with_admin(config: &str) -> String {
    if config.contains("admin:") {
        config.to_string()
    } else {
        format!("admin:\n  address: 127.0.0.1:0\n{config}")
    }
}

pub type HttpClient = Client<HttpConnector, Body>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET returning (status, body).
pub async fn get(uri: &str) -> (u16, String) {
    let r = send(&client(), Request::get(uri).body(Body::default()).unwrap()).await;
    (r.status, r.body)
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub elapsed: Duration,
}

pub async fn send(client: &HttpClient, req: Request<Body>) -> Reply {
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = r.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: t.elapsed(),
    }
}

/// Request builder shortcut.
pub fn req(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// A test backend on 127.0.0.1:0; the handler sees the fully read request.
pub struct Backend {
    pub addr: SocketAddr,
    /// Accepted TCP connections.
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start<F, Fut>(handler: F) -> Backend
    where
        F: Fn(Request<Bytes>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(tcp, handler)
    }

    /// [`Backend::named`] on `addr`; `None` when the address is taken.
    pub async fn named_at(name: &str, addr: SocketAddr) -> Option<Backend> {
        let tcp = TcpListener::bind(addr).await.ok()?;
        let name = name.to_string();
        Some(Self::serve(tcp, move |req| {
            let name = name.clone();
            async move { echo(&name, &req) }
        }))
    }

    /// A backend answering with `handler` on a listener the test bound.
    pub fn serve<F, Fut>(tcp: TcpListener, handler: F) -> Backend
    where
        F: Fn(Request<Bytes>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let addr = tcp.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c2, r2) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = tcp.accept().await else {
                    continue;
                };
                c2.fetch_add(1, Ordering::SeqCst);
                let h = handler.clone();
                let r3 = r2.clone();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let h = h.clone();
                            r3.fetch_add(1, Ordering::SeqCst);
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(h(Request::from_parts(parts, body)).await)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            connections,
            requests,
            task,
        }
    }

    /// Answers 200 with body `name` and echoes what it saw in headers:
    /// `x-backend`, `x-seen-path`, `x-seen-host`, `x-seen-request-id`,
    /// `x-seen-method`, and every request header as `x-echo-<name>`.
    pub async fn named(name: &str) -> Backend {
        let name = name.to_string();
        Backend::start(move |req| {
            let name = name.clone();
            async move { echo(&name, &req) }
        })
        .await
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

pub fn echo(name: &str, req: &Request<Bytes>) -> Response<Body> {
    let mut b = Response::builder()
        .header("x-backend", name)
        .header(
            "x-seen-path",
            req.uri().path_and_query().map_or("", |p| p.as_str()),
        )
        .header("x-seen-method", req.method().as_str());
    for (k, v) in req.headers() {
        b = b.header(format!("x-echo-{k}"), v.clone());
    }
    b.body(Full::new(Bytes::from(name.to_string()))).unwrap()
}

pub fn status(code: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Holds a backend's responses until the test opens it, so requests stay in
/// flight exactly as long as a test needs (a sleeping backend gives a window
/// a loaded machine can miss).
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    pub fn closed() -> Gate {
        Gate(Arc::new(tokio::sync::watch::channel(false).0))
    }

    /// Resolves once the gate is open (at once if it already is).
    pub fn passage(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut open = self.0.subscribe();
        async move {
            let _ = open.wait_for(|open| *open).await;
        }
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// A backend answering 200 `body` once the gate is open.
    pub async fn backend(&self, body: &'static str) -> Backend {
        let gate = self.clone();
        Backend::start(move |_| {
            let passage = gate.passage();
            async move {
                passage.await;
                status(200, body)
            }
        })
        .await
    }
}

/// Poll `cond` until true (bounded), instead of sleeping.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A loopback port nobody listens on: connecting to it is refused. The port
/// stays bound (SO_REUSEADDR, never listening) until the test binary exits,
/// so no other test's bind to port 0 can take it meanwhile, while weir can
/// still bind it (tokio listeners set SO_REUSEADDR too).
pub fn closed_port() -> u16 {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    // Held for the life of the process on purpose (see above).
    std::mem::forget(socket);
    port
}

/// Listeners on one kernel-picked port at each of `ips` (loopback
/// addresses), as the pods of a Kubernetes service answer on one port: the
/// port comes from binding the first address to port 0; when another
/// process holds it on a later address, all are dropped and tried again.
pub async fn bind_one_port(ips: &[std::net::Ipv4Addr]) -> (Vec<TcpListener>, u16) {
    let (first, rest) = ips.split_first().expect("at least one address");
    for _ in 0..20 {
        let lead = TcpListener::bind((*first, 0)).await.unwrap();
        let port = lead.local_addr().unwrap().port();
        let mut bound = vec![lead];
        for ip in rest {
            match TcpListener::bind((*ip, port)).await {
                Ok(l) => bound.push(l),
                Err(_) => break,
            }
        }
        if bound.len() == ips.len() {
            return (bound, port);
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// A cluster YAML block with static endpoints on 127.0.0.1.
pub fn static_cluster(name: &str, ports: &[u16], extra: &str) -> String {
    let eps: Vec<String> = ports
        .iter()
        .map(|p| format!("{{address: 127.0.0.1, port: {p}}}"))
        .collect();
    format!(
        "  - name: {name}\n    connect_timeout: 1s\n    endpoints: [{}]\n{extra}",
        eps.join(", ")
    )
}

/// A config with one listener, `main` on 127.0.0.1:0, that answers every
/// request 200 `ok` itself; `settings` are more of the listener's keys
/// (`"    limits: {...}\n"`).
pub fn answering_ok(settings: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n{settings}    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n          - {{match: {{prefix: /}}, direct_response: {{status: 200, body: \"ok\"}}}}\n"
    )
}

/// A config with one listener, `main` on 127.0.0.1:0, whose one route
/// (prefix `/`, any host) is `route` (`{cluster: up}`, ...), then `rest`
/// (`clusters:` and what else the test needs).
pub fn one_route(route: &str, rest: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n          - match: {{prefix: /}}\n            route: {route}\n{rest}"
    )
}
