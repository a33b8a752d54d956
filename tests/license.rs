//! The crate's licence: `Cargo.toml` says `MIT OR Apache-2.0` (an SPDX expression, no
//! `license-file`), and the two texts it names sit at the repository root, each naming its
//! licence, so a packaged crate carries both.

use std::path::Path;

fn root_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_mentions(name: &str, text: &str, phrases: &[&str]) {
    for p in phrases {
        assert!(text.contains(p), "{name} does not contain {p:?}");
    }
}

#[test]
fn manifest_names_both_licenses_by_spdx() {
    let manifest = root_file("Cargo.toml");
    let fields: Vec<&str> = manifest
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("license"))
        .collect();
    assert_eq!(
        fields,
        ["license = \"MIT OR Apache-2.0\""],
        "Cargo.toml: expected only the SPDX `license` field"
    );
}

#[test]
fn mit_text() {
    let text = root_file("LICENSE-MIT");
    assert_mentions(
        "LICENSE-MIT",
        &text,
        &[
            "MIT License",
            "Copyright (c) 2026 the bella developers",
            "Permission is hereby granted, free of charge",
            "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND",
        ],
    );
}

#[test]
fn apache_text() {
    let text = root_file("LICENSE-APACHE");
    assert_mentions(
        "LICENSE-APACHE",
        &text,
        &[
            "Apache License",
            "Version 2.0, January 2004",
            "http://www.apache.org/licenses/",
            "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
            "END OF TERMS AND CONDITIONS",
        ],
    );
    // The whole text, not an excerpt: its nine sections.
    for section in 1..=9 {
        assert!(
            text.contains(&format!("\n   {section}. ")),
            "LICENSE-APACHE: section {section} missing"
        );
    }
}
