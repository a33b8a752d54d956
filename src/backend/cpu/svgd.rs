//! CPU reference for `pairwise_sqdist`, `rbf_kernel` and `svgd_direction` (DESIGN.md 4–6).
//!
//! Both passes over the `[K, D]` particle matrix go column block by column block: a block
//! of all K rows (K × 2048 f32, 128 KiB at K = 16) stays in L2 while every pair, or the
//! small K×K product, runs over it, so θ and the scores are read from memory once instead
//! of once per pair. Blocks run in parallel.

use super::gemm;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Columns per block (see the module docs).
const BLOCK_COLS: usize = 2048;
/// Squared differences summed in f32 per lane before each f64 add: 8 lanes × 8 terms keeps
/// the f32 partial sums within a few ulps of the exact value.
const F32_RUN: usize = 64;

/// `d_ij = ‖θ_i − θ_j‖²`, accumulating squared differences (no `‖θ‖²` expansion, which
/// cancels badly for nearby particles): short runs in f32, their sums in f64.
pub fn pairwise_sqdist(theta: &[f32], k: usize, d: usize) -> Vec<f32> {
    let blocks = d.div_ceil(BLOCK_COLS);
    let sums = (0..blocks)
        .into_par_iter()
        .fold(
            || vec![0.0f64; k * k],
            |mut acc, b| {
                let c0 = b * BLOCK_COLS;
                let w = BLOCK_COLS.min(d - c0);
                let row = |i: usize| &theta[i * d + c0..i * d + c0 + w];
                for i in 0..k {
                    for j in i + 1..k {
                        acc[i * k + j] += sq_diff_sum(row(i), row(j));
                    }
                }
                acc
            },
        )
        .reduce(
            || vec![0.0f64; k * k],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let mut out = vec![0.0f32; k * k];
    for i in 0..k {
        for j in i + 1..k {
            let v = sums[i * k + j] as f32;
            out[i * k + j] = v;
            out[j * k + i] = v;
        }
    }
    out
}

/// `Σ (a − b)²`: AVX2 where the CPU has it (same operations, so the same result), else SSE2.
fn sq_diff_sum(a: &[f32], b: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { sq_diff_sum_avx2(a, b) };
    }
    sq_diff_sum_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sq_diff_sum_avx2(a: &[f32], b: &[f32]) -> f64 {
    sq_diff_sum_portable(a, b)
}

/// Eight independent lanes, so the compiler vectorises without reassociating: squares
/// summed in f32 over runs of `F32_RUN` (fixed-size arrays, no bounds checks), each run
/// added into f64 lanes, one horizontal sum at the end; the ragged tail in f64.
#[inline(always)]
fn sq_diff_sum_portable(a: &[f32], b: &[f32]) -> f64 {
    let mut total = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(F32_RUN), b.chunks_exact(F32_RUN));
    let tail: f64 = (ca.remainder().iter().zip(cb.remainder()))
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    for (ra, rb) in ca.zip(cb) {
        let (ra, rb): (&[f32; F32_RUN], &[f32; F32_RUN]) =
            (ra.try_into().unwrap(), rb.try_into().unwrap());
        let mut lanes = [0.0f32; 8];
        for c in 0..F32_RUN / 8 {
            for l in 0..8 {
                let t = ra[c * 8 + l] - rb[c * 8 + l];
                lanes[l] += t * t;
            }
        }
        for l in 0..8 {
            total[l] += lanes[l] as f64;
        }
    }
    total.iter().sum::<f64>() + tail
}

pub fn rbf_from_sqdist(sqdist: &[f32], k: usize, bandwidth: Option<f32>) -> (Vec<f32>, f32) {
    let h = bandwidth.unwrap_or_else(|| crate::ops::median_bandwidth(sqdist, k));
    let kern = sqdist.iter().map(|&d| (-d / h).exp()).collect();
    (kern, h)
}

/// `φ_i = (1/K) Σ_j k_ji (score_j + (2/h)(θ_i − θ_j))`, as one small GEMM per column block
/// plus a row scaling: with `U = (1/K) S − (2/(hK)) Θ`,
/// `φ = Kᵀ U + (2/(hK)) diag(Σ_j k_ji) Θ`.
pub fn direction(
    theta: &[f32],
    score: &[f32],
    kern: &[f32],
    k: usize,
    d: usize,
    h: f32,
) -> Vec<f32> {
    let mut phi = output_buffer(k * d);
    let inv_k = 1.0 / k as f32;
    let rep = 2.0 / (h * k as f32);
    let col_sum: Vec<f32> = (0..k)
        .map(|i| (0..k).map(|j| kern[j * k + i]).sum())
        .collect();
    // Transposed kernel: kt[i][j] = k_ji.
    let kt: Vec<f32> = (0..k * k).map(|t| kern[(t % k) * k + t / k]).collect();
    // blocks[c][i]: row i of φ, columns of block c (disjoint slices, so blocks run in
    // parallel); together they cover every element of φ exactly once.
    let mut blocks: Vec<Vec<&mut [MaybeUninit<f32>]>> = (0..d.div_ceil(BLOCK_COLS))
        .map(|_| Vec::with_capacity(k))
        .collect();
    for row in phi.spare_capacity_mut()[..k * d].chunks_mut(d.max(1)) {
        for (c, part) in row.chunks_mut(BLOCK_COLS).enumerate() {
            blocks[c].push(part);
        }
    }
    blocks.into_par_iter().enumerate().for_each_init(
        || (vec![0.0f32; k * BLOCK_COLS], vec![0.0f32; k * BLOCK_COLS]),
        |(u, prod), (c, mut rows)| {
            let c0 = c * BLOCK_COLS;
            let w = BLOCK_COLS.min(d - c0);
            for i in 0..k {
                let (s, t) = (&score[i * d + c0..][..w], &theta[i * d + c0..][..w]);
                for ((u, &s), &t) in u[i * w..(i + 1) * w].iter_mut().zip(s).zip(t) {
                    *u = inv_k * s - rep * t;
                }
            }
            gemm(
                k,
                w,
                k,
                1.0,
                &kt,
                false,
                &u[..k * w],
                false,
                0.0,
                &mut prod[..k * w],
            );
            for (i, out) in rows.iter_mut().enumerate() {
                let f = rep * col_sum[i];
                let t = &theta[i * d + c0..][..w];
                for ((o, &p), &t) in out.iter_mut().zip(&prod[i * w..(i + 1) * w]).zip(t) {
                    o.write(p + f * t);
                }
            }
        },
    );
    // SAFETY: the blocks above wrote all k·d elements.
    unsafe { phi.set_len(k * d) };
    phi
}

/// An empty vector with room for `n` f32 that the caller will write in full. Big ones ask
/// Linux for transparent huge pages before the first touch: on this project's machines,
/// faulting in a fresh 64 MiB output page by 4 KiB page took longer than the whole SVGD
/// direction pass (about 90 ms against 16 ms with 2 MiB pages).
fn output_buffer(n: usize) -> Vec<f32> {
    let v: Vec<f32> = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        const MADV_HUGEPAGE: i32 = 14;
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        let (start, bytes) = (v.as_ptr() as usize, n * std::mem::size_of::<f32>());
        let aligned = start.next_multiple_of(HUGE);
        if bytes >= 4 * HUGE && aligned < start + bytes {
            let len = (start + bytes - aligned) / HUGE * HUGE;
            // SAFETY: advice only, on whole pages inside this vector's own allocation; a
            // refusal (no THP) leaves ordinary pages, so the result is ignored.
            unsafe { madvise(aligned as *mut std::ffi::c_void, len, MADV_HUGEPAGE) };
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rel_err;

    /// Sizes past one column block with a ragged tail, against naive f64 sums.
    #[test]
    fn blocked_passes_match_naive_f64() {
        let (k, d) = (5, 2 * BLOCK_COLS + 77);
        let mut rng = crate::rng::Rng::new(3);
        let theta = rng.normal_vec(k * d);
        let score = rng.normal_vec(k * d);
        let at = |v: &[f32], i: usize, c: usize| v[i * d + c] as f64;
        let want_sq: Vec<f32> = (0..k * k)
            .map(|t| {
                (0..d)
                    .map(|c| (at(&theta, t / k, c) - at(&theta, t % k, c)).powi(2))
                    .sum::<f64>() as f32
            })
            .collect();
        let sq = pairwise_sqdist(&theta, k, d);
        assert!(
            rel_err(&sq, &want_sq) < 1e-6,
            "sqdist: {}",
            rel_err(&sq, &want_sq)
        );

        let (kern, h) = rbf_from_sqdist(&sq, k, None);
        let kf = |j: usize, i: usize| kern[j * k + i] as f64;
        let want_phi: Vec<f32> = (0..k * d)
            .map(|t| {
                let (i, c) = (t / d, t % d);
                let sum: f64 = (0..k)
                    .map(|j| {
                        kf(j, i)
                            * (at(&score, j, c)
                                + 2.0 / h as f64 * (at(&theta, i, c) - at(&theta, j, c)))
                    })
                    .sum();
                (sum / k as f64) as f32
            })
            .collect();
        let phi = direction(&theta, &score, &kern, k, d, h);
        assert!(
            rel_err(&phi, &want_phi) < 1e-5,
            "direction: {}",
            rel_err(&phi, &want_phi)
        );
    }
}
