//! What a process spends, from its own accounting in /proc: CPU time
//! (utime + stime, all threads), memory (VmRSS, VmHWM) and open descriptors.
//!
//! A proxy may be several processes (nginx: master + worker), so everything
//! here works on a process tree: the started process and its descendants.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The fields of `/proc/<pid>/stat` the benchmark needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// Clock ticks in user mode, all threads of the process.
    pub utime: u64,
    /// Clock ticks in kernel mode, all threads of the process.
    pub stime: u64,
}

/// Parses one `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so the fields
/// are counted from the last `)`.
pub fn parse_stat(line: &str) -> Result<Stat> {
    let close = line
        .rfind(')')
        .with_context(|| format!("no `)` in stat line {line:?}"))?;
    // After ")": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8)
    // flags(9) minflt(10) cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15)
    let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let raw = rest
            .get(n - 3)
            .with_context(|| format!("stat line has no field {n}: {line:?}"))?;
        raw.parse()
            .with_context(|| format!("stat field {n} is not a number: {raw:?}"))
    };
    Ok(Stat {
        ppid: u32::try_from(field(4)?).context("ppid out of range")?,
        utime: field(14)?,
        stime: field(15)?,
    })
}

fn read_stat(pid: u32) -> Result<Stat> {
    let path = format!("/proc/{pid}/stat");
    let line = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&line)
}

/// `pid` and all its descendants that are alive now.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Ok(stat) = read_stat(child) {
                children.entry(stat.ppid).or_default().push(child);
            }
        }
    }
    let mut tree = vec![pid];
    let mut next = 0;
    // Each pid appears once in the map, so this ends after at most all pids.
    while next < tree.len() {
        if let Some(kids) = children.get(&tree[next]) {
            tree.extend(kids.iter().copied().filter(|k| *k != pid));
        }
        next += 1;
    }
    tree
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|hz| *hz > 0).unwrap_or(100)
}

/// CPU time (user + system) the processes have used since they started.
pub fn cpu_time(pids: &[u32]) -> Result<Duration> {
    let mut ticks = 0;
    for pid in pids {
        let stat = read_stat(*pid)?;
        ticks += stat.utime + stat.stime;
    }
    Ok(ticks_to_duration(ticks, clock_ticks_per_second()))
}

pub fn ticks_to_duration(ticks: u64, hz: u64) -> Duration {
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz.max(1))
}

/// CPU time the whole machine was busy (all cores) since boot, from the
/// `cpu` line of `/proc/stat`: user + nice + system + irq + softirq + steal.
pub fn machine_busy() -> Result<Duration> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks = parse_machine_busy(&text)?;
    Ok(ticks_to_duration(ticks, clock_ticks_per_second()))
}

fn parse_machine_busy(text: &str) -> Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no `cpu` line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad /proc/stat line {line:?}"))?;
    // user nice system idle iowait irq softirq steal (guest is inside user)
    let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = fields[..] else {
        bail!("short /proc/stat line {line:?}");
    };
    Ok(user + nice + system + irq + softirq + steal)
}

/// CPU time of this process's waited-for children (wrk), from getrusage.
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass; no other precondition.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident memory now and at its peak, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Memory {
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// Reads VmRSS and VmHWM from the text of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Result<Memory> {
    let kib = |key: &str| -> Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in status"))?;
        let value = line[key.len()..].trim().trim_end_matches("kB").trim();
        value
            .parse()
            .with_context(|| format!("{key} is not a number of kB: {line:?}"))
    };
    Ok(Memory {
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
    })
}

/// Memory of the processes, added up (shared pages are counted once per process).
pub fn memory(pids: &[u32]) -> Result<Memory> {
    if pids.is_empty() {
        bail!("no process to measure");
    }
    let mut total = Memory::default();
    for pid in pids {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let m = parse_status(&text).with_context(|| format!("parsing {path}"))?;
        total.rss_kib += m.rss_kib;
        total.hwm_kib += m.hwm_kib;
    }
    Ok(total)
}

/// Open file descriptors of the processes, added up.
///
/// Linux 6.2 and later report a process's count of open descriptors as the
/// size of its `/proc/<pid>/fd` (a bit count of its descriptor table): a look
/// costs microseconds at any count, where listing the directory costs about
/// 1 µs a descriptor, 8 ms at the 8,000 a flood leaves open, spent on the
/// cores a bench is measuring. Older kernels report a size of 0, and the
/// directory is listed.
pub fn open_fds(pids: &[u32]) -> Result<usize> {
    let mut total = 0;
    for pid in pids {
        let dir = format!("/proc/{pid}/fd");
        let size = std::fs::metadata(&dir)
            .with_context(|| format!("reading {dir}"))?
            .len();
        total += match usize::try_from(size) {
            Ok(count) if count > 0 => count,
            _ => std::fs::read_dir(&dir)
                .with_context(|| format!("reading {dir}"))?
                .count(),
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_after_the_command_name() {
        // A command name with spaces and a `)` must not shift the fields.
        let line = "4242 (nginx: a) b) S 4241 4242 4242 0 -1 4194560 1650 0 0 0 \
                    731 129 0 0 20 0 1 0 123456 12345678 900 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                ppid: 4241,
                utime: 731,
                stime: 129
            }
        );
    }

    #[test]
    fn stat_of_this_process_parses() {
        let line = std::fs::read_to_string("/proc/self/stat").unwrap();
        let stat = parse_stat(&line).unwrap();
        assert!(stat.ppid > 0);
    }

    /// The count agrees with a listing of the directory. Measured on a
    /// child whose descriptors stay put (this process's change as other
    /// tests run beside it): a shell that has said it is ready, so done
    /// loading, and waits on its stdin. It holds its three standard
    /// descriptors and whatever the test runner let it inherit (cargo's
    /// jobserver pipe).
    #[test]
    fn open_fds_counts_what_the_directory_lists() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new("sh")
            .args(["-c", "echo ready; read _"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        let pid = child.id();
        let listed = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        let counted = open_fds(&[pid, pid]);
        drop(child.stdin.take());
        let _ = child.wait();
        assert!(listed >= 3, "{listed}");
        assert_eq!(
            counted.unwrap(),
            2 * listed,
            "both pids' descriptors, added up"
        );
    }

    #[test]
    fn truncated_stat_is_an_error() {
        assert!(parse_stat("1 (init) S 0 1 1").is_err());
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn status_memory() {
        let text = "Name:\tenvoy\nVmPeak:\t  300000 kB\nVmHWM:\t   70000 kB\nVmRSS:\t   68608 kB\n";
        let m = parse_status(text).unwrap();
        assert_eq!(
            m,
            Memory {
                rss_kib: 68608,
                hwm_kib: 70000
            }
        );
        assert!((m.rss_mib() - 67.0).abs() < 1e-9);
        assert!(parse_status("Name:\tx\n").is_err());
    }

    #[test]
    fn machine_busy_adds_the_busy_columns() {
        let text = "cpu  100 5 50 9000 7 3 2 1 40 0\ncpu0 50 2 25 4500 3 1 1 0 20 0\n";
        assert_eq!(parse_machine_busy(text).unwrap(), 100 + 5 + 50 + 3 + 2 + 1);
        assert!(parse_machine_busy("cpu  1 2 3\n").is_err());
        assert!(parse_machine_busy("intr 5\n").is_err());
        machine_busy().unwrap();
    }

    #[test]
    fn ticks_convert_to_time() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
    }

    #[test]
    fn this_process_is_in_its_own_tree_and_measurable() {
        let me = std::process::id();
        let tree = process_tree(me);
        assert_eq!(tree[0], me);
        assert!(memory(&tree[..1]).unwrap().rss_kib > 0);
        cpu_time(&tree[..1]).unwrap();
        // stdin, stdout and stderr at least; a file opened meanwhile is one more.
        let before = open_fds(&tree[..1]).unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(open_fds(&tree[..1]).unwrap(), before + 1);
        drop(file);
    }
}
