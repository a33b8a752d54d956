//! Runs every code block of README.md's "Your own model and data" section, in order, in a
//! fresh directory, with this build's `bella` first on `PATH`: the walkthrough a new user
//! follows stays true. Needs python3 with torch, peft, numpy and safetensors; without them it
//! prints a notice and skips, unless `BELLA_REQUIRE` contains `peft`.

use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../README.md");
const SECTION: &str = "## Your own model and data";

/// The section's fenced blocks as (language, code).
fn blocks() -> Vec<(String, String)> {
    let start = README.find(SECTION).expect("README has the section");
    let body = &README[start + SECTION.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut out = Vec::new();
    let mut lines = body.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            if lang.is_empty() {
                continue;
            }
            let code: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.trim_start().starts_with("```"))
                .collect();
            out.push((lang.to_string(), code.join("\n") + "\n"));
        }
    }
    out
}

#[test]
fn the_section_has_the_steps() {
    let langs: Vec<String> = blocks().into_iter().map(|(l, _)| l).collect();
    assert_eq!(langs, ["python", "sh", "sh", "sh", "python", "sh"]);
}

#[test]
fn readme_walkthrough_runs() {
    if !bella::testing::python_with(
        "torch, peft, numpy, safetensors",
        "peft",
        "the README walkthrough",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bella-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_bella"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (n, (lang, code)) in blocks().into_iter().enumerate() {
        let file = dir.join(format!(
            "step{n}.{}",
            if lang == "python" { "py" } else { "sh" }
        ));
        std::fs::write(&file, &code).unwrap();
        let mut cmd = if lang == "python" {
            Command::new(bella::testing::python())
        } else {
            let mut c = Command::new("bash");
            c.args(["-euo", "pipefail"]);
            c
        };
        let o = cmd
            .arg(&file)
            .current_dir(&dir)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "README block {n} ({lang}) failed:\n{code}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(dir
        .join("adapters/particle_3/adapter_model.safetensors")
        .exists());
    assert!(dir.join("run2/bella_svgd.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
