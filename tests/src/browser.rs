//! A real browser for the admin listener's pages: Debian's `chromium`,
//! headless, started inside a network namespace the test made (the
//! simulated node's, where the admin listens, which has no default route),
//! with everything that would reach the network on its own turned off and
//! every host name but the page's resolving to nothing. `cargo xtask test`
//! installs it; without it the tests that need it fail and say how to
//! install it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use weir::netns::NetNs;

use crate::pod::spawn_in;
use crate::support::TempDir;

/// The Debian package, and the binary it installs.
pub const CHROMIUM: &str = "chromium";

/// One page load, its scripts' virtual time included, may take this long.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Headless, no sandbox (root), and none of the background traffic
/// Chromium makes on its own (updates, sync, metrics, first-run pages).
const FLAGS: [&str; 15] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--hide-scrollbars",
    "--window-size=1200,800",
];

pub struct Chromium {
    bin: PathBuf,
}

impl Chromium {
    /// Chromium from `PATH`, or an error saying how to install it.
    pub fn find() -> Result<Self> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(CHROMIUM))
            .find(|bin| bin.is_file())
            .map(|bin| Self { bin })
            .ok_or_else(|| {
                anyhow!(
                    "{CHROMIUM} is not installed: this test loads the page in a real browser. \
                     `cargo xtask test` installs it; or, as root: \
                     apt-get install -y {CHROMIUM} fonts-dejavu-core"
                )
            })
    }

    /// Loads `url` in `netns`, lets its scripts run for `budget` of virtual
    /// time, and returns the document as it then is.
    pub fn dump_dom(&self, netns: &NetNs, url: &str, budget: Duration) -> Result<String> {
        let dir = TempDir::new("weir-chromium")?;
        let dom = dir.path().join("dom.html");
        self.run(netns, &dir, url, budget, &["--dump-dom".into()], &dom)?;
        std::fs::read_to_string(&dom).context("reading chromium's --dump-dom output")
    }

    /// Loads `url` in `netns` as [`Chromium::dump_dom`] does, and saves a
    /// 1200x800 screenshot as the PNG file `png`.
    pub fn screenshot(&self, netns: &NetNs, url: &str, budget: Duration, png: &Path) -> Result<()> {
        let dir = TempDir::new("weir-chromium")?;
        let arg = format!("--screenshot={}", png.display());
        self.run(netns, &dir, url, budget, &[arg], &dir.path().join("out"))?;
        ensure!(
            png.is_file(),
            "chromium saved no screenshot at {}",
            png.display()
        );
        Ok(())
    }

    fn run(
        &self,
        netns: &NetNs,
        dir: &TempDir,
        url: &str,
        budget: Duration,
        args: &[String],
        stdout: &Path,
    ) -> Result<()> {
        let host = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .context("a URL with a host")?;
        let stderr = dir.path().join("stderr");
        let mut cmd = Command::new(&self.bin);
        cmd.args(FLAGS)
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            // Any name but the page's own host resolves to nothing.
            .arg(format!(
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {host}"
            ))
            .arg(format!("--virtual-time-budget={}", budget.as_millis()))
            .args(args)
            .arg(url)
            // Its caches and crash dumps stay in the temp dir too.
            .env("HOME", dir.path())
            .stdout(File::create(stdout)?)
            .stderr(File::create(&stderr)?);
        let out = spawn_in(netns, None, cmd)
            .context("starting chromium")?
            .wait_output(LOAD_TIMEOUT)
            .with_context(|| {
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                format!("chromium on {url}; its stderr:\n{log}")
            })?;
        if !out.status.success() {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            bail!("chromium on {url} failed ({}):\n{log}", out.status);
        }
        Ok(())
    }
}

/// What a picture holds, to tell a drawing from a blank page.
#[derive(Debug)]
pub struct Colours {
    pub width: usize,
    pub height: usize,
    /// Distinct colours (RGBA).
    pub distinct: usize,
    /// The share of the pixels that have the commonest colour.
    pub commonest_share: f64,
}

/// The colours of a PNG: 8 bits per channel, not interlaced, as Chromium
/// saves screenshots.
pub fn png_colours(png: &[u8]) -> Result<Colours> {
    ensure!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG file");
    let (mut header, mut data) = (None, Vec::new());
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into()?) as usize;
        let body = png
            .get(at + 8..at + 8 + len)
            .context("a truncated PNG chunk")?;
        match &png[at + 4..at + 8] {
            b"IHDR" => header = Some(body),
            b"IDAT" => data.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        at += len + 12;
    }
    let h = header.filter(|h| h.len() == 13).context("no PNG header")?;
    let width = u32::from_be_bytes(h[0..4].try_into()?) as usize;
    let height = u32::from_be_bytes(h[4..8].try_into()?) as usize;
    let channels = match (h[8], h[9], h[12]) {
        (8, 0, 0) => 1,
        (8, 2, 0) => 3,
        (8, 4, 0) => 2,
        (8, 6, 0) => 4,
        (depth, kind, interlace) => {
            bail!("unsupported PNG: depth {depth}, colour type {kind}, interlace {interlace}")
        }
    };
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&data)
        .map_err(|e| anyhow!("inflating the PNG data: {e:?}"))?;
    let stride = width * channels;
    ensure!(
        raw.len() == height * (stride + 1),
        "PNG data of the wrong size"
    );
    let mut counts: HashMap<u32, usize> = HashMap::new();
    let (mut above, mut line) = (vec![0u8; stride], vec![0u8; stride]);
    for row in raw.chunks(stride + 1) {
        unfilter(row[0], &row[1..], &above, &mut line, channels)?;
        for px in line.chunks(channels) {
            let colour = px.iter().fold(0u32, |c, &v| (c << 8) | u32::from(v));
            *counts.entry(colour).or_default() += 1;
        }
        std::mem::swap(&mut above, &mut line);
    }
    let commonest = counts.values().max().copied().unwrap_or(0);
    Ok(Colours {
        width,
        height,
        distinct: counts.len(),
        commonest_share: commonest as f64 / (width * height).max(1) as f64,
    })
}

/// One scanline's bytes from its filtered form (PNG filter types 0 to 4).
fn unfilter(filter: u8, row: &[u8], above: &[u8], line: &mut [u8], bpp: usize) -> Result<()> {
    for i in 0..row.len() {
        let left = if i >= bpp { line[i - bpp] } else { 0 };
        let up = above[i];
        let corner = if i >= bpp { above[i - bpp] } else { 0 };
        let predicted = match filter {
            0 => 0,
            1 => left,
            2 => up,
            3 => ((u16::from(left) + u16::from(up)) / 2) as u8,
            4 => paeth(left, up, corner),
            other => bail!("PNG filter type {other}"),
        };
        line[i] = row[i].wrapping_add(predicted);
    }
    Ok(())
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// The attributes and the content (up to its first `</g>`) of every `<g>`
/// element of `dom` that has the attribute `attr`, as Chromium serialises
/// them (values in double quotes).
pub fn groups_with(dom: &str, attr: &str) -> Vec<(HashMap<String, String>, String)> {
    let attr_re = regex::Regex::new(r#"([a-zA-Z0-9:-]+)="([^"]*)""#).expect("a valid pattern");
    let mut found = Vec::new();
    let mut rest = dom;
    while let Some(start) = rest.find("<g ") {
        rest = &rest[start..];
        let Some(end) = rest.find('>') else { break };
        let attrs: HashMap<String, String> = attr_re
            .captures_iter(&rest[..end])
            .map(|c| (c[1].to_owned(), unescape(&c[2])))
            .collect();
        let close = rest.find("</g>").unwrap_or(rest.len());
        if attrs.contains_key(attr) {
            found.push((attrs, rest[end + 1..close.max(end + 1)].to_owned()));
        }
        rest = &rest[end..];
    }
    found
}

fn unescape(v: &str) -> String {
    v.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_with_their_attributes_and_content() {
        let dom = r#"<svg><g class="node pod" data-node="pod:a/b&amp;c"><text>b</text></g><g data-edge="x to y" data-requests="3"><text>3 req</text></g><g other="1"></g></svg>"#;
        let nodes = groups_with(dom, "data-node");
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].0["data-node"], "pod:a/b&c");
        assert_eq!(nodes[0].1, "<text>b</text>");
        let edges = groups_with(dom, "data-edge");
        assert_eq!(edges[0].0["data-requests"], "3");
        assert!(edges[0].1.contains("3 req"));
    }
}
