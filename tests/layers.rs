//! The source tree's layering (docs/design.md, "The layers"): every file
//! imports only files below it, so `src/` has no import circle, and each
//! folder uses only the folders its `mod.rs` says it may.
//!
//! The imports are read from the source text: every `crate::` path outside
//! a comment, `use` lines and paths written in code alike, resolved to the
//! file that defines it. `lib.rs` is the front door, which re-exports
//! everything: no file imports through it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Each folder under `src/`, and the folders and shared root files it may
/// import besides the leaves (`LEAVES`), which any file may. A root file
/// may import any folder; what it imports is checked for circles only.
const MAY_USE: &[(&str, &[&str])] = &[
    ("net", &[]),
    ("stream", &["net"]),
    (
        "pool",
        &["net", "stream", "config.rs", "stats.rs", "reject.rs"],
    ),
    (
        "handler",
        &["pool", "net", "stream", "config.rs", "stats.rs"],
    ),
    ("turn", &["pool", "net", "stream", "config.rs", "stats.rs"]),
];

/// The root files at the bottom, which import no folder.
const LEAVES: &[&str] = &["addr.rs", "error.rs", "sync.rs", "time.rs"];

/// The files below `src/`, each with the files it imports.
fn import_graph() -> BTreeMap<PathBuf, Vec<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap().to_path_buf();
        if relative == Path::new("lib.rs") {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        let mut imports: Vec<PathBuf> = crate_paths(&text)
            .iter()
            .map(|path| resolve(&src, path))
            .filter(|target| target != &relative)
            .collect();
        imports.sort();
        imports.dedup();
        graph.insert(relative, imports);
    }
    graph
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// Every `crate::a::b` path in code (comments skipped), as its segments;
/// `use crate::{a::X, b::Y}` gives one path per item. The unit tests at
/// the bottom of a file (`#[cfg(test)] mod tests`) are left out: setting
/// up a test may take any layer.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(tests) => &text[..tests],
        None => text,
    };
    for line in code.lines() {
        let code = match line.find("//") {
            Some(comment) => &line[..comment],
            None => line,
        };
        let mut rest = code;
        while let Some(start) = rest.find("crate::") {
            let after = &rest[start + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    paths.push(segments(item.trim()));
                }
                rest = &group[end..];
            } else {
                paths.push(segments(after));
                rest = after;
            }
        }
    }
    paths.retain(|path| !path.is_empty());
    paths
}

fn segments(path: &str) -> Vec<String> {
    let end = path
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(path.len());
    path[..end]
        .split("::")
        .filter(|segment| !segment.is_empty())
        .map(str::to_string)
        .collect()
}

/// The file a path's item is defined in: the deepest module file its
/// segments name.
fn resolve(src: &Path, segments: &[String]) -> PathBuf {
    let mut dir = PathBuf::new();
    let mut file = PathBuf::from("lib.rs");
    for segment in segments {
        let as_file = dir.join(format!("{segment}.rs"));
        let as_folder = dir.join(segment).join("mod.rs");
        if src.join(&as_file).is_file() {
            file = as_file;
        } else if src.join(&as_folder).is_file() {
            file = as_folder;
        } else {
            break;
        }
        dir = dir.join(segment);
    }
    file
}

/// A circle of imports, if there is one.
fn find_circle(graph: &BTreeMap<PathBuf, Vec<PathBuf>>) -> Option<Vec<PathBuf>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        file: &PathBuf,
        graph: &BTreeMap<PathBuf, Vec<PathBuf>>,
        marks: &mut BTreeMap<PathBuf, Mark>,
        path: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        marks.insert(file.clone(), Mark::OnPath);
        path.push(file.clone());
        for next in graph.get(file).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let start = path.iter().position(|f| f == next).unwrap();
                    let mut circle = path[start..].to_vec();
                    circle.push(next.clone());
                    return Some(circle);
                }
                Mark::New => {
                    if let Some(circle) = visit(next, graph, marks, path) {
                        return Some(circle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(file.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for file in graph.keys() {
        if marks.get(file).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(circle) = visit(file, graph, &mut marks, &mut Vec::new()) {
                return Some(circle);
            }
        }
    }
    None
}

fn show(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(" -> ")
}

#[test]
fn the_graph_is_read() {
    // A parser that finds nothing would pass every other test here.
    let graph = import_graph();
    let imports = |file: &str| &graph[Path::new(file)];
    assert!(imports("server.rs").contains(&PathBuf::from("pool/acceptor.rs")));
    assert!(imports("handler/connection.rs").contains(&PathBuf::from("stream/wait.rs")));
    assert!(graph.len() > 20, "{} files", graph.len());
}

#[test]
fn a_circle_is_found() {
    let edge = |from: &str, to: &str| (PathBuf::from(from), vec![PathBuf::from(to)]);
    let circle: BTreeMap<_, _> = [
        edge("a.rs", "b.rs"),
        edge("b.rs", "c.rs"),
        edge("c.rs", "a.rs"),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        show(&find_circle(&circle).unwrap()),
        "a.rs -> b.rs -> c.rs -> a.rs"
    );
    let line: BTreeMap<_, _> = [edge("a.rs", "b.rs"), edge("b.rs", "c.rs")]
        .into_iter()
        .collect();
    assert_eq!(find_circle(&line), None);
}

#[test]
fn no_file_imports_a_file_that_imports_it() {
    let graph = import_graph();
    if let Some(circle) = find_circle(&graph) {
        panic!("import circle: {}", show(&circle));
    }
}

#[test]
fn the_leaves_import_no_folder() {
    let graph = import_graph();
    for leaf in LEAVES {
        for import in &graph[Path::new(leaf)] {
            assert!(
                LEAVES.contains(&import.to_str().unwrap()),
                "{leaf} imports {}",
                import.display()
            );
        }
    }
}

#[test]
fn no_file_imports_through_the_front_door() {
    let graph = import_graph();
    let through: Vec<String> = graph
        .iter()
        .filter(|(_, imports)| imports.contains(&PathBuf::from("lib.rs")))
        .map(|(file, _)| file.display().to_string())
        .collect();
    assert!(
        through.is_empty(),
        "these name an item by its re-export in lib.rs, not by the file that defines it: {}",
        through.join(", ")
    );
}

#[test]
fn each_folder_uses_only_what_its_map_allows() {
    let graph = import_graph();
    let mut wrong = Vec::new();
    for (file, imports) in &graph {
        let Some(folder) = file
            .parent()
            .and_then(|dir| dir.to_str())
            .filter(|d| !d.is_empty())
        else {
            continue;
        };
        let allowed = MAY_USE
            .iter()
            .find(|(name, _)| *name == folder)
            .unwrap_or_else(|| panic!("folder {folder} is missing from MAY_USE"))
            .1;
        for import in imports {
            let top = import.iter().next().unwrap().to_str().unwrap();
            if top != folder && !allowed.contains(&top) && !LEAVES.contains(&top) {
                wrong.push(format!("{} imports {}", file.display(), import.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports across layers:\n{}",
        wrong.join("\n")
    );
}
