//! weir on a Kubernetes node, end to end: a real API server, `kubectl apply -k
//! daemonset/`, and the agent run as the DaemonSet's container runs it (its
//! args, its capabilities, its service account's RBAC, its config from the
//! ConfigMap volume) on a simulated node whose kubelet is this test. Pods are
//! created through the API with and without the annotation; traffic is routed
//! and split; the API server goes away and comes back with traffic flowing; a
//! pod whose sandbox appears after its API object is enrolled when it does; a
//! ConfigMap update changes routing; removing the annotation and deleting a pod
//! un-enrol them; an annotated namespace enrols its pods, except one that
//! opts out.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use weir_tests::agent::weighted_service_config;
use weir_tests::kube::{ADMIN, Cluster};
use weir_tests::support::{require_root, sim_client};
use weir_tests::{SimNode, SimPod, wait};

/// The address the client pods call; weir claims it, nothing listens there.
const SERVICE: &str = "198.51.100.20:80";

/// The routing config, as the ConfigMap's `config.yaml`: the DaemonSet's
/// admin address, and the service split between v1 and v2 by `weights`.
fn config(v1: &SimPod, v2: &SimPod, weights: (u32, u32)) -> String {
    weighted_service_config(SERVICE, v1, v2, weights).replace("\"{admin}\"", ADMIN)
}

/// `count` requests from `pod` on one connection: `(status body, count)` lines.
fn requests(pod: &SimPod, target: &str, count: u32) -> Result<BTreeMap<String, u32>> {
    let mut cmd = Command::new(sim_client());
    cmd.args(["http", target, "backend", "/", &count.to_string()]);
    let out = pod.spawn(cmd)?.wait_output(Duration::from_secs(60))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (n, rest) = line.split_once(' ')?;
            Some((rest.to_owned(), n.parse().ok()?))
        })
        .collect())
}

/// Sets (or with `None` removes) the `default` namespace's `weir.dev/enroll`.
fn set_namespace_enroll(cluster: &Cluster, value: Option<&str>) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(cluster.server.client());
    let patch = json!({"metadata": {"annotations": {"weir.dev/enroll": value}}});
    cluster.rt.block_on(namespaces.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    ))?;
    Ok(())
}

/// One request; its `status body`, or the error.
fn one(pod: &SimPod, target: &str) -> String {
    match requests(pod, target, 1) {
        Ok(tally) => tally.into_keys().next().unwrap_or_default(),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn weir_deployed_as_the_daemonset_follows_the_api() -> Result<()> {
    require_root();
    let node = SimNode::new()?;
    let mut cluster = Cluster::start(&node)?;

    let client = cluster.start_pod(&node, "client", true, false)?;
    let plain = cluster.start_pod(&node, "plain", false, false)?;
    let v1 = cluster.start_pod(&node, "backend-v1", true, true)?;
    let v2 = cluster.start_pod(&node, "backend-v2", true, true)?;

    // The agent as the DaemonSet's container runs, with the test's routing
    // in the ConfigMap, synced to a directory by the kubelet stand-in.
    let mut deployed = cluster.run_agent(&node, config(&v1.sim, &v2.sim, (80, 20)))?;
    let agent = &mut deployed.agent;

    // Routed and split, seen from the enrolled client pod.
    let tally = requests(&client.sim, SERVICE, 200).context(agent.log())?;
    let through = |version: &str| {
        tally
            .get(&format!("200 {version} from 127.0.0.6"))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        through("v1") + through("v2"),
        200,
        "{tally:?}\n{}",
        agent.log()
    );
    assert!(
        through("v2") >= 10 && through("v1") > through("v2"),
        "{tally:?}"
    );
    // The pod without the annotation is left alone: nothing listens at the
    // service address outside weir.
    assert!(
        one(&plain.sim, SERVICE).starts_with("error"),
        "plain pod intercepted"
    );
    let v2_direct = format!("{}:8080", v2.sim.ip4);
    assert_eq!(one(&plain.sim, &v2_direct), "200 v2 from 127.0.0.6");

    // The API server goes away: traffic keeps flowing through weir.
    cluster.server.stop_apiserver();
    let during = requests(&client.sim, SERVICE, 20)?;
    assert_eq!(
        during
            .iter()
            .filter(|(k, _)| k.ends_with("from 127.0.0.6"))
            .map(|(_, n)| n)
            .sum::<u32>(),
        20,
        "during the outage: {during:?}"
    );
    cluster.rt.block_on(cluster.server.start_apiserver())?;

    // Back: a pod created now, whose sandbox has no process yet, is enrolled
    // once its first process appears.
    let mut late = cluster.create_pod(&node, "late", true)?;
    cluster.report_running(&late.sim)?;
    let waiting = wait::until(Duration::from_secs(90), || {
        agent.log().contains("pod default/late: not enrolled")
    });
    assert!(waiting, "the late pod was never seen:\n{}", agent.log());
    late.processes.push(late.sim.start_pause()?);
    let enrolled = wait::until(Duration::from_secs(10), || {
        one(&late.sim, SERVICE).ends_with("from 127.0.0.6")
    });
    assert!(enrolled, "the late pod was not enrolled:\n{}", agent.log());
    assert_eq!(
        agent
            .log()
            .matches("pod default/late: not enrolled: ")
            .count(),
        1,
        "a retried pod is logged once per reason:\n{}",
        agent.log()
    );

    // A ConfigMap update reaches the agent through the volume.
    cluster.set_config(config(&v1.sim, &v2.sim, (0, 100)))?;
    let switched = wait::until(Duration::from_secs(20), || {
        requests(&client.sim, SERVICE, 10)
            .is_ok_and(|t| t.get("200 v2 from 127.0.0.6") == Some(&10))
    });
    assert!(
        switched,
        "the ConfigMap update did not take effect:\n{}",
        agent.log()
    );

    // The annotation removed at run time: the client goes direct again.
    let unannotate = json!({"metadata": {"annotations": {"weir.dev/enroll": null}}});
    cluster.rt.block_on(cluster.pods().patch(
        "client",
        &PatchParams::default(),
        &Patch::Merge(&unannotate),
    ))?;
    let direct = wait::until(Duration::from_secs(10), || {
        one(&client.sim, SERVICE).starts_with("error")
    });
    assert!(direct, "the client stayed enrolled:\n{}", agent.log());

    // A namespace-wide opt-in (what Istio's `istio-injection=enabled` does):
    // `weir.dev/enroll: "true"` on the Namespace enrols each of its pods that
    // does not say otherwise; a pod's own `"false"` keeps it out.
    let opt_out = json!({"metadata": {"annotations": {"weir.dev/enroll": "false"}}});
    cluster.rt.block_on(cluster.pods().patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(&opt_out),
    ))?;
    set_namespace_enroll(&cluster, Some("true"))?;
    let enrolled = wait::until(Duration::from_secs(10), || {
        one(&client.sim, SERVICE).ends_with("from 127.0.0.6")
    });
    assert!(
        enrolled,
        "the namespace's annotation did not enrol the client:\n{}",
        agent.log()
    );
    assert!(
        one(&plain.sim, SERVICE).starts_with("error"),
        "the pod that opted out was enrolled by its namespace"
    );
    set_namespace_enroll(&cluster, None)?;
    let direct = wait::until(Duration::from_secs(10), || {
        one(&client.sim, SERVICE).starts_with("error")
    });
    assert!(
        direct,
        "the client stayed enrolled after its namespace let go:\n{}",
        agent.log()
    );

    // A deleted pod stays enrolled while it terminates (its containers may
    // still call out), and is un-enrolled once the kubelet, played here,
    // removes it for good: its inbound traffic is no longer steered.
    cluster.rt.block_on(
        cluster
            .pods()
            .delete("backend-v2", &DeleteParams::default()),
    )?;
    assert_eq!(one(&plain.sim, &v2_direct), "200 v2 from 127.0.0.6");
    cluster.rt.block_on(cluster.pods().delete(
        "backend-v2",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    ))?;
    let plain_ip = plain.sim.ip4;
    let unenrolled = wait::until(Duration::from_secs(10), || {
        one(&plain.sim, &v2_direct) == format!("200 v2 from {plain_ip}")
    });
    assert!(unenrolled, "backend-v2 stayed enrolled:\n{}", agent.log());
    assert!(agent.log().contains("pod default/backend-v2: un-enrolled"));

    agent.terminate(Duration::from_secs(10))?;
    Ok(())
}
