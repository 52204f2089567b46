//! The engine's shape, checked from its source (docs/architecture.md,
//! "Module graph"): nothing under `agent/src/proxy/` names a module above
//! the engine (interception, the agent, enrollment, the data path), and the
//! engine's own import graph has no cycle longer than [`MAX_CYCLE`] files.
//!
//! The graph is read from `use` declarations and `crate::` / `super::` /
//! `self::` paths in non-test code (everything before a file's first
//! `#[cfg(test)]`); a path counts as an edge to the deepest module file it
//! names. `mod` declarations are not edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate-level modules the engine may name besides itself.
const ENGINE_MAY_USE: [&str; 3] = ["proxy", "config", "addr"];
/// Files in the largest import cycle inside the engine (see
/// docs/architecture.md for which remain and why).
const MAX_CYCLE: usize = 2;

type Module = Vec<String>;

struct Source {
    module: Module,
    file: String,
    code: String,
}

fn src_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_of(rel: &Path) -> Module {
    let mut m: Module = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = m.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        f => m.push(f.trim_end_matches(".rs").to_owned()),
    }
    m
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<Source>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            out.push(Source {
                module: module_of(rel),
                file: rel.display().to_string(),
                code,
            });
        }
    }
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or_default().trim();
        return vec![path.trim_end_matches("::self").to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| match p.as_str() {
            "self" => prefix.trim_end_matches("::").to_owned(),
            _ => format!("{prefix}{p}"),
        })
        .collect()
}

/// Every path a file names that starts with `crate::`, `super::` or `self::`.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stmt in code.split(';') {
        let s = stmt.trim_start();
        let s = s.strip_prefix("pub(crate) ").unwrap_or(s);
        let s = s.strip_prefix("pub(super) ").unwrap_or(s);
        let s = s.strip_prefix("pub ").unwrap_or(s);
        if let Some(tree) = s.strip_prefix("use ") {
            out.extend(expand(tree));
        }
    }
    for anchor in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(anchor) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            // `super::{a, b}`: the group's paths come from the `use` above.
            if path.ends_with("::") && code[i + path.len()..].starts_with('{') {
                continue;
            }
            out.push(path.trim_end_matches(':').to_owned());
        }
    }
    out
}

/// The absolute module path `path` names, seen from `module`.
fn absolute(module: &Module, path: &str) -> Option<Module> {
    let mut segs = path.split("::").filter(|s| !s.is_empty());
    let mut base = match segs.next()? {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => module[..module.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    for s in segs {
        if s == "super" {
            base.pop()?;
        } else {
            base.push(s.to_owned());
        }
    }
    Some(base)
}

struct Graph {
    files: Vec<Source>,
    edges: BTreeMap<usize, BTreeSet<usize>>,
    /// (file, path) of every path that leaves the engine.
    escapes: Vec<(String, String)>,
}

fn engine_graph() -> Graph {
    let root = src_root();
    let mut all = Vec::new();
    sources(&root, &root, &mut all);
    let known: BTreeMap<Module, usize> = all
        .iter()
        .enumerate()
        .map(|(i, s)| (s.module.clone(), i))
        .collect();
    let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let mut escapes = Vec::new();
    for (i, src) in all.iter().enumerate() {
        if src.module.first().map(String::as_str) != Some("proxy") {
            continue;
        }
        for p in paths(&src.code) {
            let Some(abs) = absolute(&src.module, &p) else {
                continue;
            };
            match abs.first() {
                Some(top) if !ENGINE_MAY_USE.contains(&top.as_str()) => {
                    escapes.push((src.file.clone(), p.clone()));
                    continue;
                }
                _ => {}
            }
            // The deepest module the path names.
            let target = (1..=abs.len())
                .rev()
                .find_map(|n| known.get(&abs[..n]).copied());
            if let Some(t) = target
                && t != i
                && all[t].module.first().map(String::as_str) == Some("proxy")
            {
                edges.entry(i).or_default().insert(t);
            }
        }
    }
    Graph {
        files: all,
        edges,
        escapes,
    }
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        g: &'a Graph,
        index: BTreeMap<usize, usize>,
        low: BTreeMap<usize, usize>,
        stack: Vec<usize>,
        on_stack: BTreeSet<usize>,
        out: Vec<Vec<String>>,
    }
    fn visit(w: &mut Walk<'_>, v: usize) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on_stack.insert(v);
        let next: Vec<usize> = w.g.edges.get(&v).into_iter().flatten().copied().collect();
        for t in next {
            if !w.index.contains_key(&t) {
                visit(w, t);
                let l = w.low[&v].min(w.low[&t]);
                w.low.insert(v, l);
            } else if w.on_stack.contains(&t) {
                let l = w.low[&v].min(w.index[&t]);
                w.low.insert(v, l);
            }
        }
        if w.low[&v] == w.index[&v] {
            let mut scc = Vec::new();
            while let Some(t) = w.stack.pop() {
                w.on_stack.remove(&t);
                scc.push(w.g.files[t].file.clone());
                if t == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                w.out.push(scc);
            }
        }
    }
    let mut w = Walk {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    let starts: Vec<usize> = g.edges.keys().copied().collect();
    for v in starts {
        if !w.index.contains_key(&v) {
            visit(&mut w, v);
        }
    }
    w.out.sort();
    w.out
}

#[test]
fn the_engine_names_nothing_above_it() {
    let g = engine_graph();
    assert!(
        g.files
            .iter()
            .any(|f| f.file == "proxy/upstream/connect.rs"),
        "the scan found the engine's files"
    );
    assert!(
        g.escapes.is_empty(),
        "modules under proxy/ may use only crate::{{{}}}; found: {:#?}",
        ENGINE_MAY_USE.join(", "),
        g.escapes
    );
}

#[test]
fn the_engine_has_no_long_import_cycle() {
    let g = engine_graph();
    let cycles = cycles(&g);
    for c in &cycles {
        println!("cycle of {}: {}", c.len(), c.join(" "));
    }
    let longest = cycles.iter().map(Vec::len).max().unwrap_or(0);
    assert!(
        longest <= MAX_CYCLE,
        "an import cycle of {longest} files inside proxy/ (at most {MAX_CYCLE}): {cycles:#?}"
    );
}

#[test]
fn the_scan_sees_what_it_must_refuse() {
    let module = module_of(Path::new("proxy/upstream/connect.rs"));
    let found = paths(
        "use super::{UpstreamError, sender::Sender};\nuse crate::intercept::{local, peers};\nfn f() { super::super::super::intercept::x(); }",
    );
    let abs: Vec<Module> = found.iter().filter_map(|p| absolute(&module, p)).collect();
    let named = |m: &[&str]| abs.iter().any(|a| a == m);
    assert!(named(&["proxy", "upstream", "sender", "Sender"]));
    assert!(named(&["intercept", "local"]) && named(&["intercept", "peers"]));
    assert!(named(&["intercept", "x"]), "{abs:?}");
}
