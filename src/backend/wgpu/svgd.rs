//! Host side of `shaders/svgd.wgsl`. The RBF bandwidth's median heuristic runs here on the
//! host, over the K×K distances downloaded from the device (K is small).
//!
//! - `pairwise_sqdist` is two dispatches: `sqdist_partial` (an invocation per 4×4 block of
//!   pairs and lane of a D-chunk: a row of partial sums per lane) and `sqdist_finalize` (the
//!   rows summed into the symmetric K×K matrix with a zero diagonal).
//! - `svgd_direction` is one dispatch: an invocation per 8 rows × 4 columns of φ (4 rows × 8
//!   columns for K ≤ 4).
//!
//! Neither heavy kernel uses workgroup memory or a barrier (see the shader's header for why).

use super::kernels::{Kernel, Params, Step};
use super::{bind, storage, tensor, WgpuBackend, WgpuStorage};
use crate::error::Result;
use crate::tensor::Tensor;

const THREADS: usize = 256;
/// About this many `sqdist_partial` invocations: enough to fill a large GPU, while the
/// partial sums stay a few words per invocation (small next to θ).
const TARGET_INVOCATIONS: usize = 1 << 16;
/// At least this many columns per `sqdist_partial` lane (where D allows), so that the
/// partial sums stay small next to the work.
const MIN_COLS: usize = 8;
/// Rows of φ per `svgd_direction` row group, and row groups per workgroup at most (a row
/// block of 64 rows); columns per invocation.
const DIR_ROWS: usize = 8;
const DIR_MAX_GROUPS_LOG: u32 = 3;
const DIR_COLS: usize = 4;

/// The geometry of one `pairwise_sqdist`.
struct SqdistPlan {
    k: usize,
    d: usize,
    pairs: usize,
    /// 4×4 pair blocks (a ≤ b over ⌈K/4⌉ row quads).
    blocks: usize,
    /// log2 of the block slots of a workgroup; its lanes are 256 >> slots_log.
    slots_log: u32,
    block_tiles: usize,
    chunk: usize,
    nchunks: usize,
}

impl SqdistPlan {
    fn new(k: usize, d: usize) -> SqdistPlan {
        let pairs = k * k.saturating_sub(1) / 2;
        let nb = k.div_ceil(4);
        let blocks = (nb * (nb + 1) / 2).max(1);
        let slots_log = blocks.next_power_of_two().trailing_zeros().min(3);
        let lanes = THREADS >> slots_log;
        let block_tiles = blocks.div_ceil(1 << slots_log);
        // Chunks: as many as keep MIN_COLS columns per lane, and no more than the target
        // number of invocations needs.
        let by_cols = d.div_ceil(MIN_COLS * lanes);
        let by_target = TARGET_INVOCATIONS.div_ceil(block_tiles * THREADS);
        let want = by_cols.min(by_target).max(1);
        let chunk = d.div_ceil(want).div_ceil(lanes).max(1) * lanes;
        SqdistPlan {
            k,
            d,
            pairs,
            blocks,
            slots_log,
            block_tiles,
            chunk,
            nchunks: d.div_ceil(chunk).max(1),
        }
    }

    /// Rows of partial sums: one per lane of each chunk.
    fn rows(&self) -> usize {
        self.nchunks * (THREADS >> self.slots_log)
    }
}

/// The two dispatches of `pairwise_sqdist` (`partial` holds `rows · pairs` words).
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
            params: Params::named()
                .set_u("k", p.k)
                .set_u("d", p.d)
                .set_u("blocks", p.blocks)
                .set_u("slots_log", p.slots_log as usize)
                .set_u("block_tiles", p.block_tiles)
                .set_u("chunk", p.chunk)
                .set_u("nchunks", p.nchunks)
                .set_u("pairs", p.pairs),
            bindings: vec![bind(theta), bind(partial)],
            groups: (p.block_tiles * p.nchunks) as u64,
        });
    }
    // One workgroup per 32 pairs, at least enough invocations for the K diagonal zeros.
    steps.push(Step {
        kernel: Kernel::SqdistFinalize,
        params: Params::named()
            .set_u("k", p.k)
            .set_u("pairs", p.pairs)
            .set_u("rows", p.rows()),
        bindings: vec![bind(partial), bind(out)],
        groups: p.pairs.div_ceil(32).max(p.k.div_ceil(THREADS)) as u64,
    });
    steps
}

fn alloc_partial(be: &WgpuBackend, plan: &SqdistPlan) -> Result<WgpuStorage> {
    be.alloc(plan.pairs * plan.rows())
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
            crate::backend::median_bandwidth(&be.read(&sq)?, k)
        }
    };
    steps.push(Step {
        kernel: Kernel::RbfFromSqdist,
        params: Params::named().set_u("n", k * k).set_f("bandwidth", h),
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
    // 2^glog row groups of 8 rows, each of 256 >> glog lanes of 4 columns: the fewest groups
    // that cover K (K ≤ 64), else 8 groups and ⌈K / 64⌉ row blocks.
    let glog = k
        .div_ceil(DIR_ROWS)
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .min(DIR_MAX_GROUPS_LOG) as usize;
    let rblocks = k.div_ceil(DIR_ROWS << glog);
    // 4 columns per lane, 8 for K ≤ 4 (one quad of rows, two quads of columns).
    let cols = if k <= 4 { 2 * DIR_COLS } else { DIR_COLS };
    let tiles = d.div_ceil(cols * (THREADS >> glog));
    let step = Step {
        kernel: Kernel::SvgdDirection,
        params: Params::named()
            .set_u("k", k)
            .set_u("d", d)
            .set_f("inv_k", 1.0 / k as f32)
            .set_f("c", 2.0 / bandwidth)
            .set_u("glog", glog)
            .set_u("rblocks", rblocks)
            .set_u("tiles", tiles),
        bindings: vec![bind(th), bind(sc), bind(kn), bind(&phi)],
        groups: (rblocks * tiles) as u64,
    };
    be.run(op, &[step])?;
    tensor(&[k, d], phi)
}
