//! The workspace's module graph has no cycle: within each crate (every library and binary
//! of the workspace), the top-level modules' `crate::` (and, from a top-level module,
//! `super::`) references form a DAG. Crates themselves cannot form a cycle (Cargo refuses).
//! A cycle makes two concerns one in all but name; this test names the modules in it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A crate's root file (lib.rs, main.rs) and the directory its modules live in.
struct CrateRoot {
    root_file: PathBuf,
    dir: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every lib.rs / main.rs of the workspace's packages (not under target/).
fn crate_roots() -> Vec<CrateRoot> {
    let mut files = Vec::new();
    for top in ["arch", "boot", "devices", "vmm"] {
        rust_files(&workspace().join(top), &mut files);
    }
    files
        .into_iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "target"))
        .filter(|f| {
            let name = f.file_name().unwrap();
            let parent = f.parent().unwrap();
            (name == "lib.rs" && parent.ends_with("src"))
                || (name == "main.rs" && parent.parent().is_some_and(|p| p.ends_with("bin")))
        })
        .map(|root_file| CrateRoot {
            dir: root_file.parent().unwrap().into(),
            root_file,
        })
        .collect()
}

/// `mod name;` / `pub mod name;` declared in a crate's root file.
fn top_modules(root_file: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(root_file).unwrap();
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or(l.strip_prefix("pub "))
                .unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

/// Names that follow `prefix` in `text`: `prefix name` and `prefix{a, b::c}`.
fn referenced(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices(prefix) {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &text[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        } else {
            names.insert(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    names
}

/// Top-level module -> the top-level modules it refers to.
fn module_graph(krate: &CrateRoot) -> BTreeMap<String, BTreeSet<String>> {
    let tops = top_modules(&krate.root_file);
    let mut files = Vec::new();
    rust_files(&krate.dir, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&krate.dir).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if !tops.contains(&module) {
            continue; // the root file itself, or another crate's files (bin/ under src/)
        }
        let text = fs::read_to_string(&file).unwrap();
        let mut refs = referenced(&text, "crate::");
        // From a top-level module's own file, `super::` is the crate root.
        let is_top_file = rel.components().count() == 1
            || rel.ends_with("mod.rs") && rel.components().count() == 2;
        if is_top_file {
            refs.extend(referenced(&text, "super::"));
        }
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(
            refs.into_iter()
                .filter(|r| tops.contains(r) && *r != module),
        );
    }
    graph
}

/// A cycle in `graph`, if any, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_module_cycle() {
    let roots = crate_roots();
    assert!(roots.len() >= 5, "found only {} crates", roots.len());
    for krate in &roots {
        let graph = module_graph(krate);
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "{}: modules form a cycle: {}",
                krate.root_file.display(),
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    let cycle = find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap();
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    let refs = referenced(
        "use crate::{config::X, host};\nlet y = crate::vm::run();",
        "crate::",
    );
    let want: BTreeSet<String> = ["config", "host", "vm"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(refs, want);
}
