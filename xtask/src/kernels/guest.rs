//! What runs inside each guest: the e2e test binaries, built on the host
//! beforehand (a guest under TCG compiles nothing in reasonable time), and
//! what their output says.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The tests crate's data-path e2e tests.
pub const E2E_TESTS: [&str; 9] = [
    "egress_redirect",
    "egress_policy",
    "ingress_steering",
    "pinned_datapath",
    "enrollment",
    "agent_lifecycle",
    "agent_handover",
    "agent_crash_bypass",
    "node_traffic",
];

/// The test that prints what the data path detected (`weir-datapath: ...`).
const STATUS_TEST: (&str, &str) = ("egress_redirect", "datapath_states_what_it_detected");

/// Bound on one test binary inside a guest, under the guest's own bound.
const PER_BINARY_SECS: u32 = 600;

const MARK: &str = "weir-kernels:";

pub struct TestBinary {
    pub name: &'static str,
    pub path: PathBuf,
}

/// Builds the weir binary and the e2e test binaries (with the helper
/// binaries they run) and returns the test executables.
pub fn build_tests(root: &Path) -> Result<Vec<TestBinary>> {
    // Workspace-wide like `cargo xtask test`, so features unify the same way
    // and a tree that ran it already builds nothing here.
    let mut cmd = crate::cargo(root);
    cmd.args(["test", "--workspace", "--no-run"]);
    for test in E2E_TESTS {
        cmd.args(["--test", test]);
    }
    println!("xtask kernels: building the e2e tests (cargo test --workspace --no-run --test ...)");
    let out = cmd.output().context("running cargo test --no-run")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("building the e2e tests failed:\n{stderr}");
    }
    // Last, and exactly as the tests' own `weir_bin()` builds it: `cargo test
    // --workspace` leaves a binary built with other features, and the guest,
    // finding it stale, would rebuild it under emulation.
    // Its environment too: build scripts (ring's) track variables such as
    // CARGO_MANIFEST_DIR, which `cargo xtask` sets and the guest does not.
    let mut weir = crate::cargo(root);
    weir.env_clear();
    for var in ["PATH", "HOME", "RUSTUP_HOME", "CARGO_HOME"] {
        if let Some(value) = std::env::var_os(var) {
            weir.env(var, value);
        }
    }
    crate::run::run(weir.args([
        "build",
        "--quiet",
        "--package",
        "weir-agent",
        "--bin",
        "weir",
    ]))?;
    E2E_TESTS
        .iter()
        .map(|name| {
            executable(&stderr, name)
                .map(|path| TestBinary {
                    name,
                    path: root.join(path),
                })
                .with_context(|| format!("cargo named no executable for the {name} test"))
        })
        .collect()
}

/// The path in cargo's `Executable e2e/<name>.rs (<path>)` line.
fn executable(cargo_stderr: &str, name: &str) -> Option<PathBuf> {
    let source = format!("e2e/{name}.rs");
    cargo_stderr.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("Executable ")?;
        let (src, path) = rest.split_once(" (")?;
        (src == source).then(|| PathBuf::from(path.trim_end_matches(')')))
    })
}

/// The guest's command: every test binary in turn, each bounded in time, with
/// a marker line after each; then the data path's own account of the kernel.
pub fn script(tests: &[TestBinary], weir: &Path) -> String {
    let mut s = String::from("echo \"weir-kernels: kernel $(uname -r)\"\n");
    for var in ["RUSTUP_HOME", "CARGO_HOME"] {
        if let Some(value) = std::env::var_os(var) {
            s += &format!("export {var}={}\n", quote(&value.to_string_lossy()));
        }
    }
    if let Some(cargo) = std::env::var_os("CARGO") {
        s += &format!("export CARGO={}\n", quote(&cargo.to_string_lossy()));
    }
    // The binary built on the host: no cargo run in the guest (see the tests
    // crate's `weir_bin`).
    s += &format!(
        "export WEIR_TEST_PREBUILT_WEIR={}\n",
        quote(&weir.to_string_lossy())
    );
    for t in tests {
        let bin = quote(&t.path.to_string_lossy());
        s += &format!(
            "s=$(date +%s); timeout -k 10 {PER_BINARY_SECS} {bin}; rc=$?\n\
             echo \"{MARK} test {} rc=$rc secs=$(( $(date +%s) - s ))\"\n",
            t.name
        );
        if t.name == STATUS_TEST.0 {
            s += &format!(
                "timeout 120 {bin} {} --exact --nocapture 2>&1 | grep '^weir-datapath:'\n",
                STATUS_TEST.1
            );
        }
    }
    s
}

/// Single-quoted for sh.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The guest's `uname -r`, from the first marker line.
pub fn kernel_release(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.strip_prefix("weir-kernels: kernel "))
        .map(|k| k.trim().to_owned())
}

/// The data path's summary line (`weir-datapath: ...`).
pub fn detected(log: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix("weir-datapath:"))
        .map_or_else(|| "(no report)".to_owned(), |d| d.trim().to_owned())
}

/// One test binary's marker: its name and exit status.
pub fn binary_results(log: &str) -> Vec<(String, i32)> {
    log.lines()
        .filter_map(|l| l.strip_prefix(MARK)?.trim().strip_prefix("test "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            let name = parts.next()?.to_owned();
            let rc = parts.next()?.strip_prefix("rc=")?.parse().ok()?;
            Some((name, rc))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_executable_lines_are_found() {
        let stderr = "   Compiling weir-tests\n  Executable e2e/enrollment.rs (target/debug/deps/enrollment-0a1b)\n  Executable e2e/node_traffic.rs (target/debug/deps/node_traffic-ff)\n";
        assert_eq!(
            executable(stderr, "enrollment"),
            Some(PathBuf::from("target/debug/deps/enrollment-0a1b"))
        );
        assert_eq!(executable(stderr, "egress_redirect"), None);
    }

    #[test]
    fn markers_are_read_back() {
        let log = "weir-kernels: kernel 5.10.0-30-amd64\nweir-kernels: test enrollment rc=0 secs=12\nweir-datapath: cgroup hybrid; weir_sockops; sk_msg off\nweir-kernels: test node_traffic rc=101 secs=3\n";
        assert_eq!(kernel_release(log).as_deref(), Some("5.10.0-30-amd64"));
        assert_eq!(detected(log), "cgroup hybrid; weir_sockops; sk_msg off");
        assert_eq!(
            binary_results(log),
            vec![("enrollment".into(), 0), ("node_traffic".into(), 101)]
        );
    }
}
