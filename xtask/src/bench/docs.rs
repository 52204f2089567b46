//! `docs/benchmarks.md`: one section per benchmark, each between its own
//! markers, so a benchmark rewrites its section and leaves the others alone.

use std::path::Path;

use anyhow::{Context, Result};

const HEADER: &str = "# Benchmarks\n\nEach section is written by the command it shows; numbers are from one run on the machine it names.\n";

/// Replaces (or appends) the section named `id` in the Markdown file.
pub fn write_section(file: &Path, id: &str, body: &str) -> Result<()> {
    let old = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let new = replace_section(&old, id, body);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, new).with_context(|| format!("writing {}", file.display()))
}

fn replace_section(text: &str, id: &str, body: &str) -> String {
    let begin = format!("<!-- bench:{id}:begin -->");
    let end = format!("<!-- bench:{id}:end -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    if let Some(start) = text.find(&begin)
        && let Some(stop) = text[start..].find(&end)
    {
        let stop = start + stop + end.len();
        return format!("{}{section}{}", &text[..start], &text[stop..]);
    }
    format!("{}\n{section}\n", text.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let once = replace_section(HEADER, "proxy", "## Proxy\nv1");
        assert!(once.starts_with("# Benchmarks"));
        let twice = replace_section(&once, "other", "## Other\nx");
        let again = replace_section(&twice, "proxy", "## Proxy\nv2\n");
        assert!(again.contains("v2") && !again.contains("v1"));
        assert!(again.find("## Proxy").unwrap() < again.find("## Other").unwrap());
        assert_eq!(again.matches("bench:proxy:begin").count(), 1);
    }
}
