//! Registers and static shared memory per kernel from NVIDIA's offline assembler (`ptxas -v`),
//! when it is installed. Found as `tests/ptxas.rs` finds it: `$PTXAS`, else the PyPI wheel
//! `nvidia-cuda-nvcc-cu12`, else `PATH`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What ptxas reports for one kernel on one architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KernelInfo {
    /// Registers per thread.
    pub registers: u32,
    /// static shared memory, bytes
    pub smem: u32,
}

fn runs(ptxas: &Path) -> bool {
    Command::new(ptxas)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The ptxas binary, if one runs.
pub fn find() -> Option<PathBuf> {
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

/// Parse `ptxas -v` output: kernel name → registers and static shared memory.
pub fn parse(log: &str) -> HashMap<String, KernelInfo> {
    let mut out = HashMap::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            current = rest.split('\'').next().map(str::to_string);
        } else if let (Some(name), Some(rest)) = (&current, line.split("Used ").nth(1)) {
            let num_before = |unit: &str| -> u32 {
                rest.split(',')
                    .find(|f| f.trim().ends_with(unit))
                    .and_then(|f| f.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            out.insert(
                name.clone(),
                KernelInfo {
                    registers: num_before("registers"),
                    smem: num_before("bytes smem"),
                },
            );
        }
    }
    out
}

/// Per-(module, arch) ptxas results, assembled on first use and kept.
#[derive(Default)]
pub struct Ptxas {
    bin: Option<PathBuf>,
    cache: HashMap<(String, &'static str), HashMap<String, KernelInfo>>,
}

impl Ptxas {
    /// Look for ptxas (`$PTXAS`, the `nvidia-cuda-nvcc-cu12` wheel, `PATH`); nothing is
    /// assembled yet.
    pub fn new() -> Self {
        Ptxas {
            bin: find(),
            cache: HashMap::new(),
        }
    }
    /// Whether ptxas was found.
    pub fn available(&self) -> bool {
        self.bin.is_some()
    }
    /// The kernel's registers and static shared memory on `arch`, assembling
    /// `kernels/<module>.ptx` of the source tree; None when ptxas or the file is missing.
    pub fn info(&mut self, module: &str, kernel: &str, arch: &'static str) -> Option<KernelInfo> {
        let bin = self.bin.clone()?;
        let table = self
            .cache
            .entry((module.to_string(), arch))
            .or_insert_with(|| {
                let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("kernels")
                    .join(format!("{module}.ptx"));
                let out = std::env::temp_dir().join(format!(
                    "bella-profile-{}-{module}-{arch}.cubin",
                    std::process::id()
                ));
                let log = Command::new(&bin)
                    .arg(format!("-arch={arch}"))
                    .arg("-v")
                    .arg(&file)
                    .arg("-o")
                    .arg(&out)
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_default();
                let _ = std::fs::remove_file(&out);
                parse(&log)
            });
        table.get(kernel).copied()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_registers_and_shared_memory() {
        let log = "ptxas info    : Compiling entry function 'a' for 'sm_80'\n\
                   ptxas info    : Function properties for a\n\
                   \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
                   ptxas info    : Used 32 registers, used 1 barriers, 32 bytes smem, 384 bytes cmem[0]\n\
                   ptxas info    : Compiling entry function 'b' for 'sm_80'\n\
                   ptxas info    : Used 16 registers, used 0 barriers, 376 bytes cmem[0]\n";
        let t = super::parse(log);
        assert_eq!(
            t["a"],
            super::KernelInfo {
                registers: 32,
                smem: 32
            }
        );
        assert_eq!(t["b"].registers, 16);
        assert_eq!(t["b"].smem, 0);
    }
}
