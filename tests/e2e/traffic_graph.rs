//! The admin listener's traffic graph in a real browser, as root: a client
//! pod calls a service that weir splits between two backend pods, and while
//! it does, headless Chromium (in the node's own network namespace, where
//! the admin listens and nothing routes out) loads `/graph`. The document
//! its script built must hold the client, the service, both clusters and
//! both backends as nodes, and the edges between them carrying the
//! requests; its screenshot must show a drawing, not a blank page.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use weir_tests::agent::{AgentProcess, split_service_config};
use weir_tests::browser::{Chromium, groups_with, png_colours};
use weir_tests::pins::PinRoot;
use weir_tests::support::{require_root, sim_client, sim_server};
use weir_tests::{PodProcess, SimNode};

/// The service address the client calls; nothing listens there: weir claims it.
const SERVICE: &str = "198.51.100.20:80";

/// Virtual time the page's script gets: its first sample and two more, 2 s apart.
const BUDGET: Duration = Duration::from_secs(5);

#[test]
fn the_graph_page_draws_the_pods_and_services_traffic_flows_between() -> Result<()> {
    require_root();
    // First, so that a machine without it fails at once, saying how to fix it.
    let chromium = Chromium::find()?;
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let client = node.add_pod("client")?;
    let v1 = node.add_pod("backend-v1")?;
    let v2 = node.add_pod("backend-v2")?;
    let _pauses: Vec<PodProcess> = [&client, &v1, &v2]
        .iter()
        .map(|p| p.start_pause())
        .collect::<Result<_>>()?;
    let _v1_app = v1.start_server(&sim_server(), &["http", "v1", "0.0.0.0:8080"], 8080)?;
    let _v2_app = v2.start_server(&sim_server(), &["http", "v2", "0.0.0.0:8080"], 8080)?;
    let pods: String = [&client, &v1, &v2]
        .iter()
        .map(|p| p.pods_file_entry(&[("weir.dev/enroll", "true")]))
        .collect();
    let agent = AgentProcess::start(
        &node,
        &split_service_config(SERVICE, &v1, &v2),
        &format!("pods:\n{pods}"),
        pins.path(),
    )?;
    agent.wait_ready(&node, Duration::from_secs(20))?;

    // 200 requests counted before the page loads (both backends get some
    // of an 80/20 split: the chance v2 gets none is 0.8^200) ...
    let out = client
        .spawn(requests(200))?
        .wait_output(Duration::from_secs(120))?;
    ensure!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    // ... and more while it loads, until the test ends (killed on drop).
    let _traffic = client.spawn(requests(100_000))?;

    let url = format!("http://{}/graph", agent.admin);
    let dom = chromium.dump_dom(node.router(), &url, BUDGET)?;
    let nodes: Vec<String> = groups_with(&dom, "data-node")
        .into_iter()
        .map(|(attrs, _)| attrs["data-node"].clone())
        .collect();
    let want = [
        "pod:default/client",
        "service:backend",
        "cluster:backend_v1",
        "cluster:backend_v2",
        "pod:default/backend-v1",
        "pod:default/backend-v2",
    ];
    for id in want {
        ensure!(
            nodes.iter().any(|n| n == id),
            "no node {id} on the page; nodes: {nodes:?}\n{dom}"
        );
    }
    let edges = groups_with(&dom, "data-edge");
    for (from, to) in [
        (want[0], want[1]),
        (want[1], want[2]),
        (want[1], want[3]),
        (want[2], want[4]),
        (want[3], want[5]),
    ] {
        let (attrs, content) = edges
            .iter()
            .find(|(a, _)| a["data-from"] == from && a["data-to"] == to)
            .with_context(|| format!("no edge {from} -> {to} on the page\n{dom}"))?;
        let requests: u64 = attrs["data-requests"].parse()?;
        ensure!(
            requests > 0,
            "edge {from} -> {to} carries no requests: {attrs:?}"
        );
        // Its label: a rate (or, before a second sample, a count), the 5xx share, a p99.
        ensure!(
            (content.contains(" rps") || content.contains(" req"))
                && content.contains("% 5xx")
                && content.contains("p99"),
            "edge {from} -> {to} has no rate, error share and p99 label: {content}"
        );
    }
    let sent = edges
        .iter()
        .find(|(a, _)| a["data-from"] == want[0] && a["data-to"] == want[1])
        .map(|(a, _)| a["data-requests"].parse::<u64>())
        .transpose()?;
    ensure!(
        sent >= Some(200),
        "the client's edge shows {sent:?} requests, fewer than the 200 it sent first"
    );

    // The picture: a drawing has many colours and no one of them nearly everywhere.
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("traffic_graph.png");
    let _ = std::fs::remove_file(&png);
    chromium.screenshot(node.router(), &url, BUDGET, &png)?;
    let colours = png_colours(&std::fs::read(&png)?)?;
    println!("screenshot {}: {colours:?}", png.display());
    ensure!(
        (colours.width, colours.height) == (1200, 800),
        "screenshot {}: {colours:?}",
        png.display()
    );
    ensure!(
        colours.distinct >= 16 && colours.commonest_share < 0.97,
        "the screenshot {} looks blank: {colours:?}",
        png.display()
    );
    Ok(())
}

/// `count` GETs to the service from the client pod.
fn requests(count: u32) -> Command {
    let mut cmd = Command::new(sim_client());
    cmd.args(["http", SERVICE, "backend", "/", &count.to_string()]);
    cmd
}
