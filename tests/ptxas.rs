//! Assembles every `kernels/*.ptx` with NVIDIA's offline assembler for sm_80 and sm_90 and
//! fails on any error, register spill or local memory. Also keeps `kernels/README.md`'s
//! PTX subset (what the simulator implements) in step with the opcodes the kernels use.
//!
//! ptxas comes from `$PTXAS`, else the PyPI wheel `nvidia-cuda-nvcc-cu12`
//! (`<site-packages>/nvidia/cuda_nvcc/bin/ptxas`), else `PATH`. Without it the assembly
//! test is skipped with a notice, unless `BELLA_REQUIRE` names `ptxas`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels")
}

fn ptx_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kernels_dir())
        .expect("kernels/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ptx"))
        .collect();
    files.sort();
    files
}

fn runs(ptxas: &Path) -> bool {
    Command::new(ptxas)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS") {
        return Some(PathBuf::from(p)).filter(|p| runs(p));
    }
    let wheel = Command::new("python3")
        .args([
            "-c",
            "import nvidia.cuda_nvcc as m, os; print(os.path.join(list(m.__path__)[0], 'bin', 'ptxas'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(p) = wheel.filter(|p| runs(p)) {
        return Some(p);
    }
    Some(PathBuf::from("ptxas")).filter(|p| runs(p))
}

fn required() -> bool {
    std::env::var("BELLA_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|s| s.trim() == "ptxas")
}

#[test]
fn every_kernel_assembles_for_sm80_and_sm90_without_spills() {
    let Some(ptxas) = find_ptxas() else {
        assert!(
            !required(),
            "BELLA_REQUIRE names ptxas but no ptxas was found"
        );
        println!("notice: ptxas not found (pip install nvidia-cuda-nvcc-cu12); skipping");
        return;
    };
    let files = ptx_files();
    assert!(
        files.len() >= 6,
        "expected the six kernel families, found {files:?}"
    );
    let out = std::env::temp_dir().join(format!("bella-ptxas-{}.cubin", std::process::id()));
    let mut failures = Vec::new();
    for file in &files {
        for arch in ["sm_80", "sm_90"] {
            let o = Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .args([
                    "-v",
                    "--warn-on-spills",
                    "--warn-on-local-memory-usage",
                    "-Werror",
                ])
                .arg(file)
                .arg("-o")
                .arg(&out)
                .output()
                .expect("ptxas runs");
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let name = file.file_name().unwrap().to_string_lossy();
            if !o.status.success() {
                failures.push(format!("{name} {arch}: ptxas failed\n{log}"));
                continue;
            }
            // -v prints one "Function properties" block per kernel; demand no spill bytes
            // and no stack frame (local memory) in every one of them.
            let entries = log.matches("Compiling entry function").count();
            let clean_spills = log
                .matches("0 bytes spill stores, 0 bytes spill loads")
                .count();
            let clean_stack = log.matches("0 bytes stack frame").count();
            if entries == 0 || clean_spills != entries || clean_stack != entries {
                failures.push(format!("{name} {arch}: spills or local memory\n{log}"));
            }
        }
    }
    let _ = std::fs::remove_file(&out);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every kernel the host code launches is an entry of its family's file, and every file
/// targets sm_80 with `.version 7.8`.
#[test]
fn kernel_files_declare_the_launched_entries() {
    let expected: [(&str, &[&str]); 7] = [
        (
            "lora.ptx",
            &[
                "lora_forward",
                "lora_forward_mma_bf16",
                "lora_forward_mma_f16",
            ],
        ),
        (
            "matmul.ptx",
            &["gemm_tiled", "gemm_tiled_128", "gemm_narrow_splitk"],
        ),
        (
            "svgd.ptx",
            &[
                "sqdist_partial",
                "sqdist_finalize",
                "rbf_from_sqdist",
                "svgd_direction",
            ],
        ),
        ("optim.ptx", &["adamw_step"]),
        (
            "activation.ptx",
            &[
                "relu_forward",
                "relu_backward",
                "gelu_forward",
                "gelu_backward",
                "axpby",
            ],
        ),
        (
            "softmax.ptx",
            &["softmax_xent_rows", "row_mean", "ensemble_stats"],
        ),
        (
            "cast.ptx",
            &[
                "cast_f32_to_bf16",
                "cast_f32_to_f16",
                "cast_bf16_to_f32",
                "cast_f16_to_f32",
            ],
        ),
    ];
    for (file, entries) in expected {
        let src = std::fs::read_to_string(kernels_dir().join(file)).expect("kernel file");
        assert!(src.contains(".version 7.8"), "{file}: .version 7.8");
        assert!(src.contains(".target sm_80"), "{file}: .target sm_80");
        assert!(src.contains(".address_size 64"), "{file}: .address_size 64");
        assert!(src.is_ascii(), "{file}: ptxas rejects non-ASCII text");
        for e in entries {
            assert!(
                src.contains(&format!(".visible .entry {e}(")),
                "{file} lacks the entry {e}"
            );
        }
    }
}

/// Expand `a.{x,y}.b` into `a.x.b`, `a.y.b`.
fn expand_braces(s: &str) -> Vec<String> {
    match (s.find('{'), s.find('}')) {
        (Some(open), Some(close)) if open < close => s[open + 1..close]
            .split(',')
            .flat_map(|alt| expand_braces(&format!("{}{}{}", &s[..open], alt, &s[close + 1..])))
            .collect(),
        _ => vec![s.to_string()],
    }
}

/// The opcodes the kernels use are all in the README's subset list (the simulator's spec).
#[test]
fn readme_subset_lists_every_opcode_used() {
    let readme = std::fs::read_to_string(kernels_dir().join("README.md")).expect("README");
    let start = readme
        .find("## The PTX subset used")
        .expect("subset section");
    let end = readme[start + 1..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + 1 + e);
    let section = &readme[start..end];
    let listed: std::collections::HashSet<String> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| expand_braces(span.split_whitespace().next().unwrap_or("")))
        .collect();
    let mut missing = std::collections::BTreeSet::new();
    for file in ptx_files() {
        let src = std::fs::read_to_string(&file).unwrap();
        for line in src.lines() {
            let code = line.split("//").next().unwrap().trim();
            if code.is_empty() || code.starts_with('.') || code.ends_with(':') {
                continue;
            }
            if matches!(code, "{" | "}" | ")") || code.starts_with(".param") {
                continue;
            }
            // Drop a guard `@%p` / `@!%p`, keep the opcode.
            let mut words = code.split_whitespace();
            let mut op = words.next().unwrap();
            if op.starts_with('@') {
                op = words.next().unwrap_or("");
            }
            let op = op.trim_end_matches(';');
            if !listed.contains(op) {
                missing.insert(format!(
                    "{op} ({})",
                    file.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "opcodes missing from kernels/README.md: {missing:?}"
    );
}
