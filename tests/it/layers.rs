//! The library's layers, as `src/lib.rs` draws them, held against its imports: every
//! module of `src/` is on exactly one line of the picture, and every `crate::`
//! import of a module names a module on a lower line. A new arrow back up, or a
//! module left out of the picture, fails here with the file and the names.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a source file that cannot be read fails the test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The lines of the `## Layers` picture, top first: the module names of each.
fn layers() -> Vec<Vec<String>> {
    let lib = std::fs::read_to_string(Path::new(SRC).join("lib.rs")).unwrap();
    let picture: Vec<&str> = lib
        .lines()
        .map(|l| l.trim_start_matches("//!").trim_start())
        .skip_while(|l| *l != "## Layers")
        .skip_while(|l| *l != "```text")
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    assert!(!picture.is_empty(), "src/lib.rs has no `## Layers` picture");
    picture
        .iter()
        .map(|line| {
            // The names come before the description, which starts after a wide gap.
            let names = line.split("  ").next().unwrap_or("");
            names
                .split(',')
                .map(|n| n.trim().trim_end_matches('/').to_owned())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .collect()
}

/// Every `.rs` file under `dir`, except unit-test files.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`store` for `src/store/sync.rs`).
fn module_of(path: &Path) -> String {
    let relative = path.strip_prefix(SRC).unwrap();
    let first = relative.components().next().unwrap();
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// The top-level modules a file's code (not its comments, not its inline tests)
/// names as `crate::<module>`.
fn imports(path: &Path, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let code = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or_default();
    let mut named = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                named.insert(name);
            }
        }
        // `use crate::{a, b::C}` names several at once.
        if let Some(group) = line.split("crate::{").nth(1) {
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) {
                    named.insert(name);
                }
            }
        }
    }
    named
}

#[test]
fn every_import_points_down_the_layers_that_lib_rs_draws() {
    let layers = layers();
    let mut line_of = BTreeMap::new();
    for (index, names) in layers.iter().enumerate() {
        for name in names {
            assert!(
                line_of.insert(name.clone(), index).is_none(),
                "`{name}` is on two lines of the picture in src/lib.rs"
            );
        }
    }
    let mut files = Vec::new();
    sources(Path::new(SRC), &mut files);
    // The library's modules; the binary (`main`, `cli`) imports it by name, not
    // through `crate::`, and sits on the top line.
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f))
        .filter(|m| m != "lib")
        .collect();
    for module in &modules {
        assert!(
            line_of.contains_key(module),
            "src/{module} is not in the `## Layers` picture of src/lib.rs"
        );
    }
    let mut wrong = Vec::new();
    for file in &files {
        let from = module_of(file);
        let Some(&from_line) = line_of.get(&from) else {
            continue;
        };
        for to in imports(file, &modules) {
            if to != from && line_of[&to] <= from_line {
                wrong.push(format!(
                    "{} imports `{to}` (line {} of the picture), not below `{from}` (line {})",
                    file.strip_prefix(SRC).unwrap().display(),
                    line_of[&to] + 1,
                    from_line + 1
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that do not point down:\n{}",
        wrong.join("\n")
    );
}
