//! The tensor-core GEMM against a float64 loop over its rounded inputs, on any driver: what
//! `bella doctor` runs on cuda and ptx-sim on the kernel itself, at a shape past its tiles
//! (the op-level 16-bit matmul rows reach it through `ops::matmul` too). The unit tests (`tests.rs`) cover more shapes and modes.

use super::{gemm_mma, pack_half, Batch, HalfType, MmaGemm};
use crate::backend::ptx::driver::Driver;
use crate::backend::ptx::PtxBackend;
use crate::error::Result;
use crate::rng::Rng;

/// What one check found: the worst norm-wise error and the elements outside their bound.
#[derive(Clone, Debug)]
pub struct MmaCheck {
    /// The shape, `m×n×k`.
    pub shape: String,
    /// Outputs compared.
    pub outputs: usize,
    /// `‖C − ref‖₂ / ‖ref‖₂`.
    pub norm_err: f64,
    /// `max |C − ref| / max |ref|`.
    pub elem_err: f64,
    /// Elements whose error is past the f32-accumulation bound
    /// `2 · 2⁻²⁴ · (k/16 + 3) · Σ|alpha·a·b|`.
    pub outside_bound: usize,
}

impl MmaCheck {
    /// No element outside its bound and the norm-wise error below 1e-6.
    pub fn passed(&self) -> bool {
        self.outside_bound == 0 && self.norm_err <= 1e-6
    }
}

/// `C = 0.75 · A · Bᵀ` at `m × n × k` (k a multiple of 8) on fresh random inputs rounded to
/// `dtype`, against the float64 sum of the same rounded values.
pub fn check<D: Driver>(
    be: &PtxBackend<D>,
    dtype: HalfType,
    (m, n, k): (usize, usize, usize),
    seed: u64,
) -> Result<MmaCheck> {
    let mut rng = Rng::new(seed);
    let round =
        |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&x| dtype.value(dtype.bits(x))).collect() };
    let a = round(rng.normal_vec(m * k));
    let b = round(rng.normal_vec(n * k));
    let d = be.driver();
    let (ab, bb) = (
        d.upload(&pack_half(dtype, &a))?,
        d.upload(&pack_half(dtype, &b))?,
    );
    let cb = d.upload(&vec![f32::NAN; m * n])?;
    let alpha = 0.75f32;
    gemm_mma(
        be,
        &MmaGemm {
            dtype,
            m,
            n,
            k,
            a: &ab,
            a_offset: 0,
            b: &bb,
            b_offset: 0,
            c: &cb,
            c_offset: 0,
            alpha,
            beta: None,
            c_block: None,
            layouts: Default::default(),
            batch: Batch::ONE,
        },
    )?;
    let got = d.download(&cb, m * n)?;
    let eps = f64::powi(2.0, -24);
    let (mut diff2, mut ref2, mut max_diff, mut max_ref, mut outside) = (0.0, 0.0, 0f64, 0f64, 0);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut s_abs) = (0f64, 0f64);
            for q in 0..k {
                let p = a[i * k + q] as f64 * b[j * k + q] as f64;
                s += p;
                s_abs += p.abs();
            }
            let want = alpha as f64 * s;
            let bound = 2.0 * eps * (k as f64 / 16.0 + 3.0) * alpha as f64 * s_abs + 1e-30;
            let e = (got[i * n + j] as f64 - want).abs();
            // a NaN (an output left unwritten) counts as outside
            if e.is_nan() || e > bound {
                outside += 1;
            }
            diff2 += if e.is_nan() { f64::INFINITY } else { e * e };
            ref2 += want * want;
            max_diff = max_diff.max(if e.is_nan() { f64::INFINITY } else { e });
            max_ref = max_ref.max(want.abs());
        }
    }
    Ok(MmaCheck {
        shape: format!("{m}×{n}×{k}"),
        outputs: m * n,
        norm_err: (diff2 / ref2.max(1e-300)).sqrt(),
        elem_err: max_diff / max_ref.max(1e-300),
        outside_bound: outside,
    })
}
