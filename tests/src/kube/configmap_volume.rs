//! The kubelet's part of a ConfigMap volume, for a node with no kubelet: the
//! ConfigMap's data written the way the kubelet's AtomicWriter writes it, so a
//! reader never sees half an update:
//!
//! ```text
//! dir/..<timestamp>.<random>/config.yaml   the payload, a new directory per update
//! dir/..data -> ..<timestamp>.<random>     swapped by rename(2), the atomic step
//! dir/config.yaml -> ..data/config.yaml    one per key, made once
//! ```

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

pub struct ConfigMapVolume {
    dir: PathBuf,
}

impl ConfigMapVolume {
    /// The volume's mount point; created if missing.
    pub fn new(dir: &Path) -> Result<ConfigMapVolume> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ConfigMapVolume {
            dir: dir.to_owned(),
        })
    }

    /// The path a container reads `key` at.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Publishes `data` (key to file content) as one atomic update.
    pub fn write(&self, data: &BTreeMap<String, String>) -> Result<()> {
        for key in data.keys() {
            if key.is_empty() || key.contains('/') || key.starts_with("..") {
                bail!("ConfigMap key {key:?} cannot be a file name in a volume");
            }
        }
        let previous = std::fs::read_link(self.dir.join(DATA)).ok();
        let payload = self.new_payload_dir()?;
        for (key, content) in data {
            std::fs::write(payload.join(key), content)
                .with_context(|| format!("writing {key} into {}", payload.display()))?;
        }
        let name = payload.file_name().expect("a named directory");
        let tmp = self.dir.join(DATA_TMP);
        let _ = std::fs::remove_file(&tmp);
        symlink(name, &tmp)?;
        std::fs::rename(&tmp, self.dir.join(DATA))
            .with_context(|| format!("swapping {DATA} in {}", self.dir.display()))?;
        self.link_keys(data)?;
        if let Some(old) = previous {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
        Ok(())
    }

    /// Reads the ConfigMap `name` once and publishes its data.
    pub async fn sync(&self, configmaps: &Api<ConfigMap>, name: &str) -> Result<()> {
        let map = configmaps
            .get(name)
            .await
            .with_context(|| format!("reading ConfigMap {name}"))?;
        self.write(&map.data.unwrap_or_default())
    }

    /// Publishes every version of the ConfigMap `name` the API reports, until the
    /// returned task is aborted (or dropped with [`Following`]).
    pub fn follow(self, configmaps: Api<ConfigMap>, name: &str) -> Following {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut maps = watcher(configmaps, config).applied_objects().boxed();
            while let Some(event) = maps.next().await {
                // An API outage shows as errors here; the watcher relists on its own.
                if let Ok(map) = event
                    && let Err(e) = self.write(&map.data.unwrap_or_default())
                {
                    // Nobody joins this task: say why the volume stopped following.
                    eprintln!("ConfigMap volume {}: {e:#}", self.dir.display());
                    return Err(e);
                }
            }
            Ok(())
        });
        Following(task)
    }

    fn new_payload_dir(&self) -> Result<PathBuf> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let template = self.dir.join(format!(
            "..{}_{:09}.XXXXXX",
            now.as_secs(),
            now.subsec_nanos()
        ));
        nix::unistd::mkdtemp(&template).context("creating the payload directory")
    }

    /// Per-key links into `..data`, and none for keys the ConfigMap dropped.
    fn link_keys(&self, data: &BTreeMap<String, String>) -> Result<()> {
        for key in data.keys() {
            let link = self.dir.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new(DATA).join(key), &link)?;
            }
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !data.contains_key(&name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

/// A [`ConfigMapVolume::follow`] task, aborted on drop.
pub struct Following(JoinHandle<Result<()>>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}
