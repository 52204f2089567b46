//! A crash leaves a gap no hand-over covers: while no agent runs, a
//! fail-open pod's new connections go straight to their destination and stay
//! outside the mesh for their whole life. The next agent counts them per pod
//! (`weir_intercept_bypassed_connections_total`) and resets those still open
//! where the pod's policy says so (`weir.dev/bypassed-connections: reset`),
//! so the application reconnects through weir; under `ALLOW_ANY` and no
//! annotation they are left open. A fail-closed pod bypasses nothing.
//! Twenty restarts in a row, crashes and clean stops, leak nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, ensure};
use weir_tests::agent::{AgentProcess, MINIMAL_CONFIG, get_once, metric_sample};
use weir_tests::pins::PinRoot;
use weir_tests::support::{require_root, sim_client};
use weir_tests::{PodProcess, SimNode, SimPod, wait};

const VIA_WEIR: &str = "server from 127.0.0.6";

/// The tests count the kernel's weir programs and maps: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn pods_file(entries: &[String]) -> String {
    format!("pods:\n{}", entries.concat())
}

/// A keep-alive client in `pod`: one connection, a request every 50 ms, a
/// new connection only after an error; ends when `stop` exists (or 60 s).
fn start_keepalive(pod: &SimPod, target: SocketAddr, stop: &Path) -> Result<PodProcess> {
    let mut cmd = Command::new(sim_client());
    cmd.args([
        "keepalive",
        &target.to_string(),
        "server",
        "/",
        "50",
        "60000",
    ])
    .env("SIM_CLIENT_STOP_FILE", stop);
    pod.spawn(cmd)
}

/// Whether `pod` holds an established TCP connection straight to `dst`
/// (not to weir's listener on loopback), as the kernel lists it.
fn connected_directly(pod: &SimPod, dst: SocketAddr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", pod.netns_name(), "ss", "-Htn"])
        .args(["state", "established", "dst", &dst.to_string()])
        .output()
        .is_ok_and(|out| out.status.success() && !out.stdout.is_empty())
}

/// The loop's lines: `ok MS BODY` or `err MS ERROR`.
fn loop_lines(process: PodProcess) -> Result<Vec<String>> {
    let out = process.wait_output(Duration::from_secs(20))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// A simulated node: enrolled client pods with their annotations, an
/// enrolled `server` pod answering HTTP on 8080, and an agent serving them.
/// Fields drop in order: the agent first, the node and its pins last.
struct Serving {
    agent: AgentProcess,
    _processes: Vec<PodProcess>,
    clients: Vec<SimPod>,
    http: SocketAddr,
    _server: SimPod,
    node: SimNode,
    pins: PinRoot,
}

fn serving(clients: &[(&str, &[(&str, &str)])]) -> Result<Serving> {
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let server = node.add_pod("server")?;
    let enroll = ("weir.dev/enroll", "true");
    let mut entries = vec![server.pods_file_entry(&[enroll])];
    let mut pods = Vec::new();
    for (name, annotations) in clients {
        let pod = node.add_pod(name)?;
        let mut annotations = annotations.to_vec();
        annotations.push(enroll);
        entries.push(pod.pods_file_entry(&annotations));
        pods.push(pod);
    }
    let mut processes: Vec<PodProcess> = pods
        .iter()
        .chain([&server])
        .map(|p| p.start_pause())
        .collect::<Result<_>>()?;
    let (app, http) = server.start_http_app()?;
    processes.push(app);
    let agent = AgentProcess::start(&node, MINIMAL_CONFIG, &pods_file(&entries), pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(20))?;
    assert_eq!(get_once(&pods[0], http), VIA_WEIR, "{}", agent.log());
    Ok(Serving {
        agent,
        _processes: processes,
        clients: pods,
        http,
        _server: server,
        node,
        pins,
    })
}

#[test]
fn connections_made_while_the_agent_was_down_are_counted_and_reset_by_policy() -> Result<()> {
    require_root();
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut serving = serving(&[
        // No annotation: the node's ALLOW_ANY policy keeps them.
        ("kept", &[]),
        ("reset", &[("weir.dev/bypassed-connections", "reset")]),
        ("locked", &[("weir.dev/fail-mode", "closed")]),
    ])?;
    let (node, pins, http) = (&serving.node, &serving.pins, serving.http);
    let agent = &mut serving.agent;
    let [kept, reset, locked] = &serving.clients[..] else {
        unreachable!("three clients asked for")
    };

    // The crash: each fail-open client connects directly in the gap and
    // keeps its connection; the fail-closed pod is refused.
    agent.kill();
    let stop = agent.dir.join("stop-loops");
    let kept_loop = start_keepalive(kept, http, &stop)?;
    let reset_loop = start_keepalive(reset, http, &stop)?;
    let direct = wait::until(Duration::from_secs(10), || {
        connected_directly(kept, http) && connected_directly(reset, http)
    });
    ensure!(
        direct,
        "the clients did not connect directly while no agent ran"
    );
    let refused = get_once(locked, http);
    ensure!(refused.contains("Operation not permitted"), "{refused}");

    // Back: the listeners first, then the bypassed connections settled.
    agent.restart(node, pins.path())?;
    agent.wait_ready(node, Duration::from_secs(20))?;
    // The reset client reconnects, through weir this time.
    agent.wait_outbound_answers(node, "reset", 1.0, Duration::from_secs(10))?;
    let (_, metrics) = agent.admin_get(node, "/stats/prometheus")?;
    let sample = |name: &str, pod: &str| metric_sample(&metrics, name, &[("source_pod", pod)]);
    let bypassed = "weir_intercept_bypassed_connections_total";
    let was_reset = "weir_intercept_bypassed_connections_reset_total";
    assert_eq!(sample(bypassed, "kept"), Some(1.0), "{metrics}");
    assert_eq!(sample(was_reset, "kept"), Some(0.0), "{metrics}");
    assert_eq!(sample(bypassed, "reset"), Some(1.0), "{metrics}");
    assert_eq!(sample(was_reset, "reset"), Some(1.0), "{metrics}");
    assert_eq!(sample(bypassed, "locked"), None, "{metrics}");
    ensure!(
        connected_directly(kept, http),
        "the kept connection was closed"
    );
    ensure!(
        !connected_directly(reset, http),
        "the reset pod still has a direct connection"
    );

    std::fs::write(&stop, "")?;
    // Kept: one connection, direct from first request to last.
    let kept_lines = loop_lines(kept_loop)?;
    let direct_answer = format!("server from {}", kept.ip4);
    ensure!(
        !kept_lines.is_empty() && kept_lines.iter().all(|l| l.ends_with(&direct_answer)),
        "kept: {kept_lines:?}"
    );
    // Reset: direct, then cut once, then through weir to the end.
    let reset_lines = loop_lines(reset_loop)?;
    let direct_answer = format!("server from {}", reset.ip4);
    let first_via_weir = reset_lines
        .iter()
        .position(|l| l.ends_with(VIA_WEIR))
        .ok_or_else(|| anyhow::anyhow!("reset: never through weir: {reset_lines:?}"))?;
    let (before, after) = reset_lines.split_at(first_via_weir);
    ensure!(
        before.first().is_some_and(|l| l.ends_with(&direct_answer)),
        "reset: {reset_lines:?}"
    );
    ensure!(
        before.iter().filter(|l| l.starts_with("err ")).count() == 1,
        "reset: the cut should cost exactly one request: {reset_lines:?}"
    );
    ensure!(
        after.iter().all(|l| l.ends_with(VIA_WEIR)),
        "reset: {reset_lines:?}"
    );
    ensure!(
        agent.log().contains("reset the 1 still open"),
        "{}",
        agent.log()
    );
    agent.terminate(Duration::from_secs(10))?;
    Ok(())
}

/// What an agent holds that could leak across restarts: its descriptors,
/// the pins, and the weir programs and maps loaded in the kernel.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    descriptors: usize,
    pinned: Vec<std::path::PathBuf>,
    /// Programs and maps by (truncated) kernel name: how many are loaded.
    loaded: BTreeMap<String, usize>,
}

fn held(agent: &AgentProcess, pins: &PinRoot) -> Held {
    let descriptors = agent
        .pid()
        .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .map_or(0, Iterator::count);
    let mut loaded = BTreeMap::new();
    let programs = aya::programs::loaded_programs()
        .flatten()
        .filter_map(|p| p.name_as_str().map(str::to_owned));
    let maps = aya::maps::loaded_maps()
        .flatten()
        .filter_map(|m| m.name_as_str().map(str::to_owned));
    for name in programs.chain(maps) {
        if name.to_ascii_lowercase().starts_with("weir_") {
            *loaded.entry(name).or_insert(0) += 1;
        }
    }
    Held {
        descriptors,
        pinned: pins.pinned_files(),
        loaded,
    }
}

#[test]
fn twenty_restarts_leak_nothing() -> Result<()> {
    require_root();
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut serving = serving(&[("client", &[])])?;
    let (node, pins, http) = (&serving.node, &serving.pins, serving.http);
    let agent = &mut serving.agent;
    let client = &serving.clients[0];
    let first = held(agent, pins);
    // Names are cut to 15 bytes by the kernel, so two programs may share one.
    ensure!(
        first.loaded.contains_key("weir_connect4") && first.loaded.contains_key("WEIR_PODS"),
        "weir's programs and maps not found loaded: {first:?}"
    );
    for restart in 1..=20 {
        // Crashes and clean stops, alternately.
        if restart % 2 == 0 {
            agent.terminate(Duration::from_secs(10))?;
        } else {
            agent.kill();
        }
        agent.restart(node, pins.path())?;
        agent.wait_ready(node, Duration::from_secs(20))?;
        assert_eq!(get_once(client, http), VIA_WEIR, "restart {restart}");
        // The kernel frees the last agent's programs once the links moved.
        // A leak is growth: a socket open at the first count (a pooled
        // upstream connection the application has since closed) may be
        // gone now.
        let mut now = held(agent, pins);
        let leaks_nothing = |now: &Held| {
            now.descriptors <= first.descriptors
                && now.pinned == first.pinned
                && now.loaded == first.loaded
        };
        wait::until(Duration::from_secs(5), || {
            now = held(agent, pins);
            leaks_nothing(&now)
        });
        assert!(
            leaks_nothing(&now),
            "after restart {restart}: {now:?}, first {first:?}\n{}",
            agent.log()
        );
    }
    agent.terminate(Duration::from_secs(10))?;
    Ok(())
}
