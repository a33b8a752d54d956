//! [`BackendKind`]: which backend holds a tensor. A leaf module (the tensor layer and the
//! backends both name it; `backend` re-exports it), so `tensor` does not depend on `backend`.

use crate::error::{BellaError, Result};
use std::fmt;
use std::str::FromStr;

/// The four backends of DESIGN.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    /// The CPU reference and fallback (always built).
    Cpu,
    /// WGSL kernels through wgpu (feature `wgpu`): Vulkan, Metal, DX12, or lavapipe.
    Wgpu,
    /// PTX kernels on an NVIDIA GPU through the driver API (feature `cuda`).
    Cuda,
    /// The same PTX and launch code as `Cuda`, run by the CPU simulator (feature `ptx-sim`).
    PtxSim,
}

impl BackendKind {
    /// Every kind, whether built in or not.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Cpu,
        BackendKind::Wgpu,
        BackendKind::Cuda,
        BackendKind::PtxSim,
    ];
    /// The name used on the command line and in reports: `cpu`, `wgpu`, `cuda`, `ptx-sim`
    /// (what [`FromStr`] parses and [`Display`](fmt::Display) prints).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::PtxSim => "ptx-sim",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BellaError;
    fn from_str(s: &str) -> Result<Self> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| BellaError::Unknown {
                what: "backend",
                name: s.to_string(),
            })
    }
}
