use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::pods::PodLocation;

const POLL: Duration = Duration::from_millis(10);
/// How long a change may take to show; generous for a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// A directory of our own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "weir-pods-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("pods.yaml")
    }

    /// Replaces the file the way editors and ConfigMaps do: a new file renamed over it.
    fn replace(&self, text: &str) {
        let tmp = self.0.join(".pods.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.file()).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pods document with one pod per (name, ip).
fn document(pods: &[(&str, &str)]) -> String {
    let mut text = String::from("pods:\n");
    for (name, ip) in pods {
        text.push_str(&format!(
            "  - {{namespace: default, name: {name}, uid: uid-{name}, ips: [{ip}], pid: 1}}\n"
        ));
    }
    text
}

fn names(pods: &watch::Receiver<Arc<Vec<PodSpec>>>) -> Vec<String> {
    pods.borrow().iter().map(|p| p.name.clone()).collect()
}

async fn changed(pods: &mut watch::Receiver<Arc<Vec<PodSpec>>>) -> Vec<String> {
    tokio::time::timeout(PATIENCE, pods.changed())
        .await
        .expect("no new pod list in time")
        .expect("watcher ended");
    pods.borrow_and_update()
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

/// Waits until the reported problem is present (`Some` text) or cleared (`None`).
async fn problem_becomes(
    problem: &mut watch::Receiver<Option<Arc<PodsFileError>>>,
    present: bool,
) -> Option<String> {
    let current = tokio::time::timeout(PATIENCE, problem.wait_for(|p| p.is_some() == present))
        .await
        .expect("problem state did not change in time")
        .expect("watcher ended");
    current.as_ref().map(|err| err.to_string())
}

#[tokio::test]
async fn publishes_changes_and_keeps_the_last_good_list() {
    let dir = TempDir::new();
    dir.replace(&document(&[("a", "10.0.0.1")]));
    let mut watch = watch_pods_file(&dir.file(), POLL).unwrap();
    assert_eq!(names(&watch.pods), ["a"]);
    assert!(watch.problem.borrow().is_none());

    // Replaced by rename.
    dir.replace(&document(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]));
    assert_eq!(changed(&mut watch.pods).await, ["a", "b"]);

    // A typo: reported, and the last good list stays.
    dir.replace("pods:\n  - namespace: default\n    name: c\n    uid: uid-c\n    ips: [10.0.0.300]\n    pid: 1\n");
    let problem = problem_becomes(&mut watch.problem, true).await;
    assert_eq!(
        problem.unwrap(),
        format!(
            "{}: pods[0].ips[0] (line 5): invalid IP address syntax",
            dir.file().display()
        )
    );
    assert!(!watch.pods.has_changed().unwrap());
    assert_eq!(names(&watch.pods), ["a", "b"]);

    // Fixed, edited in place.
    std::fs::write(dir.file(), document(&[("c", "10.0.0.3")])).unwrap();
    assert_eq!(changed(&mut watch.pods).await, ["c"]);
    assert_eq!(problem_becomes(&mut watch.problem, false).await, None);
}

#[tokio::test]
async fn a_vanished_file_keeps_the_list() {
    let dir = TempDir::new();
    let text = document(&[("a", "10.0.0.1")]);
    dir.replace(&text);
    let mut watch = watch_pods_file(&dir.file(), POLL).unwrap();

    std::fs::remove_file(dir.file()).unwrap();
    let problem = problem_becomes(&mut watch.problem, true).await.unwrap();
    assert_eq!(
        problem,
        format!(
            "{}: cannot read pods file: No such file or directory (os error 2)",
            dir.file().display()
        )
    );
    assert_eq!(names(&watch.pods), ["a"]);

    // Back with the same pods: the problem clears, the list is not republished.
    dir.replace(&text);
    assert_eq!(problem_becomes(&mut watch.problem, false).await, None);
    assert!(!watch.pods.has_changed().unwrap());
}

#[tokio::test]
async fn equal_pods_are_not_republished() {
    let dir = TempDir::new();
    let text = document(&[("a", "10.0.0.1")]);
    dir.replace(&text);
    let watch = watch_pods_file(&dir.file(), POLL).unwrap();
    watch.task.abort();
    // Poll by hand, so every version of the file is seen.
    let (pods_tx, mut pods) = watch::channel(watch.pods.borrow().clone());
    let (problem_tx, problem) = watch::channel(None);
    let mut poller = Poller {
        path: dir.file(),
        last_seen: Some(hash(text.as_bytes())),
        pods: pods_tx,
        problem: problem_tx,
    };
    // A comment changes the bytes, not the pods.
    dir.replace(&format!("# edited\n{text}"));
    poller.poll().await;
    assert!(!pods.has_changed().unwrap());
    assert!(problem.borrow().is_none());

    dir.replace(&document(&[("b", "10.0.0.2")]));
    poller.poll().await;
    assert!(pods.has_changed().unwrap());
    assert_eq!(names(&pods), ["b"]);
    pods.mark_unchanged();
    // Nothing new on disk: nothing published.
    poller.poll().await;
    assert!(!pods.has_changed().unwrap());
}

#[tokio::test]
async fn a_bad_initial_file_is_the_callers_error() {
    let dir = TempDir::new();
    dir.replace("pods:\n  - {namespace: default, name: a, uid: u, ips: [10.0.0.1]}\n");
    let err = watch_pods_file(&dir.file(), POLL).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: pods[0] (line 2): a pod needs `cgroup` (its cgroup v2 directory) or `pid` (a process in it)",
            dir.file().display()
        )
    );
    let missing = dir.0.join("absent.yaml");
    let err = watch_pods_file(&missing, POLL).unwrap_err();
    assert!(matches!(err, PodsFileError::Read { path, .. } if path == missing));
}

#[tokio::test]
async fn the_task_ends_with_its_last_receiver() {
    let dir = TempDir::new();
    dir.replace(&document(&[("a", "10.0.0.1")]));
    let watch = watch_pods_file(&dir.file(), POLL).unwrap();
    assert!(matches!(
        watch.pods.borrow()[0].location,
        PodLocation::Pid(1)
    ));
    drop(watch.pods);
    tokio::time::timeout(PATIENCE, watch.task)
        .await
        .expect("the watcher kept running")
        .unwrap();
}

#[tokio::test]
async fn a_completed_change_is_seen_without_waiting_for_the_poll() {
    // The interval never fires within the test: only inotify can wake it.
    let never = Duration::from_secs(3600);
    let dir = TempDir::new();
    dir.replace(&document(&[("a", "10.0.0.1")]));
    let mut watch = watch_pods_file(&dir.file(), never).unwrap();
    assert_eq!(names(&watch.pods), ["a"]);

    // Replaced by rename (IN_MOVED_TO).
    dir.replace(&document(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]));
    assert_eq!(changed(&mut watch.pods).await, ["a", "b"]);

    // Written in place (IN_CLOSE_WRITE).
    std::fs::write(dir.file(), document(&[("c", "10.0.0.3")])).unwrap();
    assert_eq!(changed(&mut watch.pods).await, ["c"]);

    // A ConfigMap volume: the file is a symlink through `..data`, swapped
    // by renaming a new `..data` link over the old one.
    let config_map = TempDir::new();
    let version = |n: u32, text: &str| {
        let data = config_map.0.join(format!("..v{n}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("pods.yaml"), text).unwrap();
        let link = config_map.0.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{n}"), &link).unwrap();
        std::fs::rename(&link, config_map.0.join("..data")).unwrap();
    };
    version(1, &document(&[("d", "10.0.0.4")]));
    std::os::unix::fs::symlink("..data/pods.yaml", config_map.file()).unwrap();
    let mut mounted = watch_pods_file(&config_map.file(), never).unwrap();
    assert_eq!(names(&mounted.pods), ["d"]);
    version(2, &document(&[("e", "10.0.0.5")]));
    assert_eq!(changed(&mut mounted.pods).await, ["e"]);
}
