//! The image's file system: the static `weir` and the handful of system files
//! a static glibc program still reads at run time.

use std::fs::{File, FileTimes};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// Debian's bundle of the Mozilla roots: rustls-native-certs finds it here
/// (openssl-probe's first guess), for upstream TLS verified against system roots.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Files written as text: (path in the image, mode, contents).
const TEXT_FILES: [(&str, u32, &str); 4] = [
    // Only root exists, so `getpwuid(0)` answers and tools that print the user work.
    ("etc/passwd", 0o644, "root:x:0:0:root:/root:/sbin/nologin\n"),
    ("etc/group", 0o644, "root:x:0:\n"),
    // glibc's files and dns lookups are built into libc (2.34 and later), so a
    // static binary resolves names without loading an NSS module, provided it
    // is told to use only those two.
    (
        "etc/nsswitch.conf",
        0o644,
        "passwd: files\ngroup: files\nhosts: files dns\n",
    ),
    // Kubernetes mounts its own /etc/hosts over this one; a plain runtime
    // still resolves localhost.
    ("etc/hosts", 0o644, "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
];

/// Fills `rootfs` (an empty, freshly unpacked bundle's root) and gives every
/// entry the time `epoch`, so the layer depends on the inputs only.
pub fn populate(rootfs: &Path, weir: &Path, epoch: i64) -> Result<()> {
    for dir in ["usr/local/bin", "etc/ssl/certs", "tmp"] {
        let path = rootfs.join(dir);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    copy(weir, &rootfs.join("usr/local/bin/weir"), 0o755)?;
    copy(Path::new(CA_BUNDLE), &rootfs.join(&CA_BUNDLE[1..]), 0o644)
        .context("the image needs Debian's CA bundle (package ca-certificates)")?;
    for (path, mode, text) in TEXT_FILES {
        let path = rootfs.join(path);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        set_mode(&path, mode)?;
    }
    // Sticky and world-writable, as libraries that make temporary files
    // expect; under a read-only root file system an emptyDir goes here instead.
    set_mode(&rootfs.join("tmp"), 0o1777)?;
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch.max(0).unsigned_abs());
    set_times(rootfs, time)
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Sets the access and modification times of `path` and everything below it.
fn set_times(path: &Path, time: SystemTime) -> Result<()> {
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            set_times(&entry?.path(), time)?;
        }
    }
    File::open(path)
        .and_then(|f| f.set_times(FileTimes::new().set_accessed(time).set_modified(time)))
        .with_context(|| format!("setting the times of {}", path.display()))
}
