//! `cargo xtask demo`: weir's main job on a local simulated node, narrated.
//! Three pods and the real `weir run` agent: the client's calls to a service
//! address are routed and split 80/20 by the proxy, counted per pod, and keep
//! working when the agent is killed; the agent comes back and resumes.
//!
//! `cargo xtask demo --kubernetes`: the same node behind a real API server:
//! `kubectl apply -k daemonset/`, pods created and annotated through the API.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use weir_tests::agent::{AgentProcess, split_service_config};
use weir_tests::kube::{ADMIN, Cluster};
use weir_tests::pins::PinRoot;
use weir_tests::support::{sim_client, sim_server};
use weir_tests::{PodProcess, SimNode, SimPod};

const SERVICE: &str = "198.51.100.20:80";

fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        None => pods_file_demo(),
        Some("--kubernetes") => kubernetes_demo(),
        Some(other) => anyhow::bail!("usage: weir-demo [--kubernetes]; unknown argument {other}"),
    }
}

fn pods_file_demo() -> Result<()> {
    let pins = PinRoot::new();
    let node = SimNode::new().context("creating the simulated node (needs root)")?;
    let client = node.add_pod("client")?;
    let v1 = node.add_pod("backend-v1")?;
    let v2 = node.add_pod("backend-v2")?;
    let mut processes: Vec<PodProcess> = Vec::new();
    for pod in [&client, &v1, &v2] {
        processes.push(pod.start_pause()?);
    }
    processes.push(v1.start_server(&sim_server(), &["http", "v1", "0.0.0.0:8080"], 8080)?);
    processes.push(v2.start_server(&sim_server(), &["http", "v2", "0.0.0.0:8080"], 8080)?);
    println!(
        "simulated node {} (cgroup v2 subtree {})",
        node.id(),
        node.cgroup_root().display()
    );
    for pod in [&client, &v1, &v2] {
        println!(
            "  pod default/{:<11} {:<12} netns {}",
            pod.name,
            pod.ip4,
            pod.netns_name()
        );
    }

    let config = split_service_config(SERVICE, &v1, &v2);
    let pods: String = [&client, &v1, &v2]
        .iter()
        .map(|p| p.pods_file_entry(&[("weir.dev/enroll", "true")]))
        .collect();
    let mut agent = AgentProcess::start(&node, &config, &format!("pods:\n{pods}"), pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(30))?;
    println!(
        "\nweir run is serving the node (config {}, pods {})",
        agent.config_file.display(),
        agent.pods_file.display()
    );
    println!(
        "  every pod is annotated weir.dev/enroll: \"true\"; the service {SERVICE} has no server: weir claims it\n"
    );

    let tally = requests(&client, SERVICE, 100)?;
    println!("client -> http://{SERVICE}/ x100, answers by version (80/20 split):");
    for line in tally.lines() {
        println!("  {line}");
    }
    show_metrics(&node, &agent)?;

    agent.kill();
    println!(
        "\nweir killed (SIGKILL): the pods' hooks find no listener and let traffic through untouched"
    );
    let direct = format!("{}:8080", v1.ip4);
    println!(
        "client -> http://{direct}/ : {}",
        requests(&client, &direct, 1)?.trim()
    );

    agent.restart(&node, pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(30))?;
    println!("weir restarted: it adopted the pinned state");
    println!(
        "client -> http://{direct}/ : {}",
        requests(&client, &direct, 1)?.trim()
    );
    println!("  (\"from 127.0.0.6\": the app was reached through weir's inbound side)");
    agent.terminate(Duration::from_secs(10))?;
    println!("\ncleaning up: agent, pods, namespaces, cgroups and pins are removed on exit");
    Ok(())
}

/// The per-pod request counts on the scrape page, and the traffic graph's
/// address with the edges it draws now.
fn show_metrics(node: &SimNode, agent: &AgentProcess) -> Result<()> {
    let (_, metrics) = agent.admin_get(node, "/stats/prometheus")?;
    println!("\nmetrics (GET /stats/prometheus on the admin listener):");
    for line in metrics.lines().filter(|l| {
        l.starts_with("weir_intercept_requests_total{") && l.contains("2xx") && !l.ends_with(" 0")
    }) {
        println!("  {line}");
    }
    let (_, json) = agent.admin_get(node, "/graph.json")?;
    let graph: serde_json::Value = serde_json::from_str(&json).context("/graph.json")?;
    println!(
        "\ntraffic graph: http://{}/graph (a page on the admin listener, in the node's network \
         namespace {}; it draws /graph.json, whose edges are now):",
        agent.admin,
        node.router_ns_name()
    );
    for e in graph["edges"].as_array().into_iter().flatten() {
        println!(
            "  {} -> {}: {} requests, {} answered 5xx",
            e["from"].as_str().unwrap_or_default(),
            e["to"].as_str().unwrap_or_default(),
            e["requests"],
            e["errors"]
        );
    }
    Ok(())
}

/// `count` GETs from `pod` to `target`; lines of `COUNT STATUS BODY`.
fn requests(pod: &SimPod, target: &str, count: usize) -> Result<String> {
    let mut cmd = Command::new(sim_client());
    cmd.args(["http", target, "backend", "/", &count.to_string()]);
    let out = pod.spawn(cmd)?.wait_output(Duration::from_secs(60))?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubernetes_demo() -> Result<()> {
    let node = SimNode::new().context("creating the simulated node (needs root)")?;
    println!("starting a real Kubernetes API server (kube-apiserver v1.20.2, etcd) on loopback");
    let cluster = Cluster::start(&node)?;
    println!("$ kubectl apply -k daemonset/");
    println!(
        "{}",
        cluster
            .server
            .kubectl(&["get", "all,configmap,serviceaccount", "-n", "weir-system"])?
    );
    println!(
        "simulated node {} (this program plays its kubelet: sandboxes, pod status, the ConfigMap volume)",
        cluster.node_name
    );
    let client = cluster.start_pod(&node, "client", true, false)?;
    let other = cluster.start_pod(&node, "other", false, false)?;
    let v1 = cluster.start_pod(&node, "backend-v1", true, true)?;
    let v2 = cluster.start_pod(&node, "backend-v2", true, true)?;
    println!("$ kubectl get pods -o wide");
    println!(
        "{}",
        cluster.server.kubectl(&["get", "pods", "-o", "wide"])?
    );
    println!(
        "  client, backend-v1 and backend-v2 are annotated weir.dev/enroll=true; other is not\n"
    );

    let config = split_service_config(SERVICE, &v1.sim, &v2.sim).replace("\"{admin}\"", ADMIN);
    println!(
        "ConfigMap weir-system/weir-config: {SERVICE} split 80/20 between backend-v1 and backend-v2"
    );
    let deployed = cluster.run_agent(&node, config)?;
    let agent = &deployed.agent;
    println!(
        "weir run --kubernetes is serving the node as the DaemonSet runs it (its args, capabilities and service account)\n"
    );

    let tally = requests(&client.sim, SERVICE, 100)?;
    println!("client -> http://{SERVICE}/ x100, answers by version:");
    for line in tally.lines() {
        println!("  {line}");
    }
    println!(
        "other -> http://{SERVICE}/ : {}",
        requests(&other.sim, SERVICE, 1)
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|e| format!(
                "{e:#} (not enrolled: nothing but weir serves that address)"
            ))
    );

    println!("\n$ kubectl annotate pod other weir.dev/enroll=true");
    cluster
        .server
        .kubectl(&["annotate", "pod", "other", "weir.dev/enroll=true"])?;
    let enrolled = weir_tests::wait::until(Duration::from_secs(10), || {
        requests(&other.sim, SERVICE, 1).is_ok()
    });
    anyhow::ensure!(
        enrolled,
        "the annotated pod was not enrolled:\n{}",
        agent.log()
    );
    println!(
        "other -> http://{SERVICE}/ : {}",
        requests(&other.sim, SERVICE, 1)?.trim()
    );
    show_metrics(&node, agent)?;
    drop(deployed);
    println!(
        "\ncleaning up: agent, API server, pods, namespaces, cgroups and pins are removed on exit"
    );
    Ok(())
}
