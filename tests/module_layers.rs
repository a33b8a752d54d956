//! The crate's layers, checked on the source: lower modules never name higher ones, so the
//! module graph has no cycles. Leaves: `device`, `dtype`, `error`, `host`, `cards`, `rng`; then
//! `tensor`; then `backend`; then `io` (files to host tensors) and `ops`; everything else
//! on top. Only non-test code counts: a file's text from its first `#[cfg(test)]` /
//! `#[cfg(all(test` on is its test module (tests may use any layer), and `tests.rs` files
//! and `tests/` folders are skipped, as are `//` comments.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .is_some_and(|n| n == "tests" || n == "tests.rs")
            {
                continue;
            }
            rust_files(&p, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The non-test, non-comment code of a file.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let end = ["#[cfg(test)]", "#[cfg(all(test"]
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<module>` the layer's code names, outside `allowed`.
fn violations(layer: &[&str], allowed: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for l in layer {
        let dir = root.join(l);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(root.join(format!("{l}.rs")));
        }
    }
    let mut bad = Vec::new();
    for f in files {
        let c = code(&f);
        for (at, _) in c.match_indices("crate::") {
            let name: String = c[at + 7..]
                .chars()
                .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                .collect();
            // The crate root's re-exports (lib.rs) count as their modules.
            let name = match name.as_str() {
                "BellaError" | "Result" => "error".to_string(),
                "Tensor" => "tensor".to_string(),
                "Backend" => "backend".to_string(),
                "BackendKind" => "device".to_string(),
                _ => name,
            };
            if !layer.contains(&name.as_str()) && !allowed.contains(&name.as_str()) {
                bad.push(format!("{} names crate::{name}", f.display()));
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

const LEAVES: &[&str] = &["device", "dtype", "error", "host", "cards", "rng"];

#[test]
fn leaves_name_only_leaves() {
    for leaf in LEAVES {
        let bad = violations(&[leaf], LEAVES);
        assert!(bad.is_empty(), "{bad:#?}");
    }
}

#[test]
fn tensor_names_only_leaves() {
    let bad = violations(&["tensor"], LEAVES);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn backends_do_not_name_the_op_layer_or_above() {
    let allowed = [LEAVES, &["tensor"]].concat();
    let bad = violations(&["backend"], &allowed);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn file_readers_do_not_name_the_op_layer() {
    let bad = violations(&["io"], LEAVES);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn the_check_sees_a_planted_violation() {
    // `ops` names `backend`, so checked as if it were a leaf it must fail.
    assert!(!violations(&["ops"], LEAVES).is_empty());
}
