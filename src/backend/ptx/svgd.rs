//! `pairwise_sqdist`, `rbf_kernel`, `svgd_direction` (kernels/svgd.ptx). The median of the
//! K(K-1)/2 distances is taken on the host: the [K, K] matrix is tiny and the bandwidth is
//! returned to the host anyway.
//!
//! Kernel choice: for K <= [`TILED_MAX_K`] the tiled kernels (`sqdist_partial`,
//! `svgd_direction`) read theta (and score) once; above it the per-pair / per-output kernels
//! (`sqdist_partial_pairs`, `svgd_direction_per_output`), which re-read rows, take over.

use super::driver::{Driver, Param};
use super::modules::{grid_1d, u32_of, BLOCK, SVGD};
use super::optim::{adamw_params, ADAMW_PARAMS};
use super::{ptr, PtxBackend};
use crate::backend::AdamW;
use crate::error::Result;
use crate::tensor::Tensor;

/// The largest K of the tiled kernels: `sqdist_partial` stages 64 rows (16 blocks of 4 rows,
/// 136 block pairs for its 256 threads), `svgd_direction` stages a 64 × 64 kernel.
pub const TILED_MAX_K: usize = 64;

/// Chunks of D for `sqdist_partial_pairs` are multiples of this (its vector path steps 1024).
const CHUNK_QUANTUM: usize = 1024;
/// Chunks of D for `sqdist_partial` are multiples of its 32-column tile.
const TILE_COLS: usize = 32;

pub fn pairwise_sqdist<D: Driver>(
    be: &PtxBackend<D>,
    theta: &Tensor,
    k: usize,
    d: usize,
) -> Result<Tensor> {
    let th = be.buf(theta)?;
    let out = be.storage(k * k)?;
    let pairs = k * k.saturating_sub(1) / 2;
    let sms = be.props().sm_count.max(1) as usize;
    let tiled = k <= TILED_MAX_K;
    let (chunk, nchunks) = if tiled {
        // About 2 CTAs per SM, each a chunk of D of all K rows.
        let chunk = d.div_ceil(2 * sms).div_ceil(TILE_COLS).max(1) * TILE_COLS;
        (chunk, d.div_ceil(chunk).max(1))
    } else {
        // Enough (pair, chunk) units to give every SM a couple of CTAs even for few pairs.
        let want = (2 * sms).div_ceil(pairs.max(1));
        let chunk = d.div_ceil(want.max(1)).div_ceil(CHUNK_QUANTUM).max(1) * CHUNK_QUANTUM;
        (chunk, d.div_ceil(chunk).max(1))
    };
    let partial = be.storage(pairs * nchunks)?;
    let kn = if tiled {
        "sqdist_partial"
    } else {
        "sqdist_partial_pairs"
    };
    u32_of(kn, "units", pairs * nchunks)?;
    if pairs > 0 && tiled {
        // Blocks of 4 rows; each thread a block pair (bi <= bj), the CTA's remaining
        // threads in column groups that split each tile's columns.
        let blocks = k.div_ceil(4);
        let block_pairs = blocks * (blocks + 1) / 2;
        let groups = BLOCK as usize / block_pairs;
        be.launch_named(
            SVGD,
            kn,
            grid_1d(be.props(), nchunks, 2),
            vec![
                ("p_partial", ptr(&partial.buf)),
                ("p_theta", ptr(th)),
                ("p_k", Param::U32(u32_of(kn, "K", k)?)),
                ("p_d", Param::U32(u32_of(kn, "D", d)?)),
                ("p_chunk", Param::U32(u32_of(kn, "chunk", chunk)?)),
                ("p_nchunks", Param::U32(nchunks as u32)),
                ("p_bpairs", Param::U32(block_pairs as u32)),
                ("p_groups", Param::U32(groups as u32)),
            ],
        )?;
    } else if pairs > 0 {
        be.launch_named(
            SVGD,
            kn,
            grid_1d(be.props(), pairs * nchunks, 8),
            vec![
                ("p_partial", ptr(&partial.buf)),
                ("p_theta", ptr(th)),
                ("p_k", Param::U32(u32_of(kn, "K", k)?)),
                ("p_d", Param::U32(u32_of(kn, "D", d)?)),
                ("p_chunk", Param::U32(u32_of(kn, "chunk", chunk)?)),
                ("p_nchunks", Param::U32(nchunks as u32)),
            ],
        )?;
    }
    // sqdist_partial writes partial[ch * pairs + pair], sqdist_partial_pairs partial[pair * nchunks + ch].
    let (pair_stride, ch_stride) = if tiled { (1, pairs) } else { (nchunks, 1) };
    // One CTA per tile of 32 pairs (its 8 warps split the chunks); at least enough threads
    // for the K diagonal zeros.
    let finalize_units = pairs.div_ceil(32).max(k.div_ceil(BLOCK as usize));
    be.launch_named(
        SVGD,
        "sqdist_finalize",
        grid_1d(be.props(), finalize_units, 16),
        vec![
            ("p_out", ptr(&out.buf)),
            ("p_partial", ptr(&partial.buf)),
            ("p_k", Param::U32(k as u32)),
            ("p_nchunks", Param::U32(nchunks as u32)),
            ("p_pair_stride", Param::U32(pair_stride as u32)),
            ("p_ch_stride", Param::U32(ch_stride as u32)),
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
        None => crate::backend::median_bandwidth(&be.download(&sq)?, k),
    };
    let kern = be.storage(k * k)?;
    be.launch_named(
        SVGD,
        "rbf_from_sqdist",
        grid_1d(be.props(), (k * k).div_ceil(BLOCK as usize), 16),
        vec![
            ("p_kern", ptr(&kern.buf)),
            ("p_sqdist", ptr(be.buf(&sq)?)),
            ("p_n", Param::U32(u32_of("rbf_from_sqdist", "K*K", k * k)?)),
            ("p_h", Param::F32(h)),
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
    let tiled = k <= TILED_MAX_K;
    let kn = if tiled {
        "svgd_direction"
    } else {
        "svgd_direction_per_output"
    };
    let n = u32_of(kn, "K*D", k * d)?;
    let phi = be.storage(k * d)?;
    let mut params = vec![
        ("p_phi", ptr(&phi.buf)),
        ("p_theta", ptr(be.buf(theta)?)),
        ("p_score", ptr(be.buf(score)?)),
        ("p_kern", ptr(be.buf(kernel)?)),
        ("p_k", Param::U32(k as u32)),
        ("p_d", Param::U32(d as u32)),
        ("p_c", Param::F32(2.0 / bandwidth)),
        ("p_inv_k", Param::F32(1.0 / k as f32)),
    ];
    if n > 0 && tiled {
        let (glog, tiles) = direction_tiles(k, d);
        params.push(("p_glog", Param::U32(glog)));
        // Not the fused step: what follows p_step is unused (any valid pointer, zeros).
        params.push(("p_step", Param::U32(0)));
        params.extend([
            ("p_m", ptr(&phi.buf)),
            ("p_v", ptr(&phi.buf)),
            ("p_gscale", Param::F32(0.0)),
        ]);
        params.extend(ADAMW_PARAMS.map(|name| (name, Param::F32(0.0))));
        be.launch_named(SVGD, kn, grid_1d(be.props(), tiles, 2), params)?;
    } else if n > 0 {
        be.launch_named(
            SVGD,
            kn,
            grid_1d(be.props(), (k * d).div_ceil(BLOCK as usize), 16),
            params,
        )?;
    }
    be.tensor(&[k, d], phi)
}

/// The tiled `svgd_direction`'s `glog` and its number of column tiles: 8 rows per thread
/// group, glog = log2 of the groups (a power of two), tiles of 512 >> glog columns (the
/// grid: about 2 CTAs per SM, each staging the K x K kernel once).
fn direction_tiles(k: usize, d: usize) -> (u32, usize) {
    let glog = k.div_ceil(8).next_power_of_two().trailing_zeros();
    (glog, d.div_ceil(512 >> glog))
}

/// The AdamW half of a fused SVGD step ([`step`]).
pub struct FusedStep<'a> {
    /// The gradient AdamW takes is `grad_scale · φ`.
    pub grad_scale: f32,
    pub hp: &'a AdamW,
    pub m: &'a mut Tensor,
    pub v: &'a mut Tensor,
}

/// The fused SVGD step (K ≤ [`TILED_MAX_K`]): the tiled `svgd_direction` in step mode, AdamW
/// applied to each element of φ in registers (θ in place, m, v), φ never written.
pub fn step<D: Driver>(
    be: &PtxBackend<D>,
    theta: &mut Tensor,
    score: &Tensor,
    kernel: &Tensor,
    (k, d): (usize, usize),
    bandwidth: f32,
    s: FusedStep,
) -> Result<()> {
    assert!(
        k <= TILED_MAX_K,
        "the fused SVGD step holds K ≤ {TILED_MAX_K}"
    );
    let kn = "svgd_direction";
    if u32_of(kn, "K*D", k * d)? == 0 {
        return Ok(());
    }
    let (glog, tiles) = direction_tiles(k, d);
    let (sc, kb) = (be.buf(score)?, be.buf(kernel)?);
    let (mb, vb) = (be.buf_mut(s.m)?, be.buf_mut(s.v)?);
    let th = be.buf_mut(theta)?;
    let mut params = vec![
        ("p_phi", ptr(th)), // unused in step mode
        ("p_theta", ptr(th)),
        ("p_score", ptr(sc)),
        ("p_kern", ptr(kb)),
        ("p_k", Param::U32(k as u32)),
        ("p_d", Param::U32(d as u32)),
        ("p_c", Param::F32(2.0 / bandwidth)),
        ("p_inv_k", Param::F32(1.0 / k as f32)),
        ("p_glog", Param::U32(glog)),
        ("p_step", Param::U32(1)),
        ("p_m", ptr(mb)),
        ("p_v", ptr(vb)),
        ("p_gscale", Param::F32(s.grad_scale)),
    ];
    params.extend(adamw_params(s.hp));
    be.launch_named(SVGD, kn, grid_1d(be.props(), tiles, 2), params)
}

#[cfg(all(test, feature = "ptx-sim"))]
mod tests {
    use crate::backend::ptx_sim::{open_profiled_with, ProfileOptions};
    use crate::backend::Backend;

    /// Sized for 132 SMs, `sqdist_finalize` sees hundreds of chunks (its 8 warps each step
    /// over many), which the 2-SM simulator of the doctor and cross-backend tests never gives.
    #[test]
    fn sqdist_many_chunks_matches_the_oracle() {
        let (be, _prof) = open_profiled_with(ProfileOptions {
            sm_count: 132,
            max_ctas_per_launch: None,
        })
        .unwrap();
        for (k, d) in [(8usize, 40_000usize), (33, 20_000), (3, 9_000)] {
            let theta: Vec<f32> = (0..k * d)
                .map(|x| ((x as u64 * 2654435761 % 1000) as f32) * 1e-3 - 0.5)
                .collect();
            let t = be.upload(&[k, d], &theta).unwrap();
            let out = be
                .download(&crate::ops::pairwise_sqdist(be.as_ref(), &t).unwrap())
                .unwrap();
            let th64: Vec<f64> = theta.iter().map(|&v| v as f64).collect();
            let want = crate::oracle::pairwise_sqdist(&th64, k, d);
            for (e, (&o, &w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    ((o as f64) - w).abs() <= 1e-4 * w.abs() + 1e-6,
                    "K={k} D={d} entry {e}: {o} vs {w}"
                );
            }
        }
    }

    /// The fused step runs the same f32 operations in the same order as the two ops
    /// (direction, φ scaled, AdamW): the simulator, which executes them as written, gives
    /// the same bits; K = 64 is the fused kernel's largest, K = 80 the two-op fallback.
    #[test]
    fn fused_step_gives_the_bits_of_the_two_ops() {
        use crate::backend::AdamW;
        let be = crate::backend::ptx_sim::open().unwrap();
        let mut rng = crate::rng::Rng::new(5);
        let hp = AdamW {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step: 4,
        };
        for (k, d) in [(1usize, 7usize), (5, 300), (17, 129), (64, 40), (80, 9)] {
            let up = |rng: &mut crate::rng::Rng, lo: f32, hi: f32| {
                be.upload(&[k, d], &rng.uniform_vec(k * d, lo, hi)).unwrap()
            };
            let theta = up(&mut rng, -0.5, 0.5);
            let score = up(&mut rng, -1.0, 1.0);
            let m = up(&mut rng, -0.1, 0.1);
            let v = up(&mut rng, 0.01, 0.1);
            let (kernel, h) = crate::ops::rbf_kernel(be.as_ref(), &theta, None).unwrap();

            let (mut t1, mut m1, mut v1) = (theta.clone(), m.clone(), v.clone());
            crate::ops::svgd_step(
                be.as_ref(),
                &mut t1,
                &score,
                &kernel,
                h,
                -0.25,
                &mut m1,
                &mut v1,
                &hp,
            )
            .unwrap();
            let phi = crate::ops::svgd_direction(be.as_ref(), &theta, &score, &kernel, h).unwrap();
            let g = crate::ops::axpby(be.as_ref(), -0.25, &phi, 0.0, &phi).unwrap();
            let (mut t2, mut m2, mut v2) = (theta.clone(), m.clone(), v.clone());
            crate::ops::adamw_step(be.as_ref(), &mut t2, &g, &mut m2, &mut v2, &hp).unwrap();

            let bits = |t: &crate::tensor::Tensor| -> Vec<u32> {
                be.download(t)
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            };
            assert_eq!(bits(&t1), bits(&t2), "theta, K={k} D={d}");
            assert_eq!(bits(&m1), bits(&m2), "m, K={k} D={d}");
            assert_eq!(bits(&v1), bits(&v2), "v, K={k} D={d}");
            assert_ne!(bits(&t1), bits(&theta), "theta moved, K={k} D={d}");
        }
    }
}
