//! CPU reference for `pairwise_sqdist`, `rbf_kernel` and `svgd_direction` (DESIGN.md 4–6).
//!
//! Both passes over the `[K, D]` particle matrix go column block by column block: a block
//! of all K rows (K × 2048 f32, 128 KiB at K = 16) is read from memory once while every
//! pair, or the small K×K product, runs over it. Blocks run in parallel. Within a block,
//! sub-blocks of [`SUB_COLS`] columns of all K rows are copied next to each other into L1
//! scratch first: the rows sit a 4 KiB multiple apart in the arena, so in place they would
//! share cache sets and evict each other.
//!
//! Both inner loops are written for the FP units, over 16-lane vectors ([`F32x16`]: one
//! AVX-512 register, two AVX2 ones, or a portable array, picked at run time; the tests check
//! every path this CPU has against f64 sums):
//! - distances: one row against up to 4 others per step (5 loads for 8 vector operations),
//!   squared differences summed in f32 for [`RUN`] columns (8 terms per lane), then
//!   widened into f64 lanes;
//! - direction: 16 multiply-adds per output at K = 16, register tiles of 2 output rows ×
//!   4 vectors (2 on AVX2, which has half the registers).
//!
//! φ's output buffer comes from `output_buffer`, which reuses the last big buffer a CPU
//! tensor freed: the SVGD step frees φ after AdamW, so the next step skips the page faults.

use super::output_buffer;
use super::simd::{lanes, madd, simd_dispatch, F32x16, LANES};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Columns per parallel block (see the module docs).
const BLOCK_COLS: usize = 2048;
/// Columns per sub-block: θ (and U) for K = 16 rows (16 KiB each) stay in L1 while every
/// pair or output row passes over them.
const SUB_COLS: usize = 256;
/// Squared differences summed in f32 per lane before each f64 add: 8 terms per lane keeps
/// the f32 partial sums within a few ulps of the exact value.
const RUN: usize = 8 * LANES;
/// Other rows per step of the distance loop.
const PAIR_ROWS: usize = 4;
/// Output rows per register tile in `direction`.
const TILE_ROWS: usize = 2;

/// `d_ij = ‖θ_i − θ_j‖²`, accumulating squared differences (no `‖θ‖²` expansion, which
/// cancels badly for nearby particles): short runs in f32, their sums in f64.
pub fn pairwise_sqdist(theta: &[f32], k: usize, d: usize) -> Vec<f32> {
    pairwise_sqdist_on(super::simd::isa(), theta, k, d)
}

fn pairwise_sqdist_on(isa: super::simd::Isa, theta: &[f32], k: usize, d: usize) -> Vec<f32> {
    let blocks = d.div_ceil(BLOCK_COLS);
    let sums = (0..blocks)
        .into_par_iter()
        .fold(
            || (vec![0.0f64; k * k], vec![0.0f32; k * SUB_COLS]),
            |(mut acc, mut scratch), b| {
                let c0 = b * BLOCK_COLS;
                let w = BLOCK_COLS.min(d - c0);
                sqdist_block_with(isa, theta, k, d, c0, w, &mut scratch, &mut acc);
                (acc, scratch)
            },
        )
        .map(|(acc, _)| acc)
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

simd_dispatch!(fn sqdist_block, sqdist_block_with => sqdist_block_generic(
    theta: &[f32], k: usize, d: usize, c0: usize, w: usize, scratch: &mut [f32], acc: &mut [f64]
));

/// Adds `Σ_c (θ_i[c] − θ_j[c])²` over columns `c0..c0 + w` into `acc[i·k + j]`, `i < j`.
#[inline(always)]
fn sqdist_block_generic<V: F32x16>(
    theta: &[f32],
    k: usize,
    d: usize,
    c0: usize,
    w: usize,
    scratch: &mut [f32],
    acc: &mut [f64],
) {
    for s in (0..w).step_by(SUB_COLS) {
        let sw = SUB_COLS.min(w - s);
        let col = c0 + s;
        let th = &mut scratch[..k * sw];
        for j in 0..k {
            th[j * sw..(j + 1) * sw].copy_from_slice(&theta[j * d + col..][..sw]);
        }
        let th = &*th;
        let nv = sw / LANES * LANES;
        for i in 0..k {
            let mut j = i + 1;
            while j < k {
                let n = PAIR_ROWS.min(k - j);
                match n {
                    1 => pair_rows::<1, V>(th, sw, nv, i, j, k, acc),
                    2 => pair_rows::<2, V>(th, sw, nv, i, j, k, acc),
                    3 => pair_rows::<3, V>(th, sw, nv, i, j, k, acc),
                    _ => pair_rows::<PAIR_ROWS, V>(th, sw, nv, i, j, k, acc),
                }
                j += n;
            }
        }
        // Columns past the last whole vector (only at the end of a row): in f64.
        for c in nv..sw {
            for i in 0..k {
                for j in i + 1..k {
                    let t = th[i * sw + c] as f64 - th[j * sw + c] as f64;
                    acc[i * k + j] += t * t;
                }
            }
        }
    }
}

/// Pairs `(i, j0..j0 + J)` over the whole vectors (`nv` columns) of one sub-block.
#[inline(always)]
fn pair_rows<const J: usize, V: F32x16>(
    th: &[f32],
    sw: usize,
    nv: usize,
    i: usize,
    j0: usize,
    k: usize,
    acc: &mut [f64],
) {
    let ri = &th[i * sw..][..nv];
    let rj: [&[f32]; J] = std::array::from_fn(|t| &th[(j0 + t) * sw..][..nv]);
    let mut wide = [[0.0f64; LANES]; J];
    for c0 in (0..nv).step_by(RUN) {
        let mut sum = [V::zero(); J];
        for c in (c0..nv.min(c0 + RUN)).step_by(LANES) {
            let x = V::load(lanes(ri, c));
            for t in 0..J {
                let dt = x.sub(V::load(lanes(rj[t], c)));
                sum[t] = dt.madd(dt, sum[t]);
            }
        }
        for t in 0..J {
            sum[t].add_to_f64(&mut wide[t]);
        }
    }
    for t in 0..J {
        acc[i * k + j0 + t] += wide[t].iter().sum::<f64>();
    }
}

pub fn rbf_from_sqdist(sqdist: &[f32], k: usize, bandwidth: Option<f32>) -> (Vec<f32>, f32) {
    let h = bandwidth.unwrap_or_else(|| crate::backend::median_bandwidth(sqdist, k));
    let kern = sqdist.iter().map(|&d| (-d / h).exp()).collect();
    (kern, h)
}

/// `φ_i = (1/K) Σ_j k_ji (score_j + (2/h)(θ_i − θ_j))`, as one small product per column
/// block plus a row scaling: with `U = (1/K) S − (2/(hK)) Θ`,
/// `φ = Kᵀ U + (2/(hK)) diag(Σ_j k_ji) Θ`.
pub fn direction(
    theta: &[f32],
    score: &[f32],
    kern: &[f32],
    k: usize,
    d: usize,
    h: f32,
) -> Vec<f32> {
    direction_on(super::simd::isa(), theta, score, kern, k, d, h)
}

/// [`direction`] with a chosen instruction set.
fn direction_on(
    isa: super::simd::Isa,
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
    // Coefficient of θ_i in φ_i: (2/(hK)) Σ_j k_ji.
    let diag: Vec<f32> = (0..k)
        .map(|i| rep * (0..k).map(|j| kern[j * k + i]).sum::<f32>())
        .collect();
    // Transposed kernel: kt[i][j] = k_ji.
    let kt: Vec<f32> = (0..k * k).map(|t| kern[(t % k) * k + t / k]).collect();
    let p = DirParams {
        theta,
        score,
        kt: &kt,
        diag: &diag,
        k,
        d,
        inv_k,
        rep,
    };
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
        || vec![0.0f32; 2 * k * SUB_COLS],
        |scratch, (c, mut rows)| direction_block_with(isa, &p, c * BLOCK_COLS, scratch, &mut rows),
    );
    // SAFETY: `direction_block` writes every element of the rows it is given, and the
    // blocks above cover all k·d elements.
    unsafe { phi.set_len(k * d) };
    phi
}

/// What every block of [`direction`] reads.
struct DirParams<'a> {
    theta: &'a [f32],
    score: &'a [f32],
    /// `kt[i·k + j] = k_ji`.
    kt: &'a [f32],
    /// `diag[i] = (2/(hK)) Σ_j k_ji`.
    diag: &'a [f32],
    k: usize,
    d: usize,
    inv_k: f32,
    rep: f32,
}

simd_dispatch!(fn direction_block, direction_block_with => direction_block_generic(
    p: &DirParams, c0: usize, scratch: &mut [f32], rows: &mut [&mut [MaybeUninit<f32>]]
));

/// Writes every element of `rows` (row i of φ, columns `c0..c0 + rows[i].len()`);
/// `scratch` holds `2 · k · SUB_COLS` f32 (U and a copy of θ). Sub-block by sub-block: U
/// (and θ) for all k rows into L1 scratch, then the output rows in register tiles of
/// [`TILE_ROWS`] rows.
#[inline(always)]
fn direction_block_generic<V: F32x16>(
    p: &DirParams,
    c0: usize,
    scratch: &mut [f32],
    rows: &mut [&mut [MaybeUninit<f32>]],
) {
    let (k, d) = (p.k, p.d);
    let w = rows.first().map_or(0, |r| r.len());
    for s in (0..w).step_by(SUB_COLS) {
        let sw = SUB_COLS.min(w - s);
        let col = c0 + s;
        // θ is read twice (for U, then for the diagonal term): copied next to U it stays
        // in L1 in between.
        let (u, th) = scratch.split_at_mut(k * SUB_COLS);
        let (u, th) = (&mut u[..k * sw], &mut th[..k * sw]);
        for j in 0..k {
            let (sc, th) = (&p.score[j * d + col..][..sw], &mut th[j * sw..][..sw]);
            th.copy_from_slice(&p.theta[j * d + col..][..sw]);
            for ((u, &sc), &th) in u[j * sw..(j + 1) * sw].iter_mut().zip(sc).zip(&*th) {
                *u = p.inv_k * sc - p.rep * th;
            }
        }
        let (u, th) = (&*u, &*th);
        for (g, out) in rows.chunks_mut(TILE_ROWS).enumerate() {
            let i = g * TILE_ROWS;
            match (out.len(), V::TILE_VECS) {
                (1, 4) => direction_rows::<1, 4, V>(p, u, th, i, s, sw, out),
                (2, 4) => direction_rows::<2, 4, V>(p, u, th, i, s, sw, out),
                (1, _) => direction_rows::<1, 2, V>(p, u, th, i, s, sw, out),
                (2, _) => direction_rows::<2, 2, V>(p, u, th, i, s, sw, out),
                _ => unreachable!(),
            }
        }
    }
}

/// Rows `i..i + R` of φ over one sub-block (`sw` columns: `col..` in θ, `s..` in `out`):
/// `φ_i = Σ_j k_ji u_j + diag_i θ_i`, R × `VECS` vectors of accumulators at a time.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register-tile indices read clearer than iterators
fn direction_rows<const R: usize, const VECS: usize, V: F32x16>(
    p: &DirParams,
    u: &[f32],
    th: &[f32],
    i: usize,
    s: usize,
    sw: usize,
    out: &mut [&mut [MaybeUninit<f32>]],
) {
    let k = p.k;
    let tile = VECS * LANES;
    let kt: [&[f32]; R] = std::array::from_fn(|r| &p.kt[(i + r) * k..][..k]);
    let theta: [&[f32]; R] = std::array::from_fn(|r| &th[(i + r) * sw..][..sw]);
    let diag: [f32; R] = std::array::from_fn(|r| p.diag[i + r]);
    let full = sw / tile * tile;
    for c in (0..full).step_by(tile) {
        let mut acc = [[V::zero(); VECS]; R];
        for j in 0..k {
            let uj: [V; VECS] = std::array::from_fn(|v| V::load(lanes(u, j * sw + c + v * LANES)));
            for r in 0..R {
                let kji = V::splat(kt[r][j]);
                for v in 0..VECS {
                    acc[r][v] = kji.madd(uj[v], acc[r][v]);
                }
            }
        }
        for r in 0..R {
            let dg = V::splat(diag[r]);
            for v in 0..VECS {
                let at = c + v * LANES;
                let th = V::load(lanes(theta[r], at));
                let o = (&mut out[r][s + at..][..LANES]).try_into().unwrap();
                dg.madd(th, acc[r][v]).store_uninit(o);
            }
        }
    }
    // Columns past the last whole tile (only at the end of a row): one at a time.
    for c in full..sw {
        for r in 0..R {
            let mut acc = 0.0f32;
            for j in 0..k {
                acc = madd::<V>(kt[r][j], u[j * sw + c], acc);
            }
            out[r][s + c].write(madd::<V>(diag[r], theta[r][c], acc));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::simd::Isa;
    use crate::testing::rel_err;

    /// Sizes past one column block with a ragged tail, against naive f64 sums, on both
    /// paths (the AVX2 one only where the CPU has it).
    #[test]
    fn blocked_passes_match_naive_f64() {
        // Odd and even K: a row tile of one and of two rows left over.
        for k in [1, 2, 5, 16] {
            check_blocked_passes(k, 2 * BLOCK_COLS + 77);
        }
    }

    fn check_blocked_passes(k: usize, d: usize) {
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
        for isa in Isa::available() {
            let sq = pairwise_sqdist_on(isa, &theta, k, d);
            let err = rel_err(&sq, &want_sq);
            assert!(err < 1e-6, "sqdist ({isa:?}): {err}");
        }
        let sq = pairwise_sqdist(&theta, k, d);
        for isa in Isa::available() {
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
            let phi = direction_on(isa, &theta, &score, &kern, k, d, h);
            let err = rel_err(&phi, &want_phi);
            assert!(err < 1e-5, "direction ({isa:?}): {err}");
        }
    }
}
