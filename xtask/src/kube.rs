//! A real kube-apiserver for the tests, built once from Debian bookworm's
//! `kubernetes` source package (1.20.2 with its `vendor/` tree, so no Go module
//! proxy is needed) and cached outside the repository.
//!
//! The build follows the steps verified on the project's machines: the source
//! comes through a private deb-src list (the system's apt configuration stays
//! untouched), Go builds in GOPATH mode (`-mod=vendor` fails on this tree), the
//! vendored reflect2 1.0.1 is replaced by Debian's 1.0.2 (1.0.1 segfaults under
//! Go >= 1.18 after about 40 s of serving), and openapi-gen runs first (else
//! `undefined: openapi.GetOpenAPIDefinitions`).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::install::ensure_apt_packages;
use crate::run::{command_output, run};

pub const VERSION: &str = "v1.20.2";
/// Where the built binary is kept unless `WEIR_KUBE_CACHE` names another directory.
const DEFAULT_CACHE: &str = "/var/cache/weir/kube-apiserver-v1.20.2";
/// The environment variable the tests read the binary's path from.
pub const BINARY_ENV: &str = "WEIR_KUBE_APISERVER";

/// etcd for the server's storage, Go and make for the build, reflect2 1.0.2's
/// source for the swap; rsync is what the kubernetes Makefile copies with.
const PACKAGES: &[&str] = &[
    "golang-go",
    "etcd-server",
    "etcd-client",
    "rsync",
    "make",
    "golang-github-modern-go-reflect2-dev",
];
const REFLECT2_SOURCE: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";

/// The cached kube-apiserver, built first if it is not there yet; etcd is
/// installed either way, since the tests run it beside the server.
pub fn ensure_kube_apiserver() -> Result<PathBuf> {
    ensure_apt_packages(PACKAGES)?;
    let cache = cache_dir();
    let binary = cache.join("kube-apiserver");
    if binary_is_good(&binary) {
        return Ok(binary);
    }
    fs::create_dir_all(&cache)
        .with_context(|| format!("creating the kube-apiserver cache {}", cache.display()))?;
    // Two tasks asking at once (two worktrees, CI and a developer) build it once.
    let _lock = lock(&cache.join(".lock"))?;
    if binary_is_good(&binary) {
        return Ok(binary);
    }
    println!(
        "xtask: building kube-apiserver {VERSION} from Debian bookworm's kubernetes source package \
         into {} (the tests run it against etcd; first run only, later runs reuse it; usually 3 to 5 \
         minutes on 2 cores; WEIR_KUBE_CACHE picks another directory)",
        cache.display()
    );
    let started = Instant::now();
    let work = cache.join("build");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    fs::create_dir_all(&work)?;
    let built = build(&work)?;
    let staged = cache.join("kube-apiserver.new");
    fs::copy(&built, &staged).with_context(|| format!("copying to {}", staged.display()))?;
    // A rename, so a reader never sees half a binary.
    fs::rename(&staged, &binary)?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    if !binary_is_good(&binary) {
        bail!("the built {} does not report {VERSION}", binary.display());
    }
    println!(
        "xtask: kube-apiserver {VERSION} built in {:.0?}: {}",
        started.elapsed(),
        binary.display()
    );
    Ok(binary)
}

fn cache_dir() -> PathBuf {
    std::env::var_os("WEIR_KUBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

fn binary_is_good(binary: &Path) -> bool {
    command_output(Command::new(binary).arg("--version"))
        .is_ok_and(|out| out.trim() == format!("Kubernetes {VERSION}"))
}

/// An exclusive flock held until the returned file is dropped.
fn lock(path: &Path) -> Result<File> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", path.display()));
    }
    Ok(file)
}

fn build(work: &Path) -> Result<PathBuf> {
    let source = fetch_source(work)?;
    swap_reflect2(&source)?;
    let gopath = work.join("gopath");
    let in_gopath = gopath.join("src/k8s.io/kubernetes");
    fs::create_dir_all(in_gopath.parent().expect("has a parent"))?;
    symlink(&source, &in_gopath)?;
    // Go finds the package's import path from $PWD, which must name the
    // directory through the GOPATH symlink (the process's cwd resolves it).
    let go = |cmd: &mut Command| {
        cmd.current_dir(&in_gopath)
            .env("PWD", &in_gopath)
            .env("GO111MODULE", "off")
            .env("GOPATH", &gopath)
            .env("GOCACHE", work.join("gocache"))
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "");
    };
    fs::create_dir_all(in_gopath.join("_output/bin"))?;
    println!("xtask: kube-apiserver: building openapi-gen and generating the OpenAPI definitions");
    let mut openapi_gen = Command::new("go");
    openapi_gen.args([
        "build",
        "-o",
        "_output/bin/openapi-gen",
        "./vendor/k8s.io/kube-openapi/cmd/openapi-gen",
    ]);
    go(&mut openapi_gen);
    run(&mut openapi_gen)?;
    let mut gen_openapi = Command::new("make");
    gen_openapi.arg("gen_openapi");
    go(&mut gen_openapi);
    run(&mut gen_openapi)?;
    println!("xtask: kube-apiserver: go build ./cmd/kube-apiserver (the long part)");
    let out = work.join("kube-apiserver");
    let version_pkg = "k8s.io/kubernetes/vendor/k8s.io/component-base/version";
    let mut build = Command::new("go");
    build
        .args(["build", "-ldflags"])
        .arg(format!(
            "-s -w -X {version_pkg}.gitVersion={VERSION} -X {version_pkg}.gitMajor=1 -X {version_pkg}.gitMinor=20"
        ))
        .arg("-o")
        .arg(&out)
        .arg("./cmd/kube-apiserver");
    go(&mut build);
    run(&mut build)?;
    Ok(out)
}

/// Downloads and unpacks the source package through a private apt state, so the
/// system's own sources, lists and caches are left as they were.
fn fetch_source(work: &Path) -> Result<PathBuf> {
    let apt = work.join("apt");
    fs::create_dir_all(apt.join("lists/partial"))?;
    let list = apt.join("src.list");
    fs::write(
        &list,
        format!("deb-src {} bookworm main\n", debian_mirror()?),
    )?;
    let private = |cmd: &mut Command| {
        cmd.arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", list.display()))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null", "-o"])
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()));
    };
    println!("xtask: kube-apiserver: fetching the kubernetes source package (apt-get source)");
    let mut update = Command::new("apt-get");
    private(&mut update);
    run(update.args(["update", "-q"]))?;
    let mut source = Command::new("apt-get");
    private(&mut source);
    run(source
        .args(["source", "--download-only", "-q", "kubernetes"])
        .current_dir(work))?;
    let tarball = fs::read_dir(work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kubernetes_") && n.ends_with(".orig.tar.gz"))
        })
        .context("apt-get source left no kubernetes_*.orig.tar.gz")?;
    run(Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(work))?;
    let source = work.join("kubernetes-1.20.2");
    if !source.join("cmd/kube-apiserver").is_dir() {
        bail!(
            "{} has no cmd/kube-apiserver: the source package is not the expected 1.20.2",
            source.display()
        );
    }
    Ok(source)
}

/// The mirror the system's own apt sources use: deb822 `URIs:` or one-line `deb URI suite`.
fn debian_mirror() -> Result<String> {
    let mut texts = Vec::new();
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| fs::read_to_string(p).ok()));
    }
    texts.extend(fs::read_to_string("/etc/apt/sources.list").ok());
    texts
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match words.next()? {
                "URIs:" | "deb" => words.next().map(str::to_owned),
                _ => None,
            }
        })
        .find(|uri| !uri.contains("security"))
        .context("no Debian mirror found in /etc/apt/sources.list{,.d/*}")
}

/// Replaces the vendored reflect2 1.0.1 with Debian's 1.0.2.
fn swap_reflect2(source: &Path) -> Result<()> {
    let vendored = source.join("vendor/github.com/modern-go/reflect2");
    fs::remove_dir_all(&vendored)?;
    fs::create_dir_all(&vendored)?;
    for entry in fs::read_dir(REFLECT2_SOURCE).with_context(|| {
        format!("reading {REFLECT2_SOURCE} (golang-github-modern-go-reflect2-dev)")
    })? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let wanted = (name.ends_with(".go") && !name.ends_with("_test.go")) || name.ends_with(".s");
        if wanted {
            fs::copy(&path, vendored.join(name))?;
        }
    }
    Ok(())
}
