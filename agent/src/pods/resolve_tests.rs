use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::node::cgroup::cgroup2_root;

fn spec(uid: &str, location: PodLocation) -> PodSpec {
    PodSpec {
        namespace: "default".into(),
        name: "web".into(),
        uid: uid.into(),
        ips: vec!["10.0.0.5".parse().unwrap()],
        annotations: BTreeMap::new(),
        location,
        service_account: "default".to_owned(),
        workload_name: "web".to_owned(),
    }
}

fn error(spec: &PodSpec, root: &Path) -> String {
    match resolve(spec, root) {
        Ok(pod) => panic!("resolved to {pod:?}"),
        Err(err) => err.to_string(),
    }
}

/// A cgroup tree of our own under the real cgroup2 root, and a `sleep` in its
/// deepest directory; the process is killed and the tree removed on drop.
struct TestCgroup {
    root: PathBuf,
    /// Relative to `root`, outermost first.
    dirs: Vec<PathBuf>,
    child: Option<Child>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TestCgroup {
    /// `None` (the test is skipped) without root or a writable cgroup2 mount.
    fn new(nested: &[&str]) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to create cgroups");
            return None;
        }
        let root = match cgroup2_root() {
            Ok(root) => root,
            Err(e) => {
                eprintln!("skipped: {e}");
                return None;
            }
        };
        let top = format!(
            "weir-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut fixture = TestCgroup {
            root,
            dirs: Vec::new(),
            child: None,
        };
        let mut dir = PathBuf::from(top);
        for name in std::iter::once("").chain(nested.iter().copied()) {
            dir.push(name);
            if let Err(e) = std::fs::create_dir(fixture.root.join(&dir)) {
                if fixture.dirs.is_empty() {
                    eprintln!("skipped: cannot create a cgroup: {e}");
                    return None;
                }
                panic!("creating cgroup {}: {e}", dir.display());
            }
            fixture.dirs.push(dir.clone());
        }
        Some(fixture)
    }

    /// Absolute path of `dirs[level]`.
    fn dir(&self, level: usize) -> PathBuf {
        self.root.join(&self.dirs[level])
    }

    /// Starts `sleep` and moves it into the deepest directory.
    fn spawn_sleeper(&mut self) -> u32 {
        let child = Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        self.child = Some(child);
        let procs = self.dir(self.dirs.len() - 1).join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", procs.display()));
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill signals the child's own PID.
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.dirs.iter().rev() {
            let dir = self.root.join(dir);
            if let Err(e) = std::fs::remove_dir(&dir) {
                eprintln!("removing test cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// (device, inode) of a namespace file: equal means the same namespace.
fn ns_id(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn own_netns() -> (u64, u64) {
    ns_id(&std::fs::metadata("/proc/self/ns/net").unwrap())
}

fn resolved_netns(pod: &ResolvedPod) -> (u64, u64) {
    ns_id(&pod.netns.file().metadata().unwrap())
}

#[test]
fn by_cgroup_finds_a_process_in_a_descendant() {
    let uid = "3f2a-01";
    let pod_dir = format!("pod{uid}");
    let Some(mut cgroup) = TestCgroup::new(&[&pod_dir, "container"]) else {
        return;
    };
    cgroup.spawn_sleeper();
    let relative = spec(uid, PodLocation::Cgroup(cgroup.dirs[1].clone()));
    let pod = resolve(&relative, &cgroup.root).unwrap();
    assert_eq!(pod.cgroup_dir, cgroup.dir(1));
    assert_eq!(resolved_netns(&pod), own_netns());

    let absolute = spec(uid, PodLocation::Cgroup(cgroup.dir(1)));
    let pod = resolve(&absolute, &cgroup.root).unwrap();
    assert_eq!(pod.cgroup_dir, cgroup.dir(1));
    assert_eq!(resolved_netns(&pod), own_netns());
}

#[test]
fn by_pid_widens_to_the_kubelet_pod_cgroup() {
    let uid = "3f2a-02";
    let pod_dir = format!("pod{uid}");
    let Some(mut cgroup) = TestCgroup::new(&[&pod_dir, "container"]) else {
        return;
    };
    let pid = cgroup.spawn_sleeper();
    let pod = resolve(&spec(uid, PodLocation::Pid(pid)), &cgroup.root).unwrap();
    assert_eq!(pod.cgroup_dir, cgroup.dir(1));
    assert_eq!(resolved_netns(&pod), own_netns());

    // Another uid: no kubelet pod directory above, so the process's own cgroup.
    let pod = resolve(&spec("other", PodLocation::Pid(pid)), &cgroup.root).unwrap();
    assert_eq!(pod.cgroup_dir, cgroup.dir(2));
    assert_eq!(resolved_netns(&pod), own_netns());
}

#[test]
fn empty_cgroup_has_no_namespace() {
    let Some(cgroup) = TestCgroup::new(&["empty"]) else {
        return;
    };
    let pod = spec("u1", PodLocation::Cgroup(cgroup.dirs[0].clone()));
    assert_eq!(
        error(&pod, &cgroup.root),
        format!(
            "pod default/web: cgroup {} has no process; cannot find its network namespace",
            cgroup.dir(0).display()
        )
    );
}

#[test]
fn missing_cgroup_directory() {
    let root = Path::new("/nonexistent/cgroup2");
    let pod = spec("u1", PodLocation::Cgroup("kubepods/podu1".into()));
    assert_eq!(
        error(&pod, root),
        "pod default/web: /nonexistent/cgroup2/kubepods/podu1 is not a cgroup v2 directory (no cgroup.procs)"
    );
}

#[test]
fn missing_process() {
    // Above the kernel's PID_MAX_LIMIT (4194304), so never a live process.
    let pod = spec("u1", PodLocation::Pid(4_000_000_000));
    assert_eq!(
        error(&pod, Path::new("/sys/fs/cgroup")),
        "pod default/web: process 4000000000 does not exist"
    );
}

#[test]
fn unified_line_of_proc_cgroup() {
    let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/kubepods/podu1/ctr\n";
    assert_eq!(unified_cgroup(hybrid), Some("/kubepods/podu1/ctr"));
    assert_eq!(unified_cgroup("0::/\n"), Some("/"));
    assert_eq!(unified_cgroup("4:memory:/x\n"), None);
}

#[test]
fn kubelet_pod_ancestor() {
    let uid = "6f1c-2a";
    let cgroupfs = Path::new("kubepods/besteffort/pod6f1c-2a/0123abcd");
    assert_eq!(
        pod_ancestor(cgroupfs, uid),
        Some(Path::new("kubepods/besteffort/pod6f1c-2a"))
    );
    let systemd = Path::new(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c_2a.slice/cri-containerd-0123.scope",
    );
    assert_eq!(
        pod_ancestor(systemd, uid),
        Some(Path::new(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c_2a.slice"
        ))
    );
    assert_eq!(
        pod_ancestor(Path::new("kubepods/pod6f1c-2a"), uid),
        Some(Path::new("kubepods/pod6f1c-2a"))
    );
    assert_eq!(pod_ancestor(cgroupfs, "other"), None);
    assert_eq!(pod_ancestor(Path::new(""), uid), None);
}
