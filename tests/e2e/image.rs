//! The container image `cargo xtask image` builds, run the way a container
//! runtime runs it: unpacked by umoci into a runtime bundle, started by runc.
//! `cargo xtask test` builds the image first and passes its OCI layout in
//! `WEIR_IMAGE_DIR`; run alone: `cargo xtask image && cargo test -p weir-tests --test image`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use weir_tests::agent::http_get;
use weir_tests::support::{require_root, sim_server};
use weir_tests::{SimNode, wait};

const ENTRYPOINT: &str = "/usr/local/bin/weir";

static NEXT: AtomicU32 = AtomicU32::new(0);

#[test]
fn entrypoint_prints_the_workspace_version() -> Result<()> {
    require_root();
    let image = Image::locate()?;
    let bundle = Bundle::unpack(&image)?;
    bundle.set_process(&[ENTRYPOINT, "--version"], None)?;
    let mut container = Container::start(&bundle)?;
    let status = container.wait_exit(Duration::from_secs(60))?;
    let output = container.output();
    ensure!(
        status.success(),
        "`weir --version` in the image: {status}\n{output}"
    );
    assert_eq!(output.trim(), image.workspace_version_line);
    Ok(())
}

#[test]
fn config_names_the_entrypoint_and_the_binary_is_static() -> Result<()> {
    require_root();
    let image = Image::locate()?;
    let config = image.config()?;
    assert_eq!(config["Entrypoint"], json!([ENTRYPOINT]));
    assert_eq!(
        config["Cmd"],
        json!(["run", "--kubernetes", "--config", "/etc/weir/config.yaml"])
    );
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], json!(image.tag));
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .context("no revision label")?;
    assert!(
        revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()),
        "revision label {revision:?} is not a git commit"
    );

    let bundle = Bundle::unpack(&image)?;
    let rootfs = bundle.rootfs();
    let binary = std::fs::read(rootfs.join("usr/local/bin/weir"))?;
    assert!(
        !has_interpreter(&binary)?,
        "the image's weir asks for a dynamic loader, which the image does not have"
    );
    let object = std::fs::read(workspace_root().join("target/ebpf/weir-ebpf.o"))
        .context("reading the eBPF object (`cargo xtask build-ebpf`)")?;
    assert!(
        !object.is_empty() && binary.windows(object.len()).any(|w| w == object.as_slice()),
        "the image's weir does not carry this checkout's eBPF object; run `cargo xtask image`"
    );
    let certs = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt"))?;
    assert!(
        certs.contains("BEGIN CERTIFICATE"),
        "no CA bundle in the image"
    );
    let nsswitch = std::fs::read_to_string(rootfs.join("etc/nsswitch.conf"))?;
    assert!(
        nsswitch.lines().any(|l| l == "hosts: files dns"),
        "{nsswitch}"
    );
    Ok(())
}

/// A static glibc binary resolves through the nss modules built into libc;
/// here a STRICT_DNS cluster's name exists only in the container's /etc/hosts
/// (as a kubelet-mounted hosts file would hold it), and no DNS server is
/// reachable, so a request answered by the backend proves the lookup read it.
#[test]
fn static_binary_resolves_names_from_etc_hosts() -> Result<()> {
    require_root();
    let image = Image::locate()?;
    let node = SimNode::new()?;
    let pod = node.add_pod("image")?;
    // The pod's namespace is this test's own, so a fixed port meets nobody.
    let _backend = pod.start_server(
        &sim_server(),
        &["http", "image-backend", "127.0.0.1:8080"],
        8080,
    )?;

    let bundle = Bundle::unpack(&image)?;
    let rootfs = bundle.rootfs();
    let hosts = rootfs.join("etc/hosts");
    let mut hosts_text = std::fs::read_to_string(&hosts)?;
    hosts_text.push_str("127.0.0.1\tbackend.weir-image.test\n");
    std::fs::write(&hosts, hosts_text)?;
    std::fs::create_dir_all(rootfs.join("etc/weir"))?;
    std::fs::write(rootfs.join("etc/weir/config.yaml"), PROXY_CONFIG)?;
    bundle.set_process(
        &[ENTRYPOINT, "proxy", "--config", "/etc/weir/config.yaml"],
        Some(pod.netns().path()),
    )?;
    let container = Container::start(&bundle)?;

    let mut listener = None;
    let bound = wait::until(Duration::from_secs(30), || {
        listener = bound_address(&container.output(), "weir: listener front listening on ");
        listener.is_some()
    });
    ensure!(
        bound,
        "the proxy in the image never bound its listener:\n{}",
        container.output()
    );
    let listener = listener.expect("set when bound");
    let mut last = None;
    let answered = wait::until(Duration::from_secs(30), || {
        last = Some(
            pod.netns()
                .run(|| http_get(listener, "/"))
                .map_err(anyhow::Error::from),
        );
        matches!(&last, Some(Ok(Ok((200, _)))))
    });
    ensure!(
        answered,
        "no 200 through the image's proxy (last: {last:?}):\n{}",
        container.output()
    );
    let Some(Ok(Ok((_, body)))) = last else {
        unreachable!("checked above")
    };
    assert!(body.starts_with("image-backend from "), "{body}");
    Ok(())
}

const PROXY_CONFIG: &str = "\
admin:
  address: 127.0.0.1:0
listeners:
  - name: front
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - name: all
            match:
              prefix: /
            route:
              cluster: by-name
clusters:
  - name: by-name
    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 200ms
    endpoints:
      - address: backend.weir-image.test
        port: 8080
";

/// The OCI layout under test and the tag this checkout's agent would give it.
struct Image {
    layout: PathBuf,
    tag: String,
    workspace_version_line: String,
}

impl Image {
    fn locate() -> Result<Self> {
        let layout = std::env::var_os("WEIR_IMAGE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/image/oci"));
        if !layout.join("index.json").is_file() {
            bail!(
                "no OCI image layout at {} (WEIR_IMAGE_DIR or target/image/oci): build it with `cargo xtask image`",
                layout.display()
            );
        }
        let tag = agent_version()?;
        let workspace_version_line = format!("weir {tag}");
        Ok(Self {
            layout,
            tag,
            workspace_version_line,
        })
    }

    /// The `config` object of the image configuration the tag points at.
    fn config(&self) -> Result<Value> {
        let index = self.read_json(&self.layout.join("index.json"))?;
        let manifest = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == json!(self.tag))
            .with_context(|| format!("no tag {} in {}", self.tag, self.layout.display()))?;
        let manifest = self.read_blob(&manifest["digest"])?;
        Ok(self.read_blob(&manifest["config"]["digest"])?["config"].clone())
    }

    fn read_blob(&self, digest: &Value) -> Result<Value> {
        let digest = digest.as_str().context("a descriptor without a digest")?;
        let (algorithm, hex) = digest.split_once(':').context("malformed digest")?;
        self.read_json(&self.layout.join("blobs").join(algorithm).join(hex))
    }

    fn read_json(&self, path: &Path) -> Result<Value> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// The version of this workspace's agent crate, which `weir --version` prints
/// and the image is tagged with.
fn agent_version() -> Result<String> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version=1",
            "--manifest-path",
        ])
        .arg(workspace_root().join("Cargo.toml"))
        .output()
        .context("running cargo metadata")?;
    ensure!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout)?;
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "weir-agent")
        .and_then(|p| p["version"].as_str())
        .map(str::to_owned)
        .context("no weir-agent package in cargo metadata")
}

/// A runtime bundle unpacked from the image; removed on drop.
struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    fn unpack(image: &Image) -> Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("bundle"));
        let bundle = Self { dir };
        let status = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{}", image.layout.display(), image.tag))
            .arg(&bundle.dir)
            .stdout(Stdio::null())
            .status()
            .context("running umoci (apt-get install umoci, or `cargo xtask image`)")?;
        ensure!(
            status.success(),
            "umoci unpack of {}: {status}",
            image.layout.display()
        );
        Ok(bundle)
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// What the container runs, with no terminal (its output goes to a file);
    /// `netns`: join that network namespace instead of a new one.
    fn set_process(&self, args: &[&str], netns: Option<&Path>) -> Result<()> {
        let path = self.dir.join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        config["process"]["args"] = json!(args);
        config["process"]["terminal"] = json!(false);
        if let Some(netns) = netns {
            let namespaces = config["linux"]["namespaces"]
                .as_array_mut()
                .context("config.json has no linux.namespaces")?;
            namespaces.retain(|ns| ns["type"] != "network");
            namespaces.push(json!({"type": "network", "path": netns}));
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `runc run` of a bundle in the foreground, its output in a file; the
/// container is deleted on drop, also when a test fails.
struct Container {
    id: String,
    runc: Child,
    log: PathBuf,
}

impl Container {
    fn start(bundle: &Bundle) -> Result<Self> {
        let id = unique_name("container");
        let log = bundle.dir.with_extension("log");
        let file = File::create(&log)?;
        let runc = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle.dir)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("running runc (apt-get install runc, or `cargo xtask image`)")?;
        Ok(Self { id, runc, log })
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut status = None;
        wait::until(timeout, || {
            status = self.runc.try_wait().ok().flatten();
            status.is_some()
        });
        status.with_context(|| {
            format!(
                "container still running after {timeout:?}:\n{}",
                self.output()
            )
        })
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        let _ = self.runc.kill();
        let _ = self.runc.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The address in the proxy's `<prefix>ADDR` stdout line, once printed.
fn bound_address(output: &str, prefix: &str) -> Option<std::net::SocketAddr> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|addr| addr.trim().parse().ok())
}

/// Whether an ELF64 little-endian executable names a program interpreter
/// (PT_INTERP), i.e. needs a dynamic loader; a static PIE names none.
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    ensure!(
        elf.len() >= 64 && elf[..4] == *b"\x7fELF" && elf[4] == 2 && elf[5] == 1,
        "not an ELF64 little-endian file"
    );
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let (entry_size, count) = (u16_at(0x36), u16_at(0x38));
    ensure!(
        entry_size >= 4 && phoff + entry_size * count <= elf.len(),
        "program headers outside the file"
    );
    Ok((0..count).any(|i| {
        let at = phoff + i * entry_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes")) == PT_INTERP
    }))
}

fn unique_name(what: &str) -> String {
    format!(
        "weir-image-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_path_buf()
}
