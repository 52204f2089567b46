//! The real `weir run` agent on a simulated node, as root: it enrolls annotated
//! pods from a pods file, intercepts their traffic, never black-holes them when
//! it is killed (fail-open within a second; fail-closed pods refused), resumes
//! after a restart, un-enrolls pods removed from the file, and never creates an
//! iptables or nftables rule; and what each enrolled pod holds in it (four
//! listeners and a namespace handle, no link descriptor, no thread).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use benchkit::footprint::{fds_by_kind, threads};
use weir_tests::agent::{AgentProcess, MINIMAL_CONFIG, get_once};
use weir_tests::pins::PinRoot;
use weir_tests::support::{require_root, sim_client, sim_server};
use weir_tests::{PodProcess, SimNode, SimPod, wait};

fn pods_file(entries: &[String]) -> String {
    format!("pods:\n{}", entries.concat())
}

/// No iptables or nftables rule anywhere the test can see: the host and every pod.
fn assert_no_firewall_rules(pods: &[&SimPod]) {
    let host_v4 = run_tool("iptables-save", &[], None);
    assert!(
        !host_v4.contains("weir"),
        "iptables-save on the host mentions weir:\n{host_v4}"
    );
    let host_nft = run_tool("nft", &["list", "ruleset"], None);
    assert!(
        !host_nft.contains("weir"),
        "nft ruleset on the host mentions weir:\n{host_nft}"
    );
    for pod in pods {
        for (tool, args) in [
            ("iptables-save", &[][..]),
            ("ip6tables-save", &[][..]),
            ("nft", &["list", "ruleset"][..]),
        ] {
            let out = run_tool(tool, args, Some(pod.netns_name()));
            let rules: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with("-A") || l.trim_start().starts_with("chain"))
                .collect();
            assert!(
                rules.is_empty(),
                "{tool} in pod {} shows rules: {rules:?}",
                pod.name
            );
        }
    }
}

fn run_tool(tool: &str, args: &[&str], netns: Option<&str>) -> String {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, tool]);
            c
        }
        None => Command::new(tool),
    };
    let out = cmd.args(args).output().unwrap_or_else(|e| {
        panic!("{tool} is needed for this test (cargo xtask test installs it): {e}")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Loop {
    process: PodProcess,
    started: Instant,
}

/// A bounded request loop in `pod` (one request per connection every 50 ms).
fn start_loop(pod: &SimPod, target: SocketAddr, duration: Duration) -> Result<Loop> {
    let mut cmd = Command::new(sim_client());
    cmd.args([
        "loop",
        &target.to_string(),
        "server",
        "/",
        "50",
        &duration.as_millis().to_string(),
    ]);
    let started = Instant::now();
    Ok(Loop {
        process: pod.spawn(cmd)?,
        started,
    })
}

/// (ms since the loop started, Ok(body) | Err(error)) per request.
fn finish_loop(lp: Loop, timeout: Duration) -> Result<Vec<(u128, Result<String, String>)>> {
    let out = lp.process.wait_output(timeout)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let kind = parts.next()?;
            let at: u128 = parts.next()?.parse().ok()?;
            let rest = parts.next().unwrap_or("").to_owned();
            Some((at, if kind == "ok" { Ok(rest) } else { Err(rest) }))
        })
        .collect())
}

#[test]
fn agent_intercepts_survives_sigkill_resumes_and_unenrolls() -> Result<()> {
    require_root();
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let client = node.add_pod("client")?;
    let locked = node.add_pod("locked")?;
    let server = node.add_pod("server")?;
    let _pauses: Vec<PodProcess> = [&client, &locked, &server]
        .iter()
        .map(|p| p.start_pause())
        .collect::<Result<_>>()?;
    let (_app, http) = server.start_http_app()?;
    let _echo = server.start_server(&sim_server(), &["echo", "0.0.0.0:9000"], 9000)?;
    let echo: SocketAddr = SocketAddr::new(server.ip4.into(), 9000);

    let enrolled = pods_file(&[
        client.pods_file_entry(&[("weir.dev/enroll", "true")]),
        locked.pods_file_entry(&[
            ("weir.dev/enroll", "true"),
            ("weir.dev/fail-mode", "closed"),
        ]),
        server.pods_file_entry(&[("weir.dev/enroll", "true")]),
    ]);
    let mut agent = AgentProcess::start(&node, MINIMAL_CONFIG, &enrolled, pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(20))?;

    // Through weir: the app sees the proxy's 127.0.0.6, not the client.
    assert_eq!(
        get_once(&client, http),
        "server from 127.0.0.6",
        "agent log:\n{}",
        agent.log()
    );
    // An opaque TCP stream of 1 MiB comes back byte-identical through interception.
    let mut cmd = Command::new(sim_client());
    cmd.args(["echo", &echo.to_string(), &(1024 * 1024).to_string()]);
    let out = client.spawn(cmd)?.wait_output(Duration::from_secs(30))?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "identical\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_firewall_rules(&[&client, &locked, &server]);

    // SIGKILL in the middle of bounded request loops, once weir has answered
    // both (the client's one request above counted already).
    let open_loop = start_loop(&client, http, Duration::from_secs(6))?;
    let closed_loop = start_loop(&locked, http, Duration::from_secs(6))?;
    agent.wait_outbound_answers(&node, "client", 2.0, Duration::from_secs(5))?;
    agent.wait_outbound_answers(&node, "locked", 1.0, Duration::from_secs(5))?;
    let killed_at = open_loop.started.elapsed().as_millis();
    agent.kill();
    // The second loop started a moment after the first: its clock is behind.
    let skew = closed_loop
        .started
        .duration_since(open_loop.started)
        .as_millis();
    let open = finish_loop(open_loop, Duration::from_secs(15))?;
    let closed = finish_loop(closed_loop, Duration::from_secs(15))?;
    let closed_killed_at = killed_at.saturating_sub(skew);

    // Fail-open: from one second after the kill, every request succeeds, directly.
    let late: Vec<_> = open
        .iter()
        .filter(|(at, _)| *at > killed_at + 1000)
        .collect();
    assert!(
        late.len() >= 20,
        "the loop kept going after the kill: {open:?}"
    );
    for (at, result) in &late {
        assert_eq!(
            result.as_deref(),
            Ok(format!("server from {}", client.ip4).as_str()),
            "at {at} ms: {open:?}"
        );
    }
    assert!(
        open.iter()
            .any(|(at, r)| *at < killed_at && r.as_deref() == Ok("server from 127.0.0.6")),
        "{open:?}"
    );
    // Fail-closed: refused while no agent runs.
    let refused: Vec<_> = closed
        .iter()
        .filter(|(at, _)| *at > closed_killed_at + 1000)
        .collect();
    assert!(!refused.is_empty(), "{closed:?}");
    for (at, result) in &refused {
        let err = result
            .as_ref()
            .expect_err("fail-closed pods are refused while no agent runs");
        assert!(err.contains("Operation not permitted"), "at {at} ms: {err}");
    }

    // The agent comes back, adopts the pinned state and intercepts again.
    agent.restart(&node, pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(20))?;
    assert_eq!(
        get_once(&client, http),
        "server from 127.0.0.6",
        "agent log:\n{}",
        agent.log()
    );
    assert_eq!(get_once(&locked, http), "server from 127.0.0.6");
    assert_no_firewall_rules(&[&client, &locked, &server]);

    // A clean stop (SIGTERM) leaves the pods the same way: direct, or refused
    // when fail-closed, from the moment the agent is gone.
    agent.terminate(Duration::from_secs(10))?;
    assert_eq!(
        get_once(&client, http),
        format!("server from {}", client.ip4)
    );
    let refused = get_once(&locked, http);
    assert!(refused.contains("Operation not permitted"), "{refused}");
    agent.restart(&node, pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(20))?;
    assert_eq!(get_once(&client, http), "server from 127.0.0.6");

    // Removing the pods from the file un-enrolls them: pins gone, direct traffic.
    agent.write_pods("pods: []\n")?;
    let unpinned = wait::until(Duration::from_secs(10), || {
        !pins
            .pinned_files()
            .iter()
            .any(|p| p.to_string_lossy().contains("/pods/"))
    });
    assert!(
        unpinned,
        "pod pins left after un-enrolling: {:?}\n{}",
        pins.pinned_files(),
        agent.log()
    );
    assert_eq!(
        get_once(&client, http),
        format!("server from {}", client.ip4)
    );
    assert_eq!(
        get_once(&locked, http),
        format!("server from {}", locked.ip4)
    );
    agent.terminate(Duration::from_secs(10))?;
    Ok(())
}

/// The agent's descriptors and threads, as `weir-bench-node` reads them.
fn holdings(pid: u32) -> Result<(BTreeMap<String, usize>, usize)> {
    Ok((fds_by_kind(pid)?, threads(pid)?))
}

/// What each enrolled pod costs the agent, no traffic: its four in-pod
/// listeners (once each) and one handle on its network namespace; no
/// `bpf_link` (the pins hold the links) and no thread (one socket factory
/// serves every pod). All of it given back once the pods are un-enrolled.
/// A regression in any kind of descriptor fails here, as `cargo xtask bench
/// node` would show it at scale.
#[test]
fn each_enrolled_pod_holds_its_four_listeners_and_one_namespace_handle() -> Result<()> {
    require_root();
    const PODS: usize = 6;
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let pods: Vec<SimPod> = (0..PODS)
        .map(|i| node.add_pod(&format!("idle-{i}")))
        .collect::<Result<_>>()?;
    let _pauses: Vec<PodProcess> = pods
        .iter()
        .map(|p| p.start_pause())
        .collect::<Result<_>>()?;
    let agent = AgentProcess::start(&node, MINIMAL_CONFIG, "pods: []\n", pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(20))?;
    let pid = agent.pid().context("agent running")?;
    // Settled: the readiness check's admin connection closes a moment later.
    let mut last = holdings(pid)?;
    let settled = wait::until(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(200));
        let now = holdings(pid);
        let same = now.as_ref().is_ok_and(|now| *now == last);
        if let Ok(now) = now {
            last = now;
        }
        same
    });
    assert!(settled, "the agent's descriptors never settled: {last:?}");
    let (baseline, baseline_threads) = last;

    let entries: Vec<String> = pods
        .iter()
        .map(|p| p.pods_file_entry(&[("weir.dev/enroll", "true")]))
        .collect();
    agent.write_pods(&pods_file(&entries))?;
    let enrolled = wait::until(Duration::from_secs(10), || {
        agent.logged(": enrolled") >= PODS
    });
    assert!(enrolled, "pods not enrolled:\n{}", agent.log());
    let mut expected = baseline.clone();
    for (kind, per_pod) in [("socket", 4), ("net namespace", 1)] {
        *expected.entry(kind.to_owned()).or_insert(0) += per_pod * PODS;
    }
    // Threads only have to be fewer than one per pod: the runtime's
    // blocking pool may hold a thread or two for a while after enrolment.
    let no_thread_per_pod = |threads: usize| threads < baseline_threads + PODS;
    let mut seen = None;
    let held = wait::until(Duration::from_secs(15), || {
        let now = holdings(pid).ok();
        let ok = now
            .as_ref()
            .is_some_and(|(fds, threads)| *fds == expected && no_thread_per_pod(*threads));
        seen = now;
        ok
    });
    assert!(
        held,
        "with {PODS} pods the agent holds {seen:?}; expected {expected:?} and \
         fewer than {} threads (no pod: {baseline:?}, {baseline_threads} threads)\n{}",
        baseline_threads + PODS,
        agent.log()
    );

    agent.write_pods("pods: []\n")?;
    let given_back = wait::until(Duration::from_secs(15), || {
        agent.logged(": un-enrolled") >= PODS
            && holdings(pid)
                .is_ok_and(|(fds, threads)| fds == baseline && no_thread_per_pod(threads))
    });
    assert!(
        given_back,
        "after un-enrolling, the agent holds {:?}; no pod: {baseline:?}\n{}",
        holdings(pid)?,
        agent.log()
    );
    Ok(())
}
