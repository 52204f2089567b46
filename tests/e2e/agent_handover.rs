//! A rolling update on the simulated node, as a DaemonSet with `maxSurge: 1`
//! does it: a second `weir run` with the same arguments starts while the first
//! serves, takes every pod over, and the first, sent SIGTERM, drains and exits
//! 0. Throughout, a keep-alive client, a client opening a connection per
//! request, a fail-closed pod and a slow request in flight at the signal lose
//! nothing, and no request bypasses weir (the application sees weir's
//! 127.0.0.6, never the client). Three hand-overs in a row leave the pinned
//! state as one agent left it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use weir_common::MAP_LAYOUT_VERSION;
use weir_tests::agent::{AgentOptions, AgentProcess, MINIMAL_CONFIG, get_once};
use weir_tests::pins::PinRoot;
use weir_tests::scenario::{Answer, ThreePods, VIA_WEIR, answer, loop_lines, start_loop};
use weir_tests::support::{require_root, sim_client};
use weir_tests::{PodProcess, SimNode};

/// Requests every this many ms, per loop.
const GAP_MS: &str = "20";
/// The application's answer to the slow request: longer than a successor
/// takes to start here, so the request is in flight at the signal.
const SLOW_MS: u64 = 6000;
/// ... or this many times as long as the first agent took to start, where
/// that is longer (a successor under QEMU took 9 s where the first agent
/// took 2), up to [`SLOW_MAX`], which the agent's 25 s drain time covers.
const SLOW_PER_START: u32 = 8;
const SLOW_MAX: Duration = Duration::from_secs(20);

/// Every line of a loop's output: all answered, all through weir. `logs`
/// (both agents') are printed when one is not.
fn check_loop(name: &str, process: PodProcess, logs: &dyn Fn() -> String) -> Result<usize> {
    let lines = loop_lines(process)?;
    ensure!(lines.len() >= 20, "{name}: too few requests: {lines:?}");
    let bad: Vec<&String> = lines
        .iter()
        .filter(|l| answer(l) != Answer::ViaWeir)
        .collect();
    ensure!(
        bad.is_empty(),
        "{name}: {} of {} requests failed or bypassed weir: {bad:?}\n{}",
        bad.len(),
        lines.len(),
        logs()
    );
    Ok(lines.len())
}

#[test]
fn a_rolling_update_loses_no_request_and_none_bypasses_weir() -> Result<()> {
    require_root();
    let (node, pods, pins, mut serving, slow) = one_agent_serving()?;
    let pinned_by_one_agent = pins.pinned_files();
    for round in 1..=3 {
        serving = hand_over(
            &node,
            &pods,
            &pins,
            serving,
            slow,
            &format!("round {round}"),
        )?;
        assert_eq!(
            pins.pinned_files(),
            pinned_by_one_agent,
            "round {round}: pins changed"
        );
    }
    serving.terminate(Duration::from_secs(30))?;
    Ok(())
}

/// An agent built with another map layout stands in for an older release:
/// its pins are moved to another `v<N>` directory (bpffs renames), which is
/// all a new agent sees of another layout. The new agent must take the
/// pods over as from its own kind, detach the old layout's hooks (the old
/// connect hook would refuse a fail-closed pod for good once no listener of
/// its own is left), and remove the old layout's pins.
#[test]
fn an_agent_of_another_map_layout_hands_over_without_a_gap_and_leaves_nothing() -> Result<()> {
    require_root();
    let (node, pods, pins, serving, slow) = one_agent_serving()?;
    let pinned_by_one_agent = pins.pinned_files();
    let ours = pins.path().join(format!("v{MAP_LAYOUT_VERSION}"));
    let other = pins.path().join(format!("v{}", MAP_LAYOUT_VERSION + 1));
    std::fs::rename(&ours, &other)?;

    let serving = hand_over(&node, &pods, &pins, serving, slow, "across layouts")?;
    assert!(
        !other.exists(),
        "the other layout's pins are left: {:?}\n{}",
        pins.pinned_files(),
        serving.log()
    );
    assert_eq!(pins.pinned_files(), pinned_by_one_agent);
    // Alone now: the fail-closed pod is still served (no hook of the old
    // layout refuses it), then refused once this agent is gone too.
    assert_eq!(get_once(&pods.locked, pods.http), VIA_WEIR);
    let mut serving = serving;
    serving.terminate(Duration::from_secs(30))?;
    let refused = get_once(&pods.locked, pods.http);
    assert!(refused.contains("Operation not permitted"), "{refused}");
    Ok(())
}

/// `weir run` on the node's pods. Enrolment and hand-over log at debug, so a
/// connection lost at a hand-over shows in the logs the failure prints.
fn start_agent(node: &SimNode, pods: &ThreePods, pins: &PinRoot) -> Result<AgentProcess> {
    let options = AgentOptions {
        log: "info,weir::enroll=debug,weir::run=debug".to_owned(),
        ..AgentOptions::default()
    };
    AgentProcess::start_with_options(
        node,
        MINIMAL_CONFIG,
        &pods.pods_file(),
        pins.path(),
        options,
    )
}

/// A node with [`ThreePods`], all enrolled, served by one agent. The slow
/// request must outlast a successor's start, which takes as long as this
/// agent's did: [`SLOW_MS`], or longer on a slow machine.
fn one_agent_serving() -> Result<(SimNode, ThreePods, PinRoot, AgentProcess, Duration)> {
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let pods = ThreePods::start(&node)?;
    let started = Instant::now();
    let serving = start_agent(&node, &pods, &pins)?;
    serving.wait_ready(&node, Duration::from_secs(20))?;
    let slow = Duration::from_millis(SLOW_MS)
        .max(started.elapsed() * SLOW_PER_START)
        .min(SLOW_MAX);
    let answer = get_once(&pods.client, pods.http);
    ensure!(answer == VIA_WEIR, "{answer}\n{}", serving.log());
    Ok((node, pods, pins, serving, slow))
}

/// One rolling update: a successor with the same arguments starts beside
/// `serving`, which then gets SIGTERM, under a keep-alive client, a client
/// opening a connection per request, a fail-closed pod and a slow request in
/// flight at the signal. Returns the successor, serving alone.
fn hand_over(
    node: &SimNode,
    pods: &ThreePods,
    pins: &PinRoot,
    mut serving: AgentProcess,
    slow: Duration,
    round: &str,
) -> Result<AgentProcess> {
    let (client, locked, http) = (&pods.client, &pods.locked, pods.http);
    let stop = serving.dir.join("stop-loops");
    let keepalive = start_loop(client, "keepalive", http, GAP_MS, &stop)?;
    let fresh = start_loop(client, "loop", http, GAP_MS, &stop)?;
    let closed = start_loop(locked, "loop", http, GAP_MS, &stop)?;
    serving.wait_outbound_answers(node, "client", 10.0, Duration::from_secs(10))?;
    serving.wait_outbound_answers(node, "locked", 5.0, Duration::from_secs(10))?;
    let mut slow_cmd = Command::new(sim_client());
    slow_cmd.args([
        "http",
        &http.to_string(),
        "server",
        &format!("/delay/{}", slow.as_millis()),
        "1",
    ]);
    let slow_sent = Instant::now();
    let slow_request = client.spawn(slow_cmd)?;

    // The successor: same arguments (its own admin port, as the harness
    // gives each agent; on a node both share it, SO_REUSEPORT).
    let successor = start_agent(node, pods, pins)?;
    successor.wait_ready(node, Duration::from_secs(20))?;
    let signalled = slow_sent.elapsed();
    ensure!(
        signalled < slow,
        "{round}: the successor took {signalled:?} to start, longer than the slow request \
         lasts; it would not be in flight at the signal"
    );
    serving.terminate(Duration::from_secs(30))?;
    // Some requests after the old agent is gone, then stop the loops.
    let mut after = Command::new(sim_client());
    after.args(["http", &http.to_string(), "server", "/", "20"]);
    // A bound on the process, not a speed: 20 requests under QEMU's
    // emulation on a busy 2-core host took more than 20 s.
    let after = client.spawn(after)?.wait_output(Duration::from_secs(60))?;
    assert_eq!(
        String::from_utf8_lossy(&after.stdout).trim(),
        format!("20 200 {VIA_WEIR}"),
        "{round}"
    );
    successor.wait_outbound_answers(node, "locked", 5.0, Duration::from_secs(10))?;
    std::fs::write(&stop, "")?;

    let slow_out = slow_request.wait_output(slow + Duration::from_secs(20))?;
    assert_eq!(
        String::from_utf8_lossy(&slow_out.stdout).trim(),
        format!("1 200 {VIA_WEIR}"),
        "{round}: the request in flight at SIGTERM: {}\nold agent:\n{}",
        String::from_utf8_lossy(&slow_out.stderr),
        serving.log()
    );
    let logs = || {
        format!(
            "old agent:\n{}\nnew agent:\n{}",
            serving.log(),
            successor.log()
        )
    };
    for (name, process) in [("keep-alive", keepalive), ("new connection", fresh)] {
        check_loop(&format!("{round}, client, {name}"), process, &logs)?;
    }
    check_loop(&format!("{round}, fail-closed pod"), closed, &logs)?;
    assert!(
        serving
            .log()
            .contains("every pod is served by the new agent"),
        "{round}: {}",
        serving.log()
    );
    Ok(successor)
}
