//! CPU reference for `matmul` (DESIGN.md op 3): batched, with stride-0 broadcasting.

use super::{data, data_mut, gemm};
use crate::backend::MatmulArgs;
use crate::error::Result;
use crate::tensor::Tensor;

pub fn matmul(args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
    let (a_all, b_all) = (data(args.a.tensor)?, data(args.b.tensor)?);
    let (m, n, kk) = (args.m, args.n, args.inner);
    let c_all = data_mut(out)?;
    // Batches run one after another; each GEMM splits its rows across threads.
    for bi in 0..args.batch {
        let a0 = args.a.offset + bi * args.a.stride;
        let b0 = args.b.offset + bi * args.b.stride;
        let c0 = args.out.offset + bi * args.out.stride;
        gemm(
            m,
            n,
            kk,
            args.alpha,
            &a_all[a0..a0 + m * kk],
            args.trans_a,
            &b_all[b0..b0 + kk * n],
            args.trans_b,
            0.0,
            &mut c_all[c0..c0 + m * n],
        );
    }
    Ok(())
}
