//! The module structure ARCHITECTURE.md draws, checked against the code: every `crate::…`,
//! `super::…` and `self::…` path of every module under `src/` (test code left out) is an edge, and
//!
//! - no module may import one in a higher layer of [`LAYERS`] (sideways within a layer is fine);
//! - the modules form no cycle (a folder's `mod.rs` and its own files are one unit: a child using
//!   its parent's types and the parent re-exporting the child is how Rust splits a module);
//! - every module has a layer, so a new file is placed on purpose.
//!
//! One crate plus this test rather than a workspace of crates: at ~14k lines the split would add
//! a `pub` surface between crates and slow cold builds on a Pi, and this test fails in the same
//! places a crate boundary would (`cargo test --test architecture`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module belongs to the layer of the longest entry that is a prefix of its path
/// (`people::numbers` is a value type below `config`, the rest of `people` is domain logic).
const LAYERS: &[(&str, &[&str])] = &[
    // Plain values and helpers: no knowledge of the server.
    (
        "values",
        &[
            "net",
            "clock",
            "secret",
            "private_file",
            "people::numbers",
            "tasks",
        ],
    ),
    ("config", &["config", "host", "metrics"]),
    ("store", &["db"]),
    ("wire", &["wire", "cable::protocol"]),
    // What talks to the outside world or the live connections, below the domain logic.
    (
        "services",
        &["drivers", "hub", "outbox", "service", "discovery"],
    ),
    ("domain", &["auth", "people", "channels"]),
    ("app", &["state"]),
    ("transports", &["http", "cable", "tls"]),
    ("operations", &["admin", "loadtest", "cli"]),
    ("composition", &["server"]),
];

struct Module {
    file: PathBuf,
    /// `a::b` for `src/a/b.rs` and `src/a/b/mod.rs`.
    path: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn modules(dir: &Path, prefix: &[String], out: &mut Vec<Module>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            let mut pre = prefix.to_vec();
            pre.push(name);
            modules(&p, &pre, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let mut segs = prefix.to_vec();
            if name != "mod" {
                segs.push(name.clone());
            }
            if segs.is_empty() || (prefix.is_empty() && (name == "lib" || name == "main")) {
                continue;
            }
            out.push(Module {
                file: p,
                path: segs.join("::"),
            });
        }
    }
}

/// The source without comments and with every string and char literal emptied, so neither can
/// hold a path.
fn strip(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &s[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |k| k + 2);
        } else if b[i] == b'r'
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            && rest[1..].trim_start_matches('#').starts_with('"')
        {
            let hashes = rest[1..].len() - rest[1..].trim_start_matches('#').len();
            let end = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            i += body + rest[body..].find(&end).expect("raw string ends") + end.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && char_literal_len(rest).is_some() {
            i += char_literal_len(rest).unwrap();
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Length of the char literal `rest` starts with (`'a'`, `'\n'`, `'\u{1F600}'`), or `None` for
/// a lifetime.
fn char_literal_len(rest: &str) -> Option<usize> {
    let mut chars = rest.char_indices().skip(1);
    let (_, c) = chars.next()?;
    if c == '\\' {
        let close = rest[2..].find('\'')?;
        return Some(close + 3);
    }
    let (k, q) = chars.next()?;
    (q == '\'').then_some(k + 1)
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        out.push(format!("{prefix}{tree}"));
        return;
    };
    let head = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').expect("balanced use tree")];
    let mut depth = 0;
    let mut start = 0;
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&inner[start..k], &format!("{prefix}{head}"), out);
                start = k + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].trim().is_empty() {
        expand(&inner[start..], &format!("{prefix}{head}"), out);
    }
}

/// The paths a module's code names, test code left out.
fn paths(source: &str) -> Vec<String> {
    let mut s = strip(source);
    // Unit tests sit in one `#[cfg(test)] mod tests { … }` at the end of a file.
    if let Some(k) = find_inline_test_module(&s) {
        s.truncate(k);
    }
    let mut found = Vec::new();
    let mut rest = String::new();
    let mut tail = s.as_str();
    while let Some(k) = find_word(tail, "use") {
        rest.push_str(&tail[..k]);
        let end = tail[k..].find(';').expect("use ends with ;") + k;
        expand(&tail[k + 3..end], "", &mut found);
        tail = &tail[end + 1..];
    }
    rest.push_str(tail);
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(k) = rest[from..].find(root) {
            let at = from + k;
            let before = rest[..at].chars().next_back();
            let end = rest[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(rest.len(), |e| at + e);
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                found.push(rest[at..end].trim_end_matches(':').to_string());
            }
            from = end.max(at + 1);
        }
    }
    found
}

fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = s[from..].find(word) {
        let at = from + k;
        let before = s[..at].chars().next_back();
        let after = s[at + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !ident(before) && !ident(after) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn find_inline_test_module(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = s[from..].find("#[cfg(test)]") {
        let at = from + k;
        let after = s[at + 12..].trim_start();
        let after = after.strip_prefix("pub ").unwrap_or(after).trim_start();
        if let Some(m) = after.strip_prefix("mod ") {
            let m = m.trim_start();
            let name_end = m
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(m.len());
            if m[name_end..].trim_start().starts_with('{') {
                return Some(at);
            }
        }
        from = at + 12;
    }
    None
}

/// Modules declared `#[cfg(test)] mod name;` (a test in a file of its own).
fn test_modules(modules: &[Module]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in modules {
        let s = strip(&std::fs::read_to_string(&m.file).unwrap());
        let mut from = 0;
        while let Some(k) = s[from..].find("#[cfg(test)]") {
            let at = from + k + 12;
            let after = s[at..].trim_start();
            let after = after.strip_prefix("pub ").unwrap_or(after).trim_start();
            if let Some(rest) = after.strip_prefix("mod ") {
                let name: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if rest.trim_start()[name.len()..]
                    .trim_start()
                    .starts_with(';')
                {
                    out.insert(if m.path.is_empty() {
                        name
                    } else {
                        format!("{}::{name}", m.path)
                    });
                }
            }
            from = at;
        }
    }
    out
}

/// The module a path names: the longest prefix that is a module, or `None` outside the crate.
fn resolve(from: &str, path: &str, known: &BTreeSet<String>) -> Option<String> {
    let segs: Vec<&str> = path
        .split("::")
        .map(|s| s.split(" as ").next().unwrap().trim())
        .collect();
    let mut base: Vec<&str> = from.split("::").collect();
    let mut rest = &segs[..];
    match *rest.first()? {
        "crate" => {
            base.clear();
            rest = &rest[1..];
        }
        "self" => rest = &rest[1..],
        "super" => {
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let full: Vec<&str> = base
        .into_iter()
        .chain(
            rest.iter()
                .copied()
                .filter(|s| !matches!(*s, "self" | "*" | "")),
        )
        .collect();
    (1..=full.len())
        .rev()
        .map(|k| full[..k].join("::"))
        .find(|p| known.contains(p))
}

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, usize, &'static str)> = None;
    for (rank, (name, members)) in LAYERS.iter().enumerate() {
        for m in *members {
            let hit = module == *m || module.starts_with(&format!("{m}::"));
            if hit && best.is_none_or(|(len, _, _)| m.len() > len) {
                best = Some((m.len(), rank, name));
            }
        }
    }
    best.map(|(_, rank, name)| (rank, name))
}

fn related(a: &str, b: &str) -> bool {
    a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

/// Module → the modules it imports (itself left out).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut all = Vec::new();
    modules(&src(), &[], &mut all);
    let tests = test_modules(&all);
    let known: BTreeSet<String> = all.iter().map(|m| m.path.clone()).collect();
    let mut g = BTreeMap::new();
    for m in all.iter().filter(|m| !tests.contains(&m.path)) {
        let source = std::fs::read_to_string(&m.file).unwrap();
        let targets: BTreeSet<String> = paths(&source)
            .iter()
            .filter_map(|p| resolve(&m.path, p, &known))
            .filter(|t| *t != m.path && !tests.contains(t))
            .collect();
        g.insert(m.path.clone(), targets);
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in &g[v] {
            let w = w.as_str();
            if related(v, w) {
                continue;
            }
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn every_module_has_a_layer() {
    let missing: Vec<_> = graph()
        .into_keys()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a layer in tests/architecture.rs LAYERS: {missing:?}"
    );
}

#[test]
fn no_import_goes_up_a_layer() {
    let mut upward = Vec::new();
    for (from, targets) in graph() {
        let Some((lf, nf)) = layer_of(&from) else {
            continue;
        };
        for to in targets {
            if let Some((lt, nt)) = layer_of(&to) {
                if lt > lf {
                    upward.push(format!("{from} ({nf}) -> {to} ({nt})"));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layers:\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn no_module_cycle() {
    let g = graph();
    let found = cycles(&g);
    let described: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    g[a].iter()
                        .filter(|b| c.contains(b) && !related(a, b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            format!("{} modules: {}", c.len(), edges.join(", "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles:\n  {}",
        described.join("\n  ")
    );
}

/// The checker itself: it must see the edges that matter, or the tests above prove nothing.
#[test]
fn the_checker_sees_imports() {
    let known: BTreeSet<String> = ["a", "a::b", "a::c", "d", "nope", "nope2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let src = r#"
        use super::c::{X, Y as Z};
        use crate::{d::{self, E}, a::b};
        // crate::nope in a comment
        fn f() { let s = "crate::nope"; crate::d::g(); let c = '"'; }
        #[cfg(test)]
        mod tests { use crate::nope2; }
    "#;
    let mut got: BTreeSet<String> = paths(src)
        .iter()
        .filter_map(|p| resolve("a::b", p, &known))
        .collect();
    got.remove("a::b");
    let want: BTreeSet<String> = ["a::c", "d"].iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want);
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("x", vec!["y"]),
        ("y", vec!["x"]),
        ("p", vec!["p::q"]),
        ("p::q", vec!["p"]),
    ]
    .into_iter()
    .map(|(a, bs)| (a.to_string(), bs.iter().map(|b| b.to_string()).collect()))
    .collect();
    assert_eq!(cycles(&g), vec![vec!["x".to_string(), "y".to_string()]]);
}
