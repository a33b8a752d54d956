//! `pairwise_sqdist`, `rbf_kernel`, `svgd_direction` (kernels/svgd.ptx). The median of the
//! K(K-1)/2 distances is taken on the host: the [K, K] matrix is tiny and the bandwidth is
//! returned to the host anyway.

use super::driver::{Driver, Param};
use super::modules::{grid_1d, u32_of, BLOCK, SVGD};
use super::{ptr, PtxBackend};
use crate::error::Result;
use crate::tensor::Tensor;

/// Chunks of D are multiples of this (the vector path of `sqdist_partial` steps 1024).
const CHUNK_QUANTUM: usize = 1024;

pub fn pairwise_sqdist<D: Driver>(
    be: &PtxBackend<D>,
    theta: &Tensor,
    k: usize,
    d: usize,
) -> Result<Tensor> {
    let th = be.buf(theta)?;
    let out = be.storage(k * k)?;
    let pairs = k * k.saturating_sub(1) / 2;
    // Enough (pair, chunk) units to give every SM a couple of CTAs even for few pairs.
    let want = (2 * be.props().sm_count.max(1) as usize).div_ceil(pairs.max(1));
    let chunk = d.div_ceil(want.max(1)).div_ceil(CHUNK_QUANTUM).max(1) * CHUNK_QUANTUM;
    let nchunks = d.div_ceil(chunk).max(1);
    let partial = be.storage(pairs * nchunks)?;
    let kn = "sqdist_partial";
    u32_of(kn, "units", pairs * nchunks)?;
    if pairs > 0 {
        be.launch(
            SVGD,
            kn,
            grid_1d(be.props(), pairs * nchunks, 8),
            &[
                ptr(&partial.buf),
                ptr(th),
                Param::U32(u32_of(kn, "K", k)?),
                Param::U32(u32_of(kn, "D", d)?),
                Param::U32(u32_of(kn, "chunk", chunk)?),
                Param::U32(nchunks as u32),
            ],
        )?;
    }
    be.launch(
        SVGD,
        "sqdist_finalize",
        grid_1d(be.props(), (k * k).div_ceil(BLOCK as usize), 16),
        &[
            ptr(&out.buf),
            ptr(&partial.buf),
            Param::U32(k as u32),
            Param::U32(nchunks as u32),
        ],
    )?;
    be.tensor(&[k, k], out)
}

pub fn rbf_kernel<D: Driver>(
    be: &PtxBackend<D>,
    theta: &Tensor,
    k: usize,
    d: usize,
    bandwidth: Option<f32>,
) -> Result<(Tensor, f32)> {
    use crate::backend::Backend;
    let sq = pairwise_sqdist(be, theta, k, d)?;
    let h = match bandwidth {
        Some(h) => h,
        None => crate::ops::median_bandwidth(&be.download(&sq)?, k),
    };
    let kern = be.storage(k * k)?;
    be.launch(
        SVGD,
        "rbf_from_sqdist",
        grid_1d(be.props(), (k * k).div_ceil(BLOCK as usize), 16),
        &[
            ptr(&kern.buf),
            ptr(be.buf(&sq)?),
            Param::U32(u32_of("rbf_from_sqdist", "K*K", k * k)?),
            Param::F32(h),
        ],
    )?;
    Ok((be.tensor(&[k, k], kern)?, h))
}

pub fn direction<D: Driver>(
    be: &PtxBackend<D>,
    theta: &Tensor,
    score: &Tensor,
    kernel: &Tensor,
    k: usize,
    d: usize,
    bandwidth: f32,
) -> Result<Tensor> {
    let kn = "svgd_direction";
    let n = u32_of(kn, "K*D", k * d)?;
    let phi = be.storage(k * d)?;
    if n > 0 {
        be.launch(
            SVGD,
            kn,
            grid_1d(be.props(), (k * d).div_ceil(BLOCK as usize), 16),
            &[
                ptr(&phi.buf),
                ptr(be.buf(theta)?),
                ptr(be.buf(score)?),
                ptr(be.buf(kernel)?),
                Param::U32(k as u32),
                Param::U32(d as u32),
                Param::F32(2.0 / bandwidth),
                Param::F32(1.0 / k as f32),
            ],
        )?;
    }
    be.tensor(&[k, d], phi)
}
