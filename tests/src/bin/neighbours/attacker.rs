//! Pod A's attacks in `weir-bench-neighbours`, one at a time, and what
//! each managed.

use super::*;

/// A's attack, running in pod A.
pub(super) struct Attacker {
    attack: Attack,
    process: PodProcess,
    log: PathBuf,
    stop: PathBuf,
    /// How long after A had opened its connections they all reached the
    /// sink (opaque), B's requests waiting for that.
    settled: Option<Duration>,
}

impl Attacker {
    /// Starts `attack` (none for `alone`) and returns once it is in effect:
    /// every connection opened (opaque: and through to the sink), the
    /// download begun; wrk floods at once.
    pub(super) fn start(
        mesh: &Mesh<'_>,
        attack: Attack,
        args: &Args,
        length: Duration,
    ) -> Result<Option<Attacker>> {
        let other = mesh.other().to_string();
        let sink = SocketAddr::new(mesh.pods.sink.ip4.into(), SINK_PORT).to_string();
        let count = args.connections.to_string();
        let flood = |path: &str| {
            let url = format!("http://{other}{path}");
            Load {
                wrk: &args.wrk,
                url: &url,
                connections: FLOOD_CONNECTIONS,
                // Past B's requests, which start after it.
                duration: length + Duration::from_secs(2),
                mode: Mode::KeepAlive,
            }
            .command()
        };
        let client = |words: &[&str]| {
            let mut cmd = Command::new(sim_client());
            cmd.args(words);
            cmd
        };
        let (mut cmd, marker) = match attack {
            Attack::Alone => return Ok(None),
            Attack::CpuDirect => (flood("/direct"), None),
            Attack::CpuUpstream => (flood("/"), None),
            Attack::Silent => (client(&["idle", &other, &count, "0"]), Some("opened ")),
            Attack::Opaque => (
                client(&["idle", &sink, &count, OPAQUE_TALKER_EVERY]),
                Some("opened "),
            ),
            Attack::SlowReader => (
                client(&[
                    "slow-read",
                    &other,
                    OTHER,
                    &format!("/bytes/{SLOW_BYTES}"),
                    &SLOW_RATE.to_string(),
                ]),
                Some("reading"),
            ),
        };
        let stop = mesh.dir.join(format!("stop-{}", attack.name()));
        let _ = std::fs::remove_file(&stop);
        let log = mesh.dir.join(format!("a-{}.log", attack.name()));
        cmd.env("SIM_CLIENT_STOP_FILE", &stop);
        let process = mesh.pods.a.spawn_logged(cmd, &log)?;
        if let Some(marker) = marker {
            let started = wait::until(Duration::from_secs(60), || {
                std::fs::read_to_string(&log).is_ok_and(|t| t.contains(marker))
            });
            if !started {
                bail!(
                    "A's {} attack did not start within 60 s: {}",
                    attack.name(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
        let settled = match attack {
            Attack::Opaque => {
                let (held, took) = settle_at_sink(mesh.pods.sink_pid)?;
                println!(
                    "bench: {}: {held} of A's connections reached the sink, settled {:.2} s after A had opened them",
                    mesh.setup.name(),
                    took.as_secs_f64()
                );
                Some(took)
            }
            _ => None,
        };
        Ok(Some(Attacker {
            attack,
            process,
            log,
            stop,
            settled,
        }))
    }

    /// Ends the attack (wrk ends by itself) and says what A managed.
    pub(super) fn end(self, args: &Args) -> Result<String> {
        std::fs::write(&self.stop, "")?;
        self.process
            .wait_output(Duration::from_secs(args.duration + 30))
            .with_context(|| format!("A's {} attack did not end", self.attack.name()))?;
        let text = std::fs::read_to_string(&self.log)?;
        let load = a_load(self.attack, &text).with_context(|| format!("A's report:\n{text}"))?;
        Ok(match self.settled {
            Some(took) => format!("{load}, all at the sink {:.1} s later", took.as_secs_f64()),
            None => load,
        })
    }
}

/// What A's report says it managed, in a few words.
pub(super) fn a_load(attack: Attack, text: &str) -> Result<String> {
    let number = |after: &str| -> Option<u64> {
        text.split(after)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Ok(match attack {
        Attack::Alone => "-".to_owned(),
        Attack::CpuDirect | Attack::CpuUpstream => {
            let wrk = parse_wrk(text)?;
            let errors = match wrk.errors() {
                0 => String::new(),
                n => format!(", {n} errors"),
            };
            format!("{:.0} req/s{errors}", wrk.requests_per_sec)
        }
        Attack::Silent | Attack::Opaque => {
            let opened = number("opened ").context("no `opened N` line")?;
            let ms = number(&format!("of {} in ", number("of ").unwrap_or(0)))
                .context("no `opened N of M in MS ms` line")?;
            let closed = number("open to the end, ").context("no `held N open` line")?;
            format!(
                "{opened} opened in {:.1} s, {closed} closed by the proxy",
                ms as f64 / 1e3
            )
        }
        Attack::SlowReader => {
            let read = number("read ").context("no `read N bytes` line")?;
            format!("{:.1} MiB read", read as f64 / f64::from(1 << 20))
        }
    })
}

/// How long the sink's count of established connections must hold still.
const SETTLED_FOR: Duration = Duration::from_millis(300);

/// Waits until A's opaque connections have all reached the sink (or been
/// refused on the way): its count of established connections holds still
/// for [`SETTLED_FOR`]. B's requests start then, so the row measures A
/// holding and talking over its connections. The opening itself is A's
/// new-connections flood, and where it lands depends on the setup: a weir
/// connection reaches the sink only after 100 ms of silence (protocol
/// detection), the sink then spawns a thread for each one, and without
/// the wait all of that fell into B's first second. Returns the count and
/// how long the wait took.
fn settle_at_sink(sink_pid: u32) -> Result<(usize, Duration)> {
    let started = Instant::now();
    let mut last = sink_connections(sink_pid)?;
    let mut still_since = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
        let now = sink_connections(sink_pid)?;
        if now != last {
            (last, still_since) = (now, Instant::now());
        } else if now > 0 && still_since.elapsed() >= SETTLED_FOR {
            return Ok((now, started.elapsed() - SETTLED_FOR));
        }
    }
    bail!("the sink's connections did not settle within 30 s (last count {last})")
}

/// Established TCP connections to the sink's port, from the table of the
/// network namespace `pid` (a process of the sink pod) is in.
fn sink_connections(pid: u32) -> Result<usize> {
    let path = format!("/proc/{pid}/net/tcp");
    let table = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let port = format!(":{SINK_PORT:04X}");
    let (mut listening, mut established) = (false, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
            continue;
        };
        if local.ends_with(&port) {
            match *state {
                "0A" => listening = true,
                "01" => established += 1,
                _ => {}
            }
        }
    }
    if !listening {
        bail!("{path} shows no listener on :{SINK_PORT}: not the sink's network namespace");
    }
    Ok(established)
}
