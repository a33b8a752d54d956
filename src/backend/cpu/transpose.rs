//! Out-of-place matrix transpose for the CPU backend, in 8 × 8 blocks with AVX shuffles
//! where the CPU has AVX2 (a plain blocked loop elsewhere), split over rayon threads.
//!
//! The `gemm` crate wants its left operand (after it turns a row-major product around, the
//! weight `W`) with unit row stride; given `W` as stored (`[O, I]`, row-major) it packs it
//! one element at a time, once per column block of rows of `x` it runs. Handing it `Wᵀ`
//! made from this transpose measured faster for tall products (see `gemm_with`).

use super::simd::{self, Isa};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output rows (input columns) per parallel task.
const BAND: usize = 64;
/// Below this many elements the transpose runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// `[rows, cols]` row-major to `[cols, rows]` row-major.
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let n = rows * cols;
    let mut out = Vec::with_capacity(n);
    transpose_into(src, rows, cols, &mut out.spare_capacity_mut()[..n]);
    // SAFETY: `transpose_into` writes all rows·cols elements.
    unsafe { out.set_len(n) };
    out
}

/// Writes `dst[j·rows + i] = src[i·cols + j]` for every element (`dst` holds `rows·cols`).
pub fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [MaybeUninit<f32>]) {
    transpose_into_with(simd::isa(), src, rows, cols, dst)
}

/// [`transpose_into`] with the given instruction set (the tests run every path).
fn transpose_into_with(
    isa: Isa,
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [MaybeUninit<f32>],
) {
    let avx = matches!(simd::supported(isa), Isa::Avx512 | Isa::Avx2);
    assert!(src.len() >= rows * cols && dst.len() == rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    let band = |(b, out): (usize, &mut [MaybeUninit<f32>])| {
        let j0 = b * BAND;
        transpose_band(avx, src, rows, cols, j0, out);
    };
    if rows * cols >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        dst.par_chunks_mut(BAND * rows).enumerate().for_each(band);
    } else {
        dst.chunks_mut(BAND * rows).enumerate().for_each(band);
    }
}

/// Output rows `j0..j0 + out.len() / rows` (input columns `j0..`).
/// With `avx`, the CPU has AVX2.
fn transpose_band(
    avx: bool,
    src: &[f32],
    rows: usize,
    cols: usize,
    j0: usize,
    out: &mut [MaybeUninit<f32>],
) {
    let width = out.len() / rows;
    let (rows8, width8) = (rows / 8 * 8, width / 8 * 8);
    #[cfg(target_arch = "x86_64")]
    if avx {
        // SAFETY: AVX2 is present (the caller's `supported` found it); the blocks read src rows i..i+8,
        // columns j0+j..j0+j+8 (inside: i + 8 ≤ rows, j + 8 ≤ width ≤ cols − j0) and
        // write out rows j..j+8, columns i..i+8 (inside the band).
        unsafe {
            // Row blocks outer: each step reads whole lines of 8 input rows across the
            // band and writes half lines of its output rows, finished by the next step.
            for i in (0..rows8).step_by(8) {
                for j in (0..width8).step_by(8) {
                    x86::block8(
                        src.as_ptr().add(i * cols + j0 + j),
                        cols,
                        out.as_mut_ptr().add(j * rows + i).cast(),
                        rows,
                    );
                }
            }
        }
    } else {
        scalar(src, rows, cols, j0, out, 0..rows8, 0..width8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = avx;
        scalar(src, rows, cols, j0, out, 0..rows8, 0..width8);
    }
    // The edges: rows past the last whole block, then columns past it.
    scalar(src, rows, cols, j0, out, rows8..rows, 0..width8);
    scalar(src, rows, cols, j0, out, 0..rows, width8..width);
}

fn scalar(
    src: &[f32],
    rows: usize,
    cols: usize,
    j0: usize,
    out: &mut [MaybeUninit<f32>],
    is: std::ops::Range<usize>,
    js: std::ops::Range<usize>,
) {
    for j in js {
        let col = &mut out[j * rows..(j + 1) * rows];
        for i in is.clone() {
            col[i].write(src[i * cols + j0 + j]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One 8 × 8 block: `dst[t·dst_stride + s] = src[s·src_stride + t]`.
    ///
    /// # Safety
    /// AVX2 is present; 8 rows of 8 f32 are readable at `src` (stride `src_stride`) and
    /// writable at `dst` (stride `dst_stride`).
    #[target_feature(enable = "avx2")]
    pub unsafe fn block8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // Macros, not closures: a closure does not inherit the target features, so its
        // intrinsics would be out-of-line calls.
        macro_rules! row {
            ($s:expr) => {
                _mm256_loadu_ps(src.add($s * src_stride))
            };
        }
        let (r0, r1, r2, r3) = (row!(0), row!(1), row!(2), row!(3));
        let (r4, r5, r6, r7) = (row!(4), row!(5), row!(6), row!(7));
        // Interleave pairs of rows: t0 = r0₀ r1₀ r0₁ r1₁ | r0₄ r1₄ r0₅ r1₅, and so on.
        let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
        // Pairs of pairs: u0 = column 0 of rows 0–3 | column 4 of rows 0–3, and so on.
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        // Join the 128-bit halves: rows 0–3 with rows 4–7 of each column.
        macro_rules! put {
            ($t:expr, $v:expr) => {
                _mm256_storeu_ps(dst.add($t * dst_stride), $v)
            };
        }
        put!(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
        put!(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
        put!(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
        put!(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
        put!(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
        put!(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
        put!(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
        put!(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_on_odd_and_blocked_shapes() {
        for &(rows, cols) in &[
            (1, 1),
            (1, 9),
            (9, 1),
            (8, 8),
            (13, 29),
            (64, 72),
            (257, 300),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            for isa in Isa::available() {
                let mut out = vec![MaybeUninit::new(f32::NAN); rows * cols];
                transpose_into_with(isa, &src, rows, cols, &mut out);
                for i in 0..rows {
                    for j in 0..cols {
                        let got = unsafe { out[j * rows + i].assume_init() };
                        assert_eq!(got, src[i * cols + j], "{isa:?} {rows}x{cols} at ({i},{j})");
                    }
                }
            }
        }
    }
}
