//! Data flows one way: every top-level module of the library may use only the modules
//! below it. This reads the sources and fails on a `crate::` path that points up or
//! sideways, which is how an import cycle would start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom to top. Modules on one line are peers and must not use each other.
const LAYERS: &[&[&str]] = &[
    &["host", "time", "text", "flags", "memory"],
    &["kernel"],
    &["sample", "finding"],
    &["collect"],
    &["store"],
    &["diagnose"],
    &["metrics", "report"],
    &["http"],
    &["signals"],
    &["config"],
    &["agent"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to: `kernel` for `kernel/psi.rs`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The production part of a file: test modules (which may look from above) are cut.
fn production_code(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Every top-level module named after `crate::` in the code, with its line number;
/// `use crate::{a, b::c}` counts for `a` and `b`.
fn references(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push((n + 1, name));
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push((n + 1, name));
            }
        }
    }
    out
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent/src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.sort();
    let mut wrong: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        seen.insert(module.clone(), ());
        let Some(own) = rank(&module) else {
            wrong.push(format!(
                "{module}: a new top-level module; place it in LAYERS in tests/layers.rs"
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, used) in references(production_code(&text)) {
            if used == module {
                continue;
            }
            let Some(theirs) = rank(&used) else {
                wrong.push(format!(
                    "{}:{line}: crate::{used} is unknown",
                    file.display()
                ));
                continue;
            };
            if theirs >= own {
                wrong.push(format!(
                    "{}:{line}: {module} uses crate::{used}, which is {} it",
                    file.display(),
                    if theirs == own { "beside" } else { "above" }
                ));
            }
        }
    }
    assert!(
        seen.len() >= LAYERS.iter().map(|l| l.len()).sum::<usize>(),
        "a module in LAYERS no longer exists: {seen:?}"
    );
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_reference_scanner_reads_grouped_and_plain_paths() {
    let refs =
        references("use crate::{kernel::x, host};\nlet a = crate::store::Store; // crate::agent\n");
    let names: Vec<&str> = refs.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["kernel", "host", "store"]);
}
