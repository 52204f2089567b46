//! `cargo xtask image`: weir's container image, built without a container
//! engine. umoci writes an OCI layout with one layer (the static `weir` and the
//! few files it reads from the system), skopeo turns it into a `docker-archive`
//! tar for `ctr images import` and `kind load image-archive`. See docs/image.md.

mod binary;
mod rootfs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::install;
use crate::run::{command_output, run};

/// Where the container runs the agent, and its default arguments: the
/// DaemonSet mounts its ConfigMap at /etc/weir.
pub const ENTRYPOINT: &str = "/usr/local/bin/weir";
pub const CMD: [&str; 4] = ["run", "--kubernetes", "--config", "/etc/weir/config.yaml"];

/// Builds the image; returns its OCI layout (tagged with the agent's version).
pub fn build(root: &Path) -> Result<PathBuf> {
    let started = Instant::now();
    // runc is not needed to build, but the image's test runs the image with it.
    install::ensure_apt_packages(&["umoci", "skopeo", "runc", "file", "ca-certificates"])?;
    let weir = binary::build(root)?;
    let version = binary::version(&weir)?;
    let provenance = Provenance::of(root, &version)?;

    let out = root.join("target/image");
    let layout = out.join("oci");
    let bundle = out.join("bundle");
    // Rewritten from nothing every time: an old tag or blob never survives
    // into the new image.
    for dir in [&layout, &bundle] {
        remove_dir_if_present(dir)?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let image_ref = format!("{}:{version}", layout.display());
    umoci(&["init", "--layout"], &layout)?;
    umoci(&["new", "--image"], Path::new(&image_ref))?;
    umoci(&["unpack", "--image", &image_ref], &bundle)?;
    rootfs::populate(&bundle.join("rootfs"), &weir, provenance.epoch)?;
    // One history entry for the one layer, at the fixed time: tools that
    // match history to layers (docker history, some scanners) expect it.
    umoci(
        &[
            "repack",
            &format!("--history.created={}", provenance.created),
            "--history.created_by=cargo xtask image",
            "--image",
            &image_ref,
        ],
        &bundle,
    )?;
    configure(&image_ref, &provenance)?;
    umoci(&["gc", "--layout"], &layout)?;
    remove_dir_if_present(&bundle)?;

    let archive = out.join(format!("weir-{version}.docker.tar"));
    if archive.exists() {
        std::fs::remove_file(&archive)
            .with_context(|| format!("removing the old {}", archive.display()))?;
    }
    // The policy file only matters for pulling from registries; this copies
    // between two local files.
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci:{image_ref}"))
        .arg(format!(
            "docker-archive:{}:weir:{version}",
            archive.display()
        )))
    .context("writing the docker-archive tar with skopeo failed")?;

    println!(
        "xtask: image weir:{version} in {:.0?}\n  OCI layout:     {} (tag {version}, {})\n  docker-archive: {} ({})\n  binary:         {} ({})",
        started.elapsed(),
        layout.display(),
        mib(dir_size(&layout)?),
        archive.display(),
        mib(file_size(&archive)?),
        weir.display(),
        mib(file_size(&weir)?),
    );
    Ok(layout)
}

/// Where the image comes from, for its labels and fixed timestamps.
struct Provenance {
    version: String,
    revision: String,
    source: Option<String>,
    /// Seconds since the epoch for every file and the image's `created`:
    /// `SOURCE_DATE_EPOCH` if set, else the commit's time, so the same commit
    /// gives the same timestamps.
    epoch: i64,
    /// `epoch` in RFC 3339, as OCI wants it.
    created: String,
}

impl Provenance {
    fn of(root: &Path, version: &str) -> Result<Self> {
        let git = |args: &[&str]| {
            command_output(Command::new("git").arg("-C").arg(root).args(args))
                .map(|out| out.trim().to_owned())
        };
        let revision = git(&["rev-parse", "HEAD"])
            .context("the image is labelled with its git commit; build it from a git checkout")?;
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) => value.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds")
            })?,
            Err(_) => git(&["log", "-1", "--format=%ct"])?
                .parse()
                .context("git log printed no commit time")?,
        };
        // The repository's public address is not in the tree; a clone knows
        // where it came from.
        let source = std::env::var("WEIR_IMAGE_SOURCE")
            .ok()
            .or_else(|| git(&["remote", "get-url", "origin"]).ok())
            .filter(|s| !s.is_empty());
        let created = command_output(
            Command::new("date")
                .arg("-u")
                .arg(format!("--date=@{epoch}"))
                .arg("+%Y-%m-%dT%H:%M:%SZ"),
        )?
        .trim()
        .to_owned();
        Ok(Self {
            version: version.to_owned(),
            revision,
            source,
            epoch,
            created,
        })
    }
}

/// Entrypoint, default arguments, labels and the fixed creation time.
fn configure(image_ref: &str, provenance: &Provenance) -> Result<()> {
    let mut args = vec![
        "config".to_owned(),
        "--no-history".to_owned(),
        format!("--image={image_ref}"),
        format!("--created={}", provenance.created),
        format!("--architecture={}", binary::OCI_ARCHITECTURE),
        "--os=linux".to_owned(),
        format!("--config.entrypoint={ENTRYPOINT}"),
        "--config.env=PATH=/usr/local/bin".to_owned(),
        "--config.workingdir=/".to_owned(),
        format!(
            "--config.label=org.opencontainers.image.version={}",
            provenance.version
        ),
        format!(
            "--config.label=org.opencontainers.image.revision={}",
            provenance.revision
        ),
    ];
    // `=` keeps values that start with `--` from being read as flags.
    args.extend(CMD.iter().map(|arg| format!("--config.cmd={arg}")));
    match &provenance.source {
        Some(source) => args.push(format!(
            "--config.label=org.opencontainers.image.source={source}"
        )),
        None => println!(
            "xtask: no org.opencontainers.image.source label: set WEIR_IMAGE_SOURCE or a git remote `origin`"
        ),
    }
    run(Command::new("umoci").args(&args)).context("umoci config failed")
}

fn umoci(args: &[&str], path: &Path) -> Result<()> {
    run(Command::new("umoci").args(args).arg(path))
        .with_context(|| format!("umoci {} failed", args[0]))
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the old {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        total += if path.is_dir() {
            dir_size(&path)?
        } else {
            file_size(&path)?
        };
    }
    Ok(total)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
