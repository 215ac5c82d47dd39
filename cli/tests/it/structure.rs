//! The shape of the code: no module of a crate imports, directly or through others, a module
//! that imports it back. Data flows one way (framing → parse → audit/activity → batch → store
//! → query; rules → engine → alert store → API), and a cycle is where that stops being true.
//!
//! The check reads every crate's sources and draws an edge from a module to each module it
//! names by path (`crate::store::…`, `super::fold::…`), leaving out test modules and a module's
//! own ancestors (a child using its parent's items is how Rust modules are built). Any strongly
//! connected set of two or more modules is a cycle and fails the test with its members.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &["ingest", "detect", "api", "cli", "datasets"];

/// Module path (`kafka::consumer`; the crate root is "") → source text without tests.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel: PathBuf = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            out.insert(parts.join("::"), text);
        }
    }
    out
}

/// Paths following `prefix` in `text`: `crate::a::b::C` gives `["a", "b", "C"]`, and a
/// grouped import `crate::{a::X, b::{c, d}}` gives one path per leaf.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        use_tree(&text[i + prefix.len()..], &[], &mut out);
    }
    out
}

/// One use tree at the start of `rest` (a path, maybe ending in a `{…}` group), appended to
/// `base`, into `out`.
fn use_tree(rest: &str, base: &[String], out: &mut Vec<Vec<String>>) {
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let mut path: Vec<String> = base.to_vec();
    path.extend(
        rest[..end]
            .split("::")
            .filter(|s| !s.is_empty() && *s != "self")
            .map(str::to_owned),
    );
    if (end == 0 || rest[..end].ends_with("::")) && rest[end..].starts_with('{') {
        let body = &rest[end + 1..];
        let (mut depth, mut from) = (0usize, 0usize);
        for (j, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    use_tree(body[from..j].trim_start(), &path, out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    use_tree(body[from..j].trim_start(), &path, out);
                    from = j + 1;
                }
                _ => {}
            }
        }
    } else if !path.is_empty() {
        out.push(path);
    }
}

fn graph(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let names: BTreeSet<&str> = mods.keys().map(String::as_str).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in mods {
        let edges = g.entry(m.clone()).or_default();
        let is_ancestor =
            |cand: &str| cand.is_empty() || m == cand || m.starts_with(&format!("{cand}::"));
        let mut add = |base: Vec<&str>, parts: &[String]| {
            for k in (1..=parts.len()).rev() {
                let cand: Vec<&str> = base
                    .iter()
                    .copied()
                    .chain(parts[..k].iter().map(String::as_str))
                    .collect();
                let cand = cand.join("::");
                if names.contains(cand.as_str()) {
                    if !is_ancestor(&cand) {
                        edges.insert(cand);
                    }
                    return;
                }
            }
        };
        for parts in paths_after(text, "crate::") {
            add(Vec::new(), &parts);
        }
        let parent: Vec<&str> = {
            let mut p: Vec<&str> = m.split("::").filter(|s| !s.is_empty()).collect();
            p.pop();
            p
        };
        for parts in paths_after(text, "super::") {
            add(parent.clone(), &parts);
        }
        // A module naming its own children (`self::child::…`, `pub use child::…`, a bare
        // `child::f()`): the re-exports a cycle can run through.
        let own: Vec<&str> = m.split("::").filter(|s| !s.is_empty()).collect();
        let children: BTreeSet<&str> = names
            .iter()
            .filter_map(|n| {
                let rest = if m.is_empty() {
                    Some(*n)
                } else {
                    n.strip_prefix(m.as_str())?.strip_prefix("::")
                };
                rest.filter(|r| !r.is_empty() && !r.contains("::"))
            })
            .collect();
        for child in children {
            for parts in paths_after(text, &format!("{child}::")) {
                let mut p = vec![child.to_owned()];
                p.extend(parts);
                add(own.clone(), &p);
            }
        }
    }
    g
}

/// Strongly connected sets of two or more modules (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct S<'g> {
        g: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut S<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for w in &s.g[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = S {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_module_imports_itself_through_others() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for krate in CRATES {
        let mods = modules(&root.join(krate).join("src"));
        assert!(mods.len() > 3, "{krate}: too few modules found");
        for c in cycles(&graph(&mods)) {
            found.push(format!("{krate}: {}", c.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_cycle() {
    let mut mods = BTreeMap::new();
    mods.insert("a".to_owned(), "use crate::b::X;".to_owned());
    mods.insert("b".to_owned(), "fn f() { crate::c::g() }".to_owned());
    mods.insert("c".to_owned(), "use super::a::Y;".to_owned());
    mods.insert(
        "d::e".to_owned(),
        "use super::Z; use crate::d::W;".to_owned(),
    );
    mods.insert("d".to_owned(), "mod e;".to_owned());
    let c = cycles(&graph(&mods));
    assert_eq!(
        c,
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
}

#[test]
fn the_check_sees_through_groups_and_re_exports() {
    let mut mods = BTreeMap::new();
    // files → kafka (grouped import) → kafka::consumer (re-export) → files.
    mods.insert(
        "files".to_owned(),
        "use crate::{audit::A, kafka::{Consumer, Opts}};".to_owned(),
    );
    mods.insert("audit".to_owned(), String::new());
    mods.insert(
        "kafka".to_owned(),
        "mod consumer;\npub use consumer::Consumer;".to_owned(),
    );
    mods.insert(
        "kafka::consumer".to_owned(),
        "use crate::files::parse;".to_owned(),
    );
    assert_eq!(
        cycles(&graph(&mods)),
        vec![vec![
            "files".to_owned(),
            "kafka".to_owned(),
            "kafka::consumer".to_owned()
        ]]
    );
    let mut g = graph(&mods);
    assert!(g["files"].contains("audit"), "{g:?}");
    g.get_mut("kafka::consumer").unwrap().clear();
    assert!(cycles(&g).is_empty());
}
