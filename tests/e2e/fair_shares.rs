//! One pod cannot take the shared proxy from the others: each enrolled pod
//! has a budget of open intercepted connections (`weir.dev/max-connections`)
//! and of new ones per second (`weir.dev/max-connection-rate`). Beyond it the
//! pod's connections are reset at once and counted against it
//! (`weir_intercept_connections_refused_total`), while its neighbour is
//! served as before; the budget comes back as connections close.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use weir_tests::agent::{AgentProcess, MINIMAL_CONFIG, get_once, metric_sample};
use weir_tests::pins::PinRoot;
use weir_tests::support::{require_root, sim_client};
use weir_tests::{PodProcess, SimNode, SimPod, wait};

const VIA_WEIR: &str = "server from 127.0.0.6";

fn refused(agent: &AgentProcess, node: &SimNode, pod: &str, reason: &str) -> f64 {
    let labels = [("direction", "outbound"), ("pod", pod), ("reason", reason)];
    agent
        .admin_get(node, "/stats/prometheus")
        .ok()
        .and_then(|(_, text)| {
            metric_sample(&text, "weir_intercept_connections_refused_total", &labels)
        })
        .unwrap_or(0.0)
}

fn output_lines(process: PodProcess) -> Result<Vec<String>> {
    let out = process.wait_output(Duration::from_secs(30))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

#[test]
fn a_pod_over_its_share_is_reset_and_its_neighbour_is_served() -> Result<()> {
    require_root();
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let hoarder = node.add_pod("hoarder")?;
    let hasty = node.add_pod("hasty")?;
    let neighbour = node.add_pod("neighbour")?;
    let server = node.add_pod("server")?;
    let mut processes: Vec<PodProcess> = [&hoarder, &hasty, &neighbour, &server]
        .iter()
        .map(|p| p.start_pause())
        .collect::<Result<_>>()?;
    let (app, http) = server.start_http_app()?;
    processes.push(app);
    let enroll = ("weir.dev/enroll", "true");
    let pods = format!(
        "pods:\n{}{}{}{}",
        hoarder.pods_file_entry(&[enroll, ("weir.dev/max-connections", "5")]),
        hasty.pods_file_entry(&[enroll, ("weir.dev/max-connection-rate", "5")]),
        neighbour.pods_file_entry(&[enroll]),
        server.pods_file_entry(&[enroll]),
    );
    let agent = AgentProcess::start(&node, MINIMAL_CONFIG, &pods, pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(20))?;
    assert_eq!(get_once(&neighbour, http), VIA_WEIR, "{}", agent.log());

    // Open connections: the hoarder holds 5, the 3 after them are reset.
    let stop = agent.dir.join("stop-holding");
    let holding = hold(&hoarder, http, 8, &stop)?;
    let capped = wait::until(Duration::from_secs(15), || {
        refused(&agent, &node, "hoarder", "pod_connections") >= 3.0
    });
    ensure!(
        capped,
        "no refusal counted against the hoarder:\n{}",
        agent.log()
    );
    // Its neighbour is served meanwhile, through weir.
    assert_eq!(get_once(&neighbour, http), VIA_WEIR);
    std::fs::write(&stop, "")?;
    let lines = output_lines(holding)?;
    let held = lines.iter().filter(|l| l.ends_with(VIA_WEIR)).count();
    let reset = lines.iter().filter(|l| l.starts_with("err ")).count();
    ensure!((held, reset) == (5, 3), "hoarder: {lines:?}");
    // Closed connections give their places back.
    let back = wait::until(Duration::from_secs(10), || {
        get_once(&hoarder, http) == VIA_WEIR
    });
    ensure!(back, "the hoarder was not served again after letting go");

    // New connections per second: 5 at once, then 5 a second.
    let burst = burst(&hasty, http, 20, &agent.dir)?;
    let served = burst.iter().filter(|l| l.ends_with(VIA_WEIR)).count();
    ensure!(
        (5..20).contains(&served),
        "hasty: {served} of 20 served at once: {burst:?}"
    );
    ensure!(
        refused(&agent, &node, "hasty", "pod_rate") >= 1.0,
        "no rate refusal counted against hasty"
    );
    ensure!(
        refused(&agent, &node, "neighbour", "pod_rate") == 0.0
            && refused(&agent, &node, "neighbour", "pod_connections") == 0.0,
        "the neighbour was charged"
    );
    assert_eq!(get_once(&neighbour, http), VIA_WEIR);
    Ok(())
}

/// `count` connections held open by `pod` until `stop` exists.
fn hold(
    pod: &SimPod,
    target: SocketAddr,
    count: usize,
    stop: &std::path::Path,
) -> Result<PodProcess> {
    let mut cmd = Command::new(sim_client());
    cmd.args(["hold", &target.to_string(), "server", &count.to_string()])
        .env("SIM_CLIENT_STOP_FILE", stop);
    pod.spawn(cmd)
}

/// `count` connections opened back to back: `hold`, told to stop before it
/// starts, ends (closing them) as soon as each has had its answer.
fn burst(
    pod: &SimPod,
    target: SocketAddr,
    count: usize,
    dir: &std::path::Path,
) -> Result<Vec<String>> {
    let stop = dir.join("stop-at-once");
    std::fs::write(&stop, "")?;
    output_lines(hold(pod, target, count, &stop)?)
}
