//! Every shader in `shaders/` validates under both WGSL compilers on the machine: `naga`
//! (wgpu's) and `tint` (Chrome's WebGPU). A missing validator is skipped with a notice,
//! unless `BELLA_REQUIRE` (comma list) names `wgpu`: then it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shader families DESIGN.md asks for; each must exist.
const FAMILIES: [&str; 7] = [
    "lora",
    "matmul",
    "svgd",
    "optim",
    "activation",
    "softmax",
    "cast",
];

/// Files beyond the families, each with the family whose PTX file names its entries:
/// `matmul_f16.wgsl` is apart from `matmul.wgsl` only because `enable f16;` makes a whole
/// module need the device feature.
const VARIANTS: [(&str, &str); 1] = [("matmul_f16", "matmul")];

fn required() -> bool {
    std::env::var("BELLA_REQUIRE")
        .map(|v| v.split(',').any(|s| s.trim() == "wgpu"))
        .unwrap_or(false)
}

fn shaders() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    files.sort();
    for f in FAMILIES.iter().chain(VARIANTS.iter().map(|(v, _)| v)) {
        assert!(
            files.iter().any(|p| p.file_stem().is_some_and(|s| s == *f)),
            "shaders/{f}.wgsl is missing"
        );
    }
    files
}

/// The validator's path: `$BELLA_<NAME>`, then `/usr/local/bin/<name>`, then `PATH`.
fn find(name: &str) -> Option<PathBuf> {
    let env = format!("BELLA_{}", name.to_uppercase());
    let candidates = std::env::var_os(&env)
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/local/bin").join(name)])
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
    candidates.into_iter().find(|c| c.is_file())
}

fn validate_with(name: &str, args: &[&str]) {
    let Some(tool) = find(name) else {
        if required() {
            panic!("BELLA_REQUIRE names wgpu but the `{name}` validator was not found");
        }
        eprintln!("notice: `{name}` not found; skipping its WGSL validation");
        return;
    };
    let mut failures = Vec::new();
    for shader in shaders() {
        let out = Command::new(&tool)
            .args(args)
            .arg(&shader)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
        if !out.status.success() {
            failures.push(format!(
                "{} rejects {}:\n{}{}",
                name,
                shader.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shaders_validate_under_naga() {
    validate_with("naga", &[]);
}

#[test]
fn shaders_validate_under_tint() {
    // Translating back to WGSL runs tint's full resolver and validator.
    validate_with("tint", &["--format", "wgsl", "--output-name", "/dev/null"]);
}

/// The validators must reject a broken shader, or the tests above prove nothing.
#[test]
fn validators_reject_a_broken_shader() {
    let bad = std::env::temp_dir().join(format!("bella_bad_{}.wgsl", std::process::id()));
    std::fs::write(
        &bad,
        "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }\n",
    )
    .expect("writing a temporary shader");
    for (name, args) in [
        ("naga", vec![]),
        (
            "tint",
            vec!["--format", "wgsl", "--output-name", "/dev/null"],
        ),
    ] {
        if let Some(tool) = find(name) {
            let status = Command::new(&tool)
                .args(&args)
                .arg(&bad)
                .output()
                .expect("running the validator")
                .status;
            assert!(!status.success(), "`{name}` accepted a broken shader");
        }
    }
    let _ = std::fs::remove_file(&bad);
}

/// `matmul_f16.wgsl` validates because of its `enable f16;`: without the directive both
/// validators must reject it (they check the extension, not merely accept `f16`).
#[test]
fn f16_module_needs_its_enable_directive() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders/matmul_f16.wgsl");
    let text = std::fs::read_to_string(&path).expect("reading shaders/matmul_f16.wgsl");
    assert!(
        text.starts_with("enable f16;\n"),
        "matmul_f16.wgsl must begin with `enable f16;`"
    );
    let bare = std::env::temp_dir().join(format!("bella_no_enable_{}.wgsl", std::process::id()));
    std::fs::write(&bare, text.replacen("enable f16;\n", "", 1))
        .expect("writing a temporary shader");
    for (name, args) in [
        ("naga", vec![]),
        (
            "tint",
            vec!["--format", "wgsl", "--output-name", "/dev/null"],
        ),
    ] {
        if let Some(tool) = find(name) {
            let status = Command::new(&tool)
                .args(&args)
                .arg(&bare)
                .output()
                .expect("running the validator")
                .status;
            assert!(
                !status.success(),
                "`{name}` accepted f16 without `enable f16;`"
            );
        }
    }
    let _ = std::fs::remove_file(&bare);
}

/// Names after `marker` (`@compute` … `fn NAME(` in WGSL, `.entry NAME(` in PTX) in `text`.
fn entries(text: &str, wgsl: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut after_compute = false;
    for line in text.lines() {
        let l = line.trim_start();
        if wgsl {
            if l.starts_with("@compute") {
                after_compute = true;
            }
            if after_compute {
                if let Some(rest) = l.split("fn ").nth(1).filter(|_| l.contains("fn ")) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.push(name);
                    after_compute = false;
                }
            }
        } else if let Some(rest) = l.strip_prefix(".visible .entry ") {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

/// One name per thing: each WGSL entry of a family is named as the PTX entry of the same
/// family file, except the entries that have no PTX counterpart, listed here with why.
#[test]
fn wgsl_entries_carry_the_ptx_names() {
    // WGSL-only: the PTX `lora_forward` is one entry with modes and its `dx` runs on
    // `gemm_tiled`; the WGSL splits them (and a 128-tile variant of each). The 16-bit GEMMs
    // `gemm_tiled_bf16` / `gemm_tiled_f16` (and the narrow `gemm_narrow_splitk_bf16` /
    // `_f16`) read packed halves on the CUDA cores, and
    // `gemm_tiled_f16_native` (matmul_f16.wgsl) reads `array<f16>` where the device has
    // SHADER_F16; PTX's 16-bit GEMM is `gemm_mma_*`, on the tensor cores, a different kernel.
    // Likewise `lora_forward_bf16` / `lora_forward_f16` (and `_128`) against PTX's
    // `lora_forward_mma_*`.
    const WGSL_ONLY: [&str; 12] = [
        "lora_dx",
        "lora_forward_128",
        "lora_dx_128",
        "gemm_tiled_bf16",
        "gemm_tiled_f16",
        "gemm_tiled_f16_native",
        "gemm_narrow_splitk_bf16",
        "gemm_narrow_splitk_f16",
        "lora_forward_bf16",
        "lora_forward_f16",
        "lora_forward_bf16_128",
        "lora_forward_f16_128",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = FAMILIES.iter().map(|f| (*f, *f)).chain(VARIANTS);
    for (file, f) in files {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let wgsl = entries(&read(root.join(format!("shaders/{file}.wgsl"))), true);
        let ptx = entries(&read(root.join(format!("kernels/{f}.ptx"))), false);
        assert!(
            !wgsl.is_empty() && !ptx.is_empty(),
            "{file}: no entries found"
        );
        for e in &wgsl {
            assert!(
                ptx.contains(e) || WGSL_ONLY.contains(&e.as_str()),
                "shaders/{file}.wgsl entry `{e}` is not an entry of kernels/{f}.ptx ({ptx:?})"
            );
        }
    }
}

/// Every file under `shaders/` is a family or a listed variant, so that none escapes the
/// naming check above.
#[test]
fn every_shader_file_is_checked_for_names() {
    for p in shaders() {
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            FAMILIES.contains(&stem.as_str()) || VARIANTS.iter().any(|(v, _)| *v == stem),
            "shaders/{stem}.wgsl is neither a family nor a listed variant"
        );
    }
}
