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

/// Bound on one test binary inside a guest. The slowest takes about a
/// minute under TCG; a hung one is cut off well inside the guest's own bound
/// (900 s by default), so the binaries after it still run and the table
/// names it, instead of the whole guest timing out.
const PER_BINARY_SECS: u32 = 240;

const MARK: &str = "weir-kernels:";

pub struct TestBinary {
    pub name: &'static str,
    pub path: PathBuf,
}

/// `wanted` (all of [`E2E_TESTS`] when empty), in [`E2E_TESTS`]' order; an
/// unknown name is refused with the list of known ones.
pub fn select(wanted: &[String]) -> Result<Vec<&'static str>> {
    if let Some(unknown) = wanted.iter().find(|w| !E2E_TESTS.contains(&w.as_str())) {
        bail!(
            "--tests: {unknown:?} is not one of the guest's e2e tests ({})",
            E2E_TESTS.join(", ")
        );
    }
    Ok(E2E_TESTS
        .into_iter()
        .filter(|t| wanted.is_empty() || wanted.iter().any(|w| w == t))
        .collect())
}

/// Builds the weir binary and the `selected` e2e test binaries (with the
/// helper binaries they run) and returns the test executables.
pub fn build_tests(root: &Path, selected: &[&'static str]) -> Result<Vec<TestBinary>> {
    // Workspace-wide like `cargo xtask test`, so features unify the same way
    // and a tree that ran it already builds nothing here.
    let mut cmd = crate::cargo(root);
    cmd.args(["test", "--workspace", "--no-run"]);
    for test in selected {
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
    selected
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

/// Lines kept of each failing binary's account, so that a CI log names what
/// failed and why without the guest log, which CI does not keep.
const FAILURE_LINES: usize = 60;

/// What each failing test binary said about its failures: libtest's block
/// from the first `failures:` line to `test result: FAILED`, bounded in
/// lines, under the binary's name. Empty when every binary passed.
pub fn failure_excerpts(log: &str) -> String {
    let mut out = String::new();
    let mut block: Vec<&str> = Vec::new();
    // libtest's "test x has been running for over 60 seconds": which test
    // hung when the binary was cut off before its report.
    let mut slow: Vec<&str> = Vec::new();
    let mut inside = false;
    for line in log.lines() {
        let trimmed = line.trim_end();
        // A binary's marker closes whatever it printed.
        if let Some(rest) = trimmed
            .strip_prefix(MARK)
            .and_then(|r| r.trim().strip_prefix("test "))
        {
            if !rest.contains(" rc=0 ") {
                out += &format!("--- {rest}\n");
                push_bounded(&mut out, &block, FAILURE_LINES);
                if block.is_empty() {
                    out += "(no libtest failure report: the binary died or timed out)\n";
                    push_bounded(&mut out, &slow, FAILURE_LINES);
                }
            }
            block.clear();
            slow.clear();
            inside = false;
            continue;
        }
        if trimmed.contains(" has been running for over ") {
            slow.push(trimmed);
        }
        if !inside && trimmed == "failures:" {
            inside = true;
            block.clear();
        }
        if inside {
            block.push(trimmed);
            if trimmed.starts_with("test result: FAILED") {
                inside = false;
            }
        }
    }
    if !slow.is_empty() {
        out += "--- the binary running when the guest stopped (no marker after it)\n";
        push_bounded(&mut out, &slow, FAILURE_LINES);
    }
    out + &guest_stop_report(log)
}

/// Lines kept of vm.sh's account of a guest that hung or died: the kernel's
/// first report (a lockup's stacks on every CPU) and the log's tail.
const KERNEL_REPORT_LINES: usize = 200;

/// What vm.sh printed after a guest that timed out or never reported its
/// exit status, from its own line saying so; empty otherwise.
fn guest_stop_report(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim_end).collect();
    let Some(start) = lines.iter().position(|l| {
        l.starts_with("vm.sh: timed out")
            || l.starts_with("vm.sh: the guest reported no exit status")
    }) else {
        return String::new();
    };
    let mut out = String::from("--- the guest's kernel\n");
    push_bounded(&mut out, &lines[start..], KERNEL_REPORT_LINES);
    out
}

/// vm.sh's account of each boot whose kernel died before the command
/// started and that it booted again: shown even when the run then passed,
/// since the emulator or kernel fault it records is worth seeing.
pub fn crashed_boots(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim_end).collect();
    let mut out = String::new();
    let mut rest = &lines[..];
    while let Some(start) = rest
        .iter()
        .position(|l| l.starts_with("vm.sh: the guest's kernel died while booting"))
    {
        let end = rest[start..]
            .iter()
            .position(|l| l.starts_with("vm.sh: booting the guest again"))
            .map_or(rest.len(), |i| start + i + 1);
        out += "--- a boot the guest did not survive (booted again)\n";
        push_bounded(&mut out, &rest[start..end], KERNEL_REPORT_LINES);
        rest = &rest[end..];
    }
    out
}

/// The first `max` of `lines`, each on its own line, and how many more the
/// guest log holds.
fn push_bounded(out: &mut String, lines: &[&str], max: usize) {
    let shown = lines.len().min(max);
    for line in &lines[..shown] {
        *out += line;
        out.push('\n');
    }
    if lines.len() > shown {
        *out += &format!("[{} more lines in the guest log]\n", lines.len() - shown);
    }
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

    #[test]
    fn a_subset_of_tests_is_chosen_by_name() {
        assert_eq!(select(&[]).unwrap(), E2E_TESTS.to_vec());
        assert_eq!(
            select(&["node_traffic".into(), "egress_policy".into()]).unwrap(),
            ["egress_policy", "node_traffic"]
        );
        let err = select(&["egress".into()]).unwrap_err().to_string();
        assert!(
            err.contains("\"egress\"") && err.contains("egress_policy"),
            "{err}"
        );
    }

    #[test]
    fn failing_binaries_are_excerpted_by_name() {
        let log = "weir-kernels: kernel 5.10\n\
running 2 tests\nfailures:\n(unrelated agent output)\ntest result: ok. 2 passed; 0 failed\n\
weir-kernels: test enrollment rc=0 secs=12\n\
running 2 tests\nagent noise\nfailures:\n\n---- slow stdout ----\nthread 'slow' panicked at e2e/x.rs:3:5:\nthe neighbour was held back\n\nfailures:\n    slow\n\ntest result: FAILED. 1 passed; 1 failed\n\
weir-kernels: test node_traffic rc=101 secs=3\n\
running 2 tests\ntest quick ... ok\ntest stuck has been running for over 60 seconds\n\
weir-kernels: test agent_handover rc=124 secs=240\n";
        let text = failure_excerpts(log);
        assert!(!text.contains("enrollment"), "{text}");
        assert!(!text.contains("unrelated"), "{text}");
        assert!(!text.contains("agent noise"), "{text}");
        assert!(text.contains("--- node_traffic rc=101 secs=3"), "{text}");
        assert!(text.contains("the neighbour was held back"), "{text}");
        assert!(text.contains("test result: FAILED"), "{text}");
        assert!(text.contains("--- agent_handover rc=124"), "{text}");
        assert!(text.contains("died or timed out"), "{text}");
        assert!(
            text.contains("test stuck has been running for over 60 seconds"),
            "the hung test is named: {text}"
        );
        assert!(!text.contains("quick"), "{text}");
        assert_eq!(failure_excerpts("weir-kernels: test a rc=0 secs=1\n"), "");
    }

    #[test]
    fn a_boot_booted_again_is_reported_even_when_the_run_passed() {
        let log = "vm.sh: VM wall time 7.1s\n\
vm.sh: the guest's kernel died while booting, before the command started (boot 1 of 2)\n\
vm.sh: kernel log from its first report (line 7):\n\
[    2.486439] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n\
vm.sh: booting the guest again\n\
weir-vm: command starts at uptime 6.6s\n\
test result: ok. 2 passed; 0 failed\n";
        let text = crashed_boots(log);
        assert!(
            text.starts_with("--- a boot the guest did not survive"),
            "{text}"
        );
        assert!(text.contains("Oops: int3"), "{text}");
        assert!(
            text.trim_end().ends_with("vm.sh: booting the guest again"),
            "{text}"
        );
        assert!(!text.contains("test result"), "{text}");
        assert_eq!(
            crashed_boots("vm.sh: VM wall time 7.1s\ntest result: ok.\n"),
            ""
        );
    }

    #[test]
    fn a_hung_guest_names_the_test_and_shows_the_kernels_report() {
        let log = "weir-kernels: kernel 5.10\n\
weir-kernels: test enrollment rc=0 secs=12\n\
running 2 tests\ntest fast ... ok\ntest with_sk_msg has been running for over 60 seconds\n\
weir-vm: mounted\n\
vm.sh: VM wall time 900.3s\n\
vm.sh: timed out after 900s\n\
vm.sh: kernel log from its first report (line 812):\n\
watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [with_sk_msg:401]\n\
RIP: 0010:tcp_bpf_sendmsg+0x1c/0x2f0\n";
        let text = failure_excerpts(log);
        assert!(!text.contains("enrollment"), "{text}");
        assert!(
            text.contains("the binary running when the guest stopped"),
            "{text}"
        );
        assert!(text.contains("test with_sk_msg has been running"), "{text}");
        assert!(text.contains("--- the guest's kernel"), "{text}");
        assert!(text.contains("vm.sh: timed out after 900s"), "{text}");
        assert!(text.contains("RIP: 0010:tcp_bpf_sendmsg"), "{text}");
        assert!(!text.contains("wall time"), "{text}");
    }
}
