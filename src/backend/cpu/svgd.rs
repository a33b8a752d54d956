//! CPU reference for `pairwise_sqdist`, `rbf_kernel` and `svgd_direction` (DESIGN.md 4–6).
//!
//! Both passes over the `[K, D]` particle matrix go column block by column block: a block
//! of all K rows (K × 2048 f32, 128 KiB at K = 16) is read from memory once while every
//! pair, or the small K×K product, runs over it. Blocks run in parallel.
//!
//! The direction does 16 multiply-adds per output at K = 16, more arithmetic per byte than
//! the memory delivers, so its inner loop is written for the FP units: each block is worked
//! in sub-blocks of [`SUB_COLS`] columns that stay in L1, with 2 rows × 4 vectors of
//! independent accumulators held in registers. It is written once over a small 8-lane
//! vector trait, [`F32x8`]: [`Avx2`] (AVX2 registers, fused multiply-add) where the CPU has
//! it, else [`Portable`] (arrays, separate multiply and add); the tests check both against
//! f64 sums.
//!
//! φ's output buffer comes from `output_buffer`, which reuses the last big buffer a CPU
//! tensor freed: the SVGD step frees φ after AdamW, so the next step skips the page faults.

use super::output_buffer;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Columns per parallel block (see the module docs).
const BLOCK_COLS: usize = 2048;
/// Columns per sub-block of `direction`: U and θ for K = 16 rows (2 × 16 KiB) stay in L1
/// (or close to it) while every output row passes over them.
const SUB_COLS: usize = 256;
/// f32 lanes of one AVX2 vector ([`F32x8`]).
const LANES: usize = 8;
/// Squared differences summed in f32 per lane before each f64 add: 8 lanes × 8 terms keeps
/// the f32 partial sums within a few ulps of the exact value.
const F32_RUN: usize = 64;
/// Output rows × column vectors per register tile in `direction`: 2 × 4 accumulators, so
/// each step loads 4 vectors of U and 2 kernel values for 8 multiply-adds.
const TILE_ROWS: usize = 2;
const TILE_VECS: usize = 4;
const TILE_COLS: usize = TILE_VECS * LANES;

/// `a · b + c` for the scalar tails: fused (one rounding) alongside the FMA vectors.
#[inline(always)]
fn madd<V: F32x8>(a: f32, b: f32, c: f32) -> f32 {
    if V::FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// One vector of [`LANES`] f32: all the SIMD the kernels below use. [`Avx2`] where the CPU
/// has AVX2 and FMA, else [`Portable`] (plain arrays, which SSE2 handles 4 lanes at a time).
trait F32x8: Copy {
    /// Whether [`F32x8::madd`] rounds once (FMA) or twice.
    const FUSED: bool;
    fn zero() -> Self;
    fn splat(x: f32) -> Self;
    fn load(s: &[f32; LANES]) -> Self;
    fn store(self, out: &mut [MaybeUninit<f32>; LANES]);
    /// `self · b + c`.
    fn madd(self, b: Self, c: Self) -> Self;
}

#[derive(Clone, Copy)]
struct Portable([f32; LANES]);

impl F32x8 for Portable {
    const FUSED: bool = false;
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Portable([x; LANES])
    }
    #[inline(always)]
    fn load(s: &[f32; LANES]) -> Self {
        Portable(*s)
    }
    #[inline(always)]
    fn store(self, out: &mut [MaybeUninit<f32>; LANES]) {
        for (o, &x) in out.iter_mut().zip(&self.0) {
            o.write(x);
        }
    }
    #[inline(always)]
    fn madd(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] * b.0[l] + c.0[l]))
    }
}

/// AVX2 + FMA registers. Only ever used (inlined) inside the `#[target_feature(enable =
/// "avx2,fma")]` functions below, which run only after `has_avx2_fma` said yes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2(std::arch::x86_64::__m256);

#[cfg(target_arch = "x86_64")]
impl F32x8 for Avx2 {
    const FUSED: bool = true;
    // SAFETY (every method): the intrinsics need AVX/AVX2/FMA, which the CPU has (see the
    // type's docs); loads and stores go through references to exactly LANES f32.
    #[inline(always)]
    fn zero() -> Self {
        Avx2(unsafe { std::arch::x86_64::_mm256_setzero_ps() })
    }
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Avx2(unsafe { std::arch::x86_64::_mm256_set1_ps(x) })
    }
    #[inline(always)]
    fn load(s: &[f32; LANES]) -> Self {
        Avx2(unsafe { std::arch::x86_64::_mm256_loadu_ps(s.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, out: &mut [MaybeUninit<f32>; LANES]) {
        unsafe { std::arch::x86_64::_mm256_storeu_ps(out.as_mut_ptr().cast(), self.0) }
    }
    #[inline(always)]
    fn madd(self, b: Self, c: Self) -> Self {
        Avx2(unsafe { std::arch::x86_64::_mm256_fmadd_ps(self.0, b.0, c.0) })
    }
}

/// Whether this CPU runs the [`Avx2`] paths.
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

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
    direction_with(has_avx2_fma(), theta, score, kern, k, d, h)
}

/// [`direction`] on the [`Avx2`] path when `fused`, else the [`Portable`] one.
fn direction_with(
    fused: bool,
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
        |scratch, (c, mut rows)| direction_block(fused, &p, c * BLOCK_COLS, scratch, &mut rows),
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

/// Writes every element of `rows` (row i of φ, columns `c0..c0 + rows[i].len()`);
/// `scratch` holds `2 · k · SUB_COLS` f32 (U and a copy of θ).
fn direction_block(
    fused: bool,
    p: &DirParams,
    c0: usize,
    scratch: &mut [f32],
    rows: &mut [&mut [MaybeUninit<f32>]],
) {
    #[cfg(target_arch = "x86_64")]
    if fused {
        // SAFETY: `fused` is only true where the CPU has AVX2 and FMA (`has_avx2_fma`).
        return unsafe { direction_block_fma(p, c0, scratch, rows) };
    }
    let _ = fused;
    direction_block_generic::<Portable>(p, c0, scratch, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direction_block_fma(
    p: &DirParams,
    c0: usize,
    scratch: &mut [f32],
    rows: &mut [&mut [MaybeUninit<f32>]],
) {
    direction_block_generic::<Avx2>(p, c0, scratch, rows)
}

/// Sub-block by sub-block: U (and θ) for all k rows into L1 scratch, then the output rows
/// in register tiles of [`TILE_ROWS`] rows.
#[inline(always)]
fn direction_block_generic<V: F32x8>(
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
        // θ is read twice (for U, then for the diagonal term): copied next to U, away from
        // the 4 KiB-multiple row stride that makes the rows share cache sets (see
        // `sqdist_block_generic`), it stays in L1 in between.
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
            match out.len() {
                1 => direction_rows::<1, V>(p, u, th, i, s, sw, out),
                2 => direction_rows::<2, V>(p, u, th, i, s, sw, out),
                _ => unreachable!(),
            }
        }
    }
}

/// Rows `i..i + R` of φ over one sub-block (`sw` columns: `col..` in θ, `s..` in `out`):
/// `φ_i = Σ_j k_ji u_j + diag_i θ_i`, R × [`TILE_COLS`] accumulators at a time.
#[inline(always)]
fn direction_rows<const R: usize, V: F32x8>(
    p: &DirParams,
    u: &[f32],
    th: &[f32],
    i: usize,
    s: usize,
    sw: usize,
    out: &mut [&mut [MaybeUninit<f32>]],
) {
    let k = p.k;
    let kt: [&[f32]; R] = std::array::from_fn(|r| &p.kt[(i + r) * k..][..k]);
    let theta: [&[f32]; R] = std::array::from_fn(|r| &th[(i + r) * sw..][..sw]);
    let diag: [f32; R] = std::array::from_fn(|r| p.diag[i + r]);
    let full = sw / TILE_COLS * TILE_COLS;
    for c in (0..full).step_by(TILE_COLS) {
        let mut acc = [[V::zero(); TILE_VECS]; R];
        for j in 0..k {
            let uj: &[f32; TILE_COLS] = u[j * sw + c..][..TILE_COLS].try_into().unwrap();
            let uj: [V; TILE_VECS] =
                std::array::from_fn(|v| V::load(uj[v * LANES..][..LANES].try_into().unwrap()));
            for r in 0..R {
                let kji = V::splat(kt[r][j]);
                for v in 0..TILE_VECS {
                    acc[r][v] = kji.madd(uj[v], acc[r][v]);
                }
            }
        }
        for r in 0..R {
            let th: &[f32; TILE_COLS] = theta[r][c..][..TILE_COLS].try_into().unwrap();
            let o: &mut [MaybeUninit<f32>; TILE_COLS] =
                (&mut out[r][s + c..][..TILE_COLS]).try_into().unwrap();
            let dg = V::splat(diag[r]);
            for v in 0..TILE_VECS {
                let th = V::load(th[v * LANES..][..LANES].try_into().unwrap());
                let o = (&mut o[v * LANES..][..LANES]).try_into().unwrap();
                dg.madd(th, acc[r][v]).store(o);
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
    use crate::testing::rel_err;

    /// Sizes past one column block with a ragged tail, against naive f64 sums, on both
    /// paths (the AVX2 one only where the CPU has it).
    #[test]
    fn blocked_passes_match_naive_f64() {
        // Odd and even K: a row tile of one and of two rows left over.
        for k in [5, 16] {
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
        let sq = pairwise_sqdist(&theta, k, d);
        let err = rel_err(&sq, &want_sq);
        assert!(err < 1e-6, "sqdist: {err}");
        for fused in [false, has_avx2_fma()] {
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
            let phi = direction_with(fused, &theta, &score, &kern, k, d, h);
            let err = rel_err(&phi, &want_phi);
            assert!(err < 1e-5, "direction (fused {fused}): {err}");
        }
    }
}
