//! What a process holds in the kernel, from /proc: its open descriptors by
//! kind (what each `/proc/<pid>/fd/N` links to) and the memory of the BPF
//! maps it holds (`memlock:` of their `/proc/<pid>/fdinfo/N`), and its threads.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};

/// The kind of a descriptor, from the target of its `/proc/<pid>/fd/N`
/// link: `socket`, `pipe`, `net namespace`, `bpf_link`, `bpf-map`,
/// `bpf-prog`, `eventfd`, `epoll`, ..., `cgroup dir` (a path under
/// /sys/fs/cgroup), `bpffs`, `/proc`, `device` or `file`.
pub fn fd_kind(target: &str) -> String {
    let prefixed = [
        ("socket:", "socket"),
        ("pipe:", "pipe"),
        ("net:", "net namespace"),
        ("mnt:", "mount namespace"),
        ("/sys/fs/cgroup", "cgroup dir"),
        ("/sys/fs/bpf", "bpffs"),
        ("/proc/", "/proc"),
        ("/dev/", "device"),
    ];
    if let Some((_, kind)) = prefixed.iter().find(|(p, _)| target.starts_with(p)) {
        return (*kind).to_owned();
    }
    if let Some(anon) = target.strip_prefix("anon_inode:") {
        // `anon_inode:bpf-map`, `anon_inode:[eventfd]`, `anon_inode:[eventpoll]`.
        return match anon.trim_matches(['[', ']']) {
            "eventpoll" => "epoll".to_owned(),
            other => other.to_owned(),
        };
    }
    if target.starts_with('/') {
        "file".to_owned()
    } else {
        // Other namespaces (`uts:[...]`) and what nothing above names.
        target
            .split(':')
            .next()
            .unwrap_or(target)
            .trim_matches(['[', ']'])
            .to_owned()
    }
}

/// The open descriptors of `pid`, counted by [`fd_kind`].
pub fn fds_by_kind(pid: u32) -> Result<BTreeMap<String, usize>> {
    let dir = format!("/proc/{pid}/fd");
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        // A descriptor closed between the listing and the readlink is gone.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        *kinds.entry(fd_kind(&target.to_string_lossy())).or_insert(0) += 1;
    }
    Ok(kinds)
}

/// From the text of a BPF map's `/proc/<pid>/fdinfo/N`: its `map_id` and
/// `memlock` (bytes); `None` for any other descriptor.
pub fn parse_map_fdinfo(text: &str) -> Option<(u32, u64)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let id = u32::try_from(field("map_id:")?).ok()?;
    Some((id, field("memlock:")?))
}

/// The BPF maps `pid` holds descriptors of: how many (each counted once,
/// however many descriptors it has) and their `memlock` bytes added up.
pub fn bpf_maps(pid: u32) -> Result<(usize, u64)> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut seen = BTreeSet::new();
    let mut bytes = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if let Some((id, memlock)) = parse_map_fdinfo(&text)
            && seen.insert(id)
        {
            bytes += memlock;
        }
    }
    Ok((seen.len(), bytes))
}

/// `Threads:` of the text of `/proc/<pid>/status`.
pub fn parse_threads(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// How many threads `pid` has.
pub fn threads(pid: u32) -> Result<usize> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_threads(&text).with_context(|| format!("no Threads: in {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_descriptors() {
        for (target, kind) in [
            ("socket:[123456]", "socket"),
            ("pipe:[99]", "pipe"),
            ("net:[4026532301]", "net namespace"),
            ("anon_inode:bpf_link", "bpf_link"),
            ("anon_inode:bpf-map", "bpf-map"),
            ("anon_inode:bpf-prog", "bpf-prog"),
            ("anon_inode:[eventfd]", "eventfd"),
            ("anon_inode:[eventpoll]", "epoll"),
            ("anon_inode:[timerfd]", "timerfd"),
            (
                "/sys/fs/cgroup/unified/weir-sim-w1n0/kubepods/besteffort/pod1",
                "cgroup dir",
            ),
            ("/sys/fs/bpf/weir/links", "bpffs"),
            ("/dev/null", "device"),
            ("/tmp/weir-agent-1-0/agent.log", "file"),
            ("uts:[4026531838]", "uts"),
        ] {
            assert_eq!(fd_kind(target), kind, "{target}");
        }
    }

    #[test]
    fn thread_count() {
        assert_eq!(
            parse_threads("Name:\tweir\nThreads:\t7\nVmRSS:\t1 kB\n"),
            Some(7)
        );
        assert_eq!(parse_threads("Name:\tweir\n"), None);
    }

    #[test]
    fn map_fdinfo() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2057\nmap_type:\t1\nkey_size:\t8\nvalue_size:\t16\nmax_entries:\t65536\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t1584192\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(parse_map_fdinfo(map), Some((42, 1_584_192)));
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t18\nprog_jited:\t1\nprog_tag:\tabc\nmemlock:\t4096\nprog_id:\t7\n";
        assert_eq!(parse_map_fdinfo(prog), None);
        assert_eq!(parse_map_fdinfo("pos:\t0\nflags:\t02\n"), None);
    }
}
