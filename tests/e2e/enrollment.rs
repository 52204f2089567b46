//! Enrollment from pod specs on a simulated node, as root: annotated pods get
//! their traffic intercepted, others are left alone, annotation changes apply
//! in place, removed pods are un-enrolled, and a restarted agent resumes from
//! the pinned state. The proxy is replaced by a test `Intercept` that says what
//! it was handed, so this checks the agent's part alone.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::datapath::{Datapath, DatapathOptions};
use weir::enroll::{Enroller, InboundConn, Intercept, OutboundConn};
use weir::node::cgroup::cgroup2_root;
use weir::pods::{PodLocation, PodSpec};
use weir_tests::pins::PinRoot;
use weir_tests::service::ServiceServer;
use weir_tests::support::{require_root, sim_client};
use weir_tests::{PodProcess, SimNode, SimPod};

/// Answers outbound connections itself; forwards inbound ones to the app.
struct Reporter;

impl Intercept for Reporter {
    fn outbound(&self, mut conn: OutboundConn) {
        tokio::spawn(async move {
            let mut message = Vec::new();
            let _ = conn.stream.read_to_end(&mut message).await;
            let reply = format!(
                "outbound {}/{} -> {}\n",
                conn.pod.namespace, conn.pod.name, conn.orig_dst
            );
            let _ = conn.stream.write_all(reply.as_bytes()).await;
        });
    }

    fn inbound(&self, mut conn: InboundConn) {
        tokio::spawn(async move {
            let mut message = Vec::new();
            let _ = conn.stream.read_to_end(&mut message).await;
            let answer = match conn.pod.connect_app(conn.dst).await {
                Ok(mut app) => {
                    let _ = app.write_all(&message).await;
                    let _ = app.shutdown().await;
                    let mut answer = String::new();
                    let _ = app.read_to_string(&mut answer).await;
                    answer
                }
                Err(e) => format!("app unreachable: {e}\n"),
            };
            let reply = format!(
                "inbound {}/{} from {}: {answer}",
                conn.pod.namespace, conn.pod.name, conn.peer
            );
            let _ = conn.stream.write_all(reply.as_bytes()).await;
        });
    }
}

fn spec(pod: &SimPod, annotations: &[(&str, &str)]) -> PodSpec {
    PodSpec {
        namespace: "default".into(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        ips: vec![IpAddr::V4(pod.ip4), IpAddr::V6(pod.ip6)],
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        location: PodLocation::Cgroup(pod.cgroup_dir().to_path_buf()),
        service_account: "default".to_owned(),
        workload_name: pod.name.clone(),
    }
}

/// Runs the pod's client against `target` off the async runtime.
async fn connect(pod: &Arc<SimPod>, target: SocketAddr) -> String {
    let pod = Arc::clone(pod);
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(sim_client());
        cmd.arg(target.to_string()).arg("hello");
        let out = pod
            .spawn(cmd)
            .and_then(|p| p.wait_output(std::time::Duration::from_secs(10)));
        match out {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(out) => format!("failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => format!("failed: {e}"),
        }
    })
    .await
    .expect("client task")
}

struct Node {
    client: Arc<SimPod>,
    server: Arc<SimPod>,
    bystander: Arc<SimPod>,
    _pauses: Vec<PodProcess>,
    _apps: Vec<ServiceServer>,
    real: ServiceServer,
    _node: SimNode,
}

fn node() -> Result<Node> {
    let node = SimNode::new()?;
    let real = ServiceServer::start(&node, "198.51.100.10:80".parse()?)?;
    let client = Arc::new(node.add_pod("client")?);
    let server = Arc::new(node.add_pod("server")?);
    let bystander = Arc::new(node.add_pod("bystander")?);
    let pauses = [&client, &server, &bystander]
        .iter()
        .map(|p| p.start_pause())
        .collect::<Result<Vec<_>>>()?;
    let apps = vec![
        ServiceServer::start_app(server.netns(), "[::]:8080".parse()?)?,
        ServiceServer::start_app(server.netns(), "[::]:8081".parse()?)?,
    ];
    Ok(Node {
        client,
        server,
        bystander,
        _pauses: pauses,
        _apps: apps,
        real,
        _node: node,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_pods_are_enrolled_updated_and_unenrolled() -> Result<()> {
    require_root();
    let n = node()?;
    let datapath = Datapath::load()?;
    let mut enroller = Enroller::new(datapath, Arc::new(Reporter), cgroup2_root()?);
    let service: SocketAddr = "198.51.100.10:80".parse()?;
    let server_8080 = SocketAddr::new(IpAddr::V4(n.server.ip4), 8080);
    let server_8081 = SocketAddr::new(IpAddr::V4(n.server.ip4), 8081);

    let mut desired = vec![
        spec(&n.client, &[("weir.dev/enroll", "true")]),
        spec(
            &n.server,
            &[
                ("weir.dev/enroll", "true"),
                ("weir.dev/inbound-ports", "8080"),
            ],
        ),
        spec(&n.bystander, &[]),
    ];
    let done = enroller.reconcile(&desired);
    assert!(done.failed.is_empty(), "{done:?}");
    assert_eq!(
        enroller.enrolled(),
        vec!["default/client", "default/server"]
    );

    // Outbound from an enrolled pod reaches the proxy with its destination.
    assert_eq!(
        connect(&n.client, service).await,
        "outbound default/client -> 198.51.100.10:80\n"
    );
    // A pod without the annotation is left alone.
    assert_eq!(
        connect(&n.bystander, service).await,
        format!("real server at {}\n", n.real.addr)
    );
    // Inbound to a listed port of an enrolled pod goes through the proxy, which
    // reaches the app from 127.0.0.6; an unlisted port goes straight in.
    let inbound = connect(&n.bystander, server_8080).await;
    assert!(
        inbound.starts_with(&format!("inbound default/server from {}:", n.bystander.ip4))
            && inbound.contains(&format!("app at {server_8080} saw 127.0.0.6:")),
        "{inbound}"
    );
    let direct = connect(&n.bystander, server_8081).await;
    assert!(
        direct.starts_with(&format!("app at {server_8081} saw {}:", n.bystander.ip4)),
        "{direct}"
    );

    // Changed annotations apply in place.
    desired[1] = spec(
        &n.server,
        &[
            ("weir.dev/enroll", "true"),
            ("weir.dev/inbound-ports", "8081"),
        ],
    );
    let done = enroller.reconcile(&desired);
    assert_eq!(done.updated, vec!["default/server"], "{done:?}");
    assert!(
        connect(&n.bystander, server_8080)
            .await
            .starts_with("app at "),
        "8080 no longer steered"
    );
    assert!(
        connect(&n.bystander, server_8081)
            .await
            .starts_with("inbound default/server"),
        "8081 now steered"
    );

    // A bad annotation is reported and does not disturb the others.
    desired[1] = spec(
        &n.server,
        &[
            ("weir.dev/enroll", "true"),
            ("weir.dev/fail-mode", "sometimes"),
        ],
    );
    let done = enroller.reconcile(&desired);
    assert_eq!(done.failed.len(), 1, "{done:?}");
    assert!(done.failed[0].1.contains("weir.dev/fail-mode"), "{done:?}");
    assert_eq!(
        connect(&n.client, service).await,
        "outbound default/client -> 198.51.100.10:80\n"
    );
    // The pod with the bad annotation keeps its last valid policy.
    assert_eq!(
        enroller.enrolled(),
        vec!["default/client", "default/server"]
    );
    assert!(
        connect(&n.bystander, server_8081)
            .await
            .starts_with("inbound default/server"),
        "still steered"
    );

    // Pods that are gone or lose the annotation are un-enrolled.
    let done = enroller.reconcile(&[spec(&n.client, &[("weir.dev/enroll", "false")])]);
    assert_eq!(done.unenrolled.len(), 2, "{done:?}");
    assert!(enroller.enrolled().is_empty());
    assert_eq!(
        connect(&n.client, service).await,
        format!("real server at {}\n", n.real.addr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_from_pinned_state_and_prunes() -> Result<()> {
    require_root();
    let n = node()?;
    let pins = PinRoot::new();
    let options = DatapathOptions {
        pin_root: Some(pins.path().to_path_buf()),
        sk_msg: false,
    };
    let service: SocketAddr = "198.51.100.10:80".parse()?;
    let closed = [
        ("weir.dev/enroll", "true"),
        ("weir.dev/fail-mode", "closed"),
    ];

    let mut first = Enroller::new(
        Datapath::load_with(&options)?,
        Arc::new(Reporter),
        cgroup2_root()?,
    );
    let done = first.reconcile(&[
        spec(&n.client, &closed),
        spec(&n.server, &[("weir.dev/enroll", "true")]),
    ]);
    assert!(done.failed.is_empty(), "{done:?}");
    assert_eq!(
        connect(&n.client, service).await,
        "outbound default/client -> 198.51.100.10:80\n"
    );
    // The agent stops: the fail-closed pod is refused, the other goes direct.
    drop(first);
    let refused = connect(&n.client, service).await;
    assert!(refused.contains("Operation not permitted"), "{refused}");

    // The next agent enrolls only the client (the server pod went away).
    let mut second = Enroller::new(
        Datapath::load_with(&options)?,
        Arc::new(Reporter),
        cgroup2_root()?,
    );
    let done = second.reconcile(&[spec(&n.client, &closed)]);
    assert!(done.failed.is_empty(), "{done:?}");
    let pruned = second.prune()?;
    assert_eq!(pruned.pod_pins, vec![n.server.uid.clone()], "{pruned:?}");
    assert_eq!(
        connect(&n.client, service).await,
        "outbound default/client -> 198.51.100.10:80\n"
    );

    second.unenroll_all();
    assert_eq!(
        connect(&n.client, service).await,
        format!("real server at {}\n", n.real.addr)
    );
    let left: Vec<_> = pins
        .pinned_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/pods/"))
        .collect();
    assert!(left.is_empty(), "un-enrolling leaves no pod pins: {left:?}");
    Ok(())
}
