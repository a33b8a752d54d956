//! Host side of `shaders/svgd.wgsl`. The RBF bandwidth's median heuristic runs here on the
//! host, over the K×K distances downloaded from the device (K is small).
//!
//! - `pairwise_sqdist` is two dispatches: `sqdist_partial` (a workgroup per (panel pair,
//!   D-chunk), every pair's partial sum of the chunk; θ read once for K ≤ 64, once per panel
//!   of 32 rows above) and `sqdist_finalize` (the chunks summed into the symmetric K×K
//!   matrix with a zero diagonal).
//! - `svgd_direction` is one dispatch: a workgroup per (row block, column tile) stages θ and
//!   the scores of the tile (all K rows for K ≤ 64) and writes every φ entry of it once.

use super::kernels::{Kernel, Params, Step};
use super::{bind, storage, tensor, WgpuBackend, WgpuStorage};
use crate::error::Result;
use crate::tensor::Tensor;

const THREADS: usize = 256;
/// Words of `sqdist_partial`'s staged tile (`stage` in the shader: 16 KiB).
const STAGE_WORDS: usize = 4096;
/// Up to this K, `sqdist_partial` has one panel of all rows (≤ 136 4×4 pair blocks for 256
/// invocations) and `svgd_direction` one row block: θ (and the scores) are read once.
const ONE_PANEL_MAX_K: usize = 64;
/// Rows per panel above [`ONE_PANEL_MAX_K`] (two panels staged: 64 rows).
const PANEL_ROWS: usize = 32;
/// About this many `sqdist_partial` workgroups: enough to fill a GPU (a couple per compute
/// unit), few enough that the partial sums stay small next to θ.
const TARGET_UNITS: usize = 256;

/// The geometry of one `pairwise_sqdist`.
struct SqdistPlan {
    k: usize,
    d: usize,
    pairs: usize,
    panel: usize,
    panels: usize,
    width: usize,
    chunk: usize,
    nchunks: usize,
}

impl SqdistPlan {
    fn new(k: usize, d: usize) -> SqdistPlan {
        let pairs = k * k.saturating_sub(1) / 2;
        let (panel, panels) = if k <= ONE_PANEL_MAX_K {
            (k.div_ceil(4).max(1) * 4, 1)
        } else {
            (PANEL_ROWS, k.div_ceil(PANEL_ROWS))
        };
        let staged = if panels == 1 { panel } else { 2 * panel };
        // The widest odd tile that fits: the odd pitch spreads rows over banks.
        let width = (STAGE_WORDS / staged - 1) | 1;
        let units = panels * (panels + 1) / 2;
        let tiles = d.div_ceil(width).max(1);
        let want = TARGET_UNITS.div_ceil(units).clamp(1, tiles);
        let chunk = tiles.div_ceil(want) * width;
        SqdistPlan {
            k,
            d,
            pairs,
            panel,
            panels,
            width,
            chunk,
            nchunks: d.div_ceil(chunk).max(1),
        }
    }

    fn units(&self) -> usize {
        self.panels * (self.panels + 1) / 2 * self.nchunks
    }
}

/// The two dispatches of `pairwise_sqdist` (`partial` holds `pairs · nchunks` words).
fn sqdist_steps<'a>(
    plan: &SqdistPlan,
    theta: &'a WgpuStorage,
    partial: &'a WgpuStorage,
    out: &'a WgpuStorage,
) -> Vec<Step<'a>> {
    let p = plan;
    let mut steps = Vec::with_capacity(2);
    if p.pairs > 0 {
        steps.push(Step {
            kernel: Kernel::SqdistPartial,
            params: Params::default()
                .u(p.k)
                .u(p.d)
                .u(p.panel)
                .u(p.panels)
                .u(p.width)
                .u(p.chunk)
                .u(p.nchunks)
                .u(p.pairs),
            bindings: vec![bind(theta), bind(partial)],
            groups: p.units() as u64,
        });
    }
    // One workgroup per 32 pairs, at least enough invocations for the K diagonal zeros.
    steps.push(Step {
        kernel: Kernel::SqdistFinalize,
        params: Params::default().u(p.k).u(p.pairs).u(p.nchunks),
        bindings: vec![bind(partial), bind(out)],
        groups: p.pairs.div_ceil(32).max(p.k.div_ceil(THREADS)) as u64,
    });
    steps
}

fn alloc_partial(be: &WgpuBackend, plan: &SqdistPlan) -> Result<WgpuStorage> {
    be.alloc(plan.pairs * plan.nchunks)
}

pub fn pairwise_sqdist(be: &WgpuBackend, theta: &Tensor, k: usize, d: usize) -> Result<Tensor> {
    let op = "pairwise_sqdist";
    let th = storage(op, theta)?;
    let plan = SqdistPlan::new(k, d);
    let partial = alloc_partial(be, &plan)?;
    let out = be.alloc(k * k)?;
    be.run(op, &sqdist_steps(&plan, th, &partial, &out))?;
    drop(partial);
    tensor(&[k, k], out)
}

pub fn rbf_kernel(
    be: &WgpuBackend,
    theta: &Tensor,
    k: usize,
    d: usize,
    bandwidth: Option<f32>,
) -> Result<(Tensor, f32)> {
    let op = "rbf_kernel";
    let th = storage(op, theta)?;
    let plan = SqdistPlan::new(k, d);
    let partial = alloc_partial(be, &plan)?;
    let sq = be.alloc(k * k)?;
    let kern = be.alloc(k * k)?;
    let mut steps = sqdist_steps(&plan, th, &partial, &sq);
    let h = match bandwidth {
        Some(h) => h,
        None => {
            be.run(op, &steps)?;
            steps.clear();
            crate::ops::median_bandwidth(&be.read(&sq)?, k)
        }
    };
    steps.push(Step {
        kernel: Kernel::RbfFromSqdist,
        params: Params::default().u(k * k).f(h),
        bindings: vec![bind(&sq), bind(&kern)],
        groups: (k * k).div_ceil(THREADS) as u64,
    });
    be.run(op, &steps)?;
    drop(steps);
    Ok((tensor(&[k, k], kern)?, h))
}

pub fn direction(
    be: &WgpuBackend,
    theta: &Tensor,
    score: &Tensor,
    kernel: &Tensor,
    k: usize,
    d: usize,
    bandwidth: f32,
) -> Result<Tensor> {
    let op = "svgd_direction";
    let th = storage(op, theta)?;
    let sc = storage(op, score)?;
    let kn = storage(op, kernel)?;
    let phi = be.alloc(k * d)?;
    // 2^glog row groups of 8 rows, each of 256 >> glog columns: the fewest groups that
    // cover K (K ≤ 64), else 8 groups and ⌈K / 64⌉ row blocks.
    let glog = if k <= ONE_PANEL_MAX_K {
        k.div_ceil(8).max(1).next_power_of_two().trailing_zeros() as usize
    } else {
        3
    };
    let rblocks = k.div_ceil(8 << glog);
    let tiles = d.div_ceil(THREADS >> glog);
    let step = Step {
        kernel: Kernel::SvgdDirection,
        params: Params::default()
            .u(k)
            .u(d)
            .f(1.0 / k as f32)
            .f(2.0 / bandwidth)
            .u(glog)
            .u(rblocks)
            .u(tiles),
        bindings: vec![bind(th), bind(sc), bind(kn), bind(&phi)],
        groups: (rblocks * tiles) as u64,
    };
    be.run(op, &[step])?;
    tensor(&[k, d], phi)
}
