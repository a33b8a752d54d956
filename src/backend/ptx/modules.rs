//! The PTX modules (one per kernel family, `kernels/<family>.ptx`) and launch sizing.

use super::driver::{DeviceProps, LaunchConfig};
use crate::cards::{occupancy, SM_LIMITS};
use crate::error::{BellaError, Result};

pub const LORA: &str = "lora";
pub const MATMUL: &str = "matmul";
pub const SVGD: &str = "svgd";
pub const OPTIM: &str = "optim";
pub const ACTIVATION: &str = "activation";
pub const SOFTMAX: &str = "softmax";
pub const CAST: &str = "cast";

/// Every module, loaded once when the backend is created.
pub const MODULES: [(&str, &str); 7] = [
    (LORA, include_str!("../../../kernels/lora.ptx")),
    (MATMUL, include_str!("../../../kernels/matmul.ptx")),
    (SVGD, include_str!("../../../kernels/svgd.ptx")),
    (OPTIM, include_str!("../../../kernels/optim.ptx")),
    (ACTIVATION, include_str!("../../../kernels/activation.ptx")),
    (SOFTMAX, include_str!("../../../kernels/softmax.ptx")),
    (CAST, include_str!("../../../kernels/cast.ptx")),
];

/// Every kernel is written for 256-thread blocks (`.maxntid 256, 1, 1`).
pub const BLOCK: u32 = 256;

/// A 1-D launch of `units` independent work units (tiles, rows, groups of 4 elements):
/// at most one CTA per unit, at most `per_sm` resident-ish CTAs per SM, never past the
/// device's x limit. The kernels loop over the rest (unit += nctaid.x).
pub fn grid_1d(props: &DeviceProps, units: usize, per_sm: u32) -> LaunchConfig {
    let cap = (props.sm_count.max(1) as usize * per_sm as usize)
        .min(props.max_grid[0].max(1) as usize)
        .max(1);
    LaunchConfig {
        grid: [units.clamp(1, cap) as u32, 1, 1],
        block: [BLOCK, 1, 1],
        shared_bytes: 0,
    }
}

/// Resident 256-thread CTAs per SM on both sm_80 and sm_90 (the smaller, at least 1) for a
/// kernel of `regs` registers per thread and `smem` bytes of static shared memory: how many
/// CTAs per SM a grid holds.
pub(crate) fn resident_ctas(regs: u32, smem: u32) -> u32 {
    SM_LIMITS
        .iter()
        .map(|l| occupancy(l, BLOCK, Some(regs), smem).blocks_per_sm)
        .min()
        .unwrap_or(1)
        .max(1)
}

/// A size or offset as the kernels' `.u32` parameter. Tensors are limited to 2^31 elements
/// so that every in-kernel element offset fits 32-bit arithmetic.
pub fn u32_of(kernel: &str, what: &str, v: usize) -> Result<u32> {
    if v > i32::MAX as usize {
        return Err(BellaError::invalid(format!(
            "{kernel}: {what} = {v} exceeds 2^31-1, the limit of the PTX kernels"
        )));
    }
    Ok(v as u32)
}
