//! The warp-level matrix instructions: which lane holds which matrix element, and what
//! `mma.m16n8k16` computes. `exec` gathers the lanes' registers, calls these, and scatters
//! the results.
//!
//! Fragment layouts, from the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point
//! type", "ldmatrix"), with `g = lane >> 2` and `t = lane % 4`; element `i` of a fragment sits
//! in register `i / 2`, `i` even in its low 16 bits:
//! - A (16×16, row): `a_i` at row `g + 8·[i ∈ {2,3,6,7}]`, column `2t + (i & 1) + 8·[i ≥ 4]`;
//! - B (16×8, col): `b_i` at row (k) `2t + (i & 1) + 8·[i ≥ 2]`, column (n) `g`;
//! - C and D (16×8, f32): `c_i` at row `g + 8·[i ≥ 2]`, column `2t + (i & 1)`;
//! - `ldmatrix .m8n8 .b16`, matrix `j` in register `j`: element `i ∈ {0,1}` of lane `l` is
//!   row `g`, column `2t + i` of the matrix whose rows lanes `8j..8j+7` address; with
//!   `.trans`, row `2t + i`, column `g` (the stored matrix read column-major).
//!
//! **Accumulation model of `mma`.** The ISA leaves the order, the rounding and the handling
//! of subnormal inputs of the accumulation unspecified (it only requires at least single
//! precision). The simulator computes every product `a·b` exactly (in f64: products of two
//! 16-bit floats are exact there), adds `c` and the 16 products in the order
//! `c + p₀ + p₁ + … + p₁₅` in f64, and rounds the sum to f32 once (to nearest, ties to even).
//! Subnormal inputs are kept. Hardware truncates partial sums differently, so results can
//! differ from a GPU's in the last bits of f32: compare with a tolerance.

use super::half_cvt::widen;
use super::isa::Half;

pub const WARP: usize = 32;

/// (row, column) of element `i` (0..8) of lane `lane`'s A fragment.
pub fn a_position(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    let row = g + if matches!(i, 2 | 3 | 6 | 7) { 8 } else { 0 };
    let col = 2 * t + (i & 1) + if i >= 4 { 8 } else { 0 };
    (row, col)
}

/// (row k, column n) of element `i` (0..4) of lane `lane`'s B fragment.
pub fn b_position(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (2 * t + (i & 1) + if i >= 2 { 8 } else { 0 }, g)
}

/// (row, column) of element `i` (0..4) of lane `lane`'s C / D fragment.
pub fn c_position(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (g + if i >= 2 { 8 } else { 0 }, 2 * t + (i & 1))
}

/// (row, column) of the stored 8×8 matrix that element `i` (0..2) of `lane` receives.
pub fn ldmatrix_position(lane: usize, i: usize, trans: bool) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    if trans {
        (2 * t + i, g)
    } else {
        (g, 2 * t + i)
    }
}

/// Element `i` of a fragment whose registers are `regs` (two 16-bit elements per register).
fn half_of(regs: &[u32], i: usize) -> u16 {
    (regs[i / 2] >> (16 * (i % 2))) as u16
}

/// `D = A·B + C` for `mma.sync.aligned.m16n8k16.row.col.f32.ab.ab.f32`, from every lane's
/// A (4 registers), B (2) and C (4 f32 bits); returns every lane's D (4 f32 bits). See the
/// module notes for the accumulation model.
pub fn mma_m16n8k16(
    ab: Half,
    a: &[[u32; 4]; WARP],
    b: &[[u32; 2]; WARP],
    c: &[[u32; 4]; WARP],
) -> [[u32; 4]; WARP] {
    let mut am = [[0f64; 16]; 16];
    let mut bm = [[0f64; 8]; 16];
    let mut cm = [[0f64; 8]; 16];
    for lane in 0..WARP {
        for i in 0..8 {
            let (r, k) = a_position(lane, i);
            am[r][k] = widen(ab, half_of(&a[lane], i)) as f64;
        }
        for i in 0..4 {
            let (k, n) = b_position(lane, i);
            bm[k][n] = widen(ab, half_of(&b[lane], i)) as f64;
        }
        for (i, &bits) in c[lane].iter().enumerate() {
            let (r, n) = c_position(lane, i);
            cm[r][n] = f32::from_bits(bits) as f64;
        }
    }
    let mut d = [[0u32; 4]; WARP];
    for (lane, dl) in d.iter_mut().enumerate() {
        for (i, di) in dl.iter_mut().enumerate() {
            let (r, n) = c_position(lane, i);
            let mut sum = cm[r][n];
            for k in 0..16 {
                sum += am[r][k] * bm[k][n];
            }
            *di = (sum as f32).to_bits();
        }
    }
    d
}

/// FLOPs of one `mma.m16n8k16` (a multiply and an add per product): 2·16·8·16.
pub const MMA_M16N8K16_FLOPS: u64 = 2 * 16 * 8 * 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layout is a bijection between (lane, element) and the matrix's elements.
    #[test]
    fn every_element_is_held_by_exactly_one_lane() {
        let mut seen_a = [[0; 16]; 16];
        let mut seen_b = [[0; 8]; 16];
        let mut seen_c = [[0; 8]; 16];
        let mut seen_l = [[[0; 8]; 8]; 2];
        for lane in 0..WARP {
            for i in 0..8 {
                let (r, c) = a_position(lane, i);
                seen_a[r][c] += 1;
            }
            for i in 0..4 {
                let (r, c) = b_position(lane, i);
                seen_b[r][c] += 1;
                let (r, c) = c_position(lane, i);
                seen_c[r][c] += 1;
            }
            for i in 0..2 {
                for (trans, seen) in seen_l.iter_mut().enumerate() {
                    let (r, c) = ldmatrix_position(lane, i, trans == 1);
                    seen[r][c] += 1;
                }
            }
        }
        assert!(seen_a.iter().flatten().all(|&n| n == 1));
        assert!(seen_b.iter().flatten().all(|&n| n == 1));
        assert!(seen_c.iter().flatten().all(|&n| n == 1));
        assert!(seen_l.iter().flatten().flatten().all(|&n| n == 1));
    }

    #[test]
    fn products_are_exact_and_summed_once() {
        // A = all 1 + 2^-7 (exact in bf16), B = all 1 - 2^-8: each product 1 + 2^-7 - 2^-8 -
        // 2^-15 needs 16 bits; 16 of them plus c = 2^24 round once
        let one_plus = 0x3F81u32; // 1 + 2^-7
        let one_minus = 0x3F7Fu32; // 1 - 2^-8
        let a = [[one_plus | one_plus << 16; 4]; WARP];
        let b = [[one_minus | one_minus << 16; 2]; WARP];
        let c = [[(16_777_216f32).to_bits(); 4]; WARP];
        let d = mma_m16n8k16(Half::Bf16, &a, &b, &c);
        let p = (1.0 + 2f64.powi(-7)) * (1.0 - 2f64.powi(-8));
        let want = (16_777_216.0 + 16.0 * p) as f32;
        assert!(d.iter().flatten().all(|&x| x == want.to_bits()));
    }
}
