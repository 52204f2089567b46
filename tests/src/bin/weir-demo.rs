//! `cargo xtask demo`: weir's main job on a local simulated node, narrated.
//! A pod's application connects to service addresses; weir's eBPF programs send
//! the connections to weir's in-pod listener, which tells where they were going.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use weir::datapath::Datapath;
use weir::inpod::EgressListeners;
use weir_tests::SimNode;
use weir_tests::exchange::{Exchange, Placement, exchange};
use weir_tests::service::ServiceServer;

fn main() -> Result<()> {
    let client_bin = sibling_binary("sim-client")?;
    let node = SimNode::new().context("creating the simulated node (needs root)")?;
    println!(
        "simulated node {}: cgroup v2 subtree {}",
        node.id(),
        node.cgroup_root().display()
    );
    let service_v4: SocketAddr = "198.51.100.10:80".parse()?;
    let service_v6: SocketAddr = "[2001:db8::10]:80".parse()?;
    let real_v4 = ServiceServer::start(&node, service_v4)?;
    let _real_v6 = ServiceServer::start(&node, service_v6)?;
    println!("services on the node: {service_v4} and {service_v6} (real servers, outside any pod)");

    let pod = node.add_pod("client")?;
    println!(
        "pod default/{} uid {}: netns {}, {} / {}, cgroup {}",
        pod.name,
        pod.uid,
        pod.netns_name(),
        pod.ip4,
        pod.ip6,
        pod.cgroup_dir().display()
    );

    let mut datapath = Datapath::load()?;
    println!(
        "weir loaded its eBPF programs (cgroup/connect4, cgroup/connect6, sockops, sk_lookup)"
    );
    let listeners = EgressListeners::bind(pod.netns())?;
    let registration =
        datapath.register_pod(listeners.netns_cookie, listeners.egress_settings(0)?)?;
    let attachment = datapath.attach_egress(pod.cgroup_dir(), &pod.uid)?;
    println!(
        "weir enrolled the pod: egress listeners {} and {} inside the pod, programs attached to its cgroup (links {:?})",
        listeners.v4.local_addr()?,
        listeners.v6.local_addr()?,
        attachment.link_ids()
    );

    let table = datapath.orig_dst_table();
    println!();
    for target in [service_v4, service_v6] {
        let listener = if target.is_ipv4() {
            &listeners.v4
        } else {
            &listeners.v6
        };
        let result = exchange(
            &pod,
            &client_bin,
            Placement::InPod,
            target,
            listener,
            &table,
        )?;
        report(&format!("app in the pod connects to {target}"), &result);
    }
    let outside = exchange(
        &pod,
        &client_bin,
        Placement::OutsideCgroup,
        service_v4,
        &listeners.v4,
        &table,
    )?;
    report(
        &format!("a process in the pod's netns but outside its cgroup connects to {service_v4}"),
        &outside,
    );

    drop(attachment);
    drop(registration);
    println!("\nweir un-enrolled the pod (links detached)");
    let after = exchange(
        &pod,
        &client_bin,
        Placement::InPod,
        service_v4,
        &listeners.v4,
        &table,
    )?;
    report(&format!("app in the pod connects to {service_v4}"), &after);
    println!(
        "\nthe real server on {service_v4} served {} connection(s)",
        real_v4.served()
    );
    println!(
        "cleaning up: pod namespace, cgroups, node namespace and eBPF programs are removed on exit"
    );
    Ok(())
}

fn report(what: &str, result: &Exchange) {
    println!("- {what}");
    match &result.accepted {
        Some(accepted) => println!(
            "    redirected to weir's listener: peer {}, original destination {}",
            accepted.peer,
            accepted
                .orig_dst
                .map_or("none".to_owned(), |d| d.0.to_string())
        ),
        None => println!("    not redirected: it went straight to its destination"),
    }
    if result.client_succeeded {
        println!("    the app got: {}", result.client_stdout.trim_end());
    } else {
        println!("    the app failed: {}", result.client_stderr.trim_end());
    }
}

fn sibling_binary(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found; build it with `cargo build -p weir-tests --bins`",
        path.display()
    );
    Ok(path)
}
