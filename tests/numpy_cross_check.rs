//! `bella op` against the independent float64 NumPy reference (tests/numpy/), per backend.
//!
//! cpu always runs; wgpu, ptx-sim and cuda run when they answer a probe, and must run when
//! `BELLA_REQUIRE` names them. Without python3 + numpy + safetensors the tests print a notice
//! and skip, unless `BELLA_REQUIRE` contains `numpy`. `BELLA_NUMPY_SEED` fixes the seed.

use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/numpy/check_ops.py");

fn required(what: &str) -> bool {
    std::env::var("BELLA_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|s| s.trim() == what)
}

fn script(backend: &str, extra: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(bella::testing::python());
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(SCRIPT)
        .args(["--bella", env!("CARGO_BIN_EXE_bella"), "--backend", backend])
        .args(extra);
    if let Ok(seed) = std::env::var("BELLA_NUMPY_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let o = cmd.output().expect("running check_ops.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn cross_check(backend: &str, extra: &[&str]) {
    if !bella::testing::python_with("numpy, safetensors", "numpy", "the NumPy cross-check") {
        return;
    }
    if backend != "cpu" {
        let (ok, text) = script(backend, &["--probe"]);
        if !ok {
            assert!(
                !required(backend),
                "BELLA_REQUIRE has {backend}, but it does not run:\n{text}"
            );
            println!(
                "notice: skipping the NumPy cross-check on {backend}: {}",
                text.trim()
            );
            return;
        }
    }
    let (ok, text) = script(backend, extra);
    println!("{text}");
    assert!(
        ok,
        "bella op --backend {backend} disagrees with the NumPy reference:\n{text}"
    );
}

/// The reference checks itself: hand-computed cases, loops, finite differences.
#[test]
fn numpy_reference_self_test() {
    if !bella::testing::python_with("numpy, safetensors", "numpy", "the NumPy cross-check") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/numpy/reference.py");
    let o = Command::new(bella::testing::python())
        .arg(script)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("running reference.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "reference.py self-test failed:\n{text}");
}

#[test]
fn numpy_cpu() {
    cross_check("cpu", &[]);
}

#[test]
fn numpy_wgpu() {
    cross_check("wgpu", &[]);
}

#[test]
fn numpy_ptx_sim() {
    cross_check("ptx-sim", &["--small"]);
}

#[test]
fn numpy_cuda() {
    cross_check("cuda", &[]);
}
