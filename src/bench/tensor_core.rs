//! The tensor-core GEMM (`gemm_mma_bf16` / `gemm_mma_f16` of kernels/matmul.ptx) as a case of
//! its own, the launch function on the concrete PTX backend (no op layer in between; the op
//! `matmul` reaches the same kernel for bf16/f16 `a · bᵀ`): `bella profile --op gemm_mma_bf16`
//! counts it on the simulator, and `bella bench` on cuda times it beside the f32 GEMM of
//! the same shape (`tensor_core_vs_f32_gemm`).

use super::baselines::Comparison;
use super::cases::{OpCase, Scale, Work};
use super::measure::{measure, Budget};
use super::timer::WallClock;
use crate::backend::ptx::driver::Driver;
use crate::backend::ptx::gemm_mma::{gemm_mma, pack_half, Batch, HalfType, MmaGemm};
use crate::backend::ptx::PtxBackend;
use crate::backend::Backend;
use crate::error::Result;
use crate::rng::Rng;
use std::sync::Arc;

/// The tensor-core kernels, by the names `bella profile --op` takes.
pub const TENSOR_CORE_OPS: [&str; 2] = ["gemm_mma_bf16", "gemm_mma_f16"];

/// The format of a [`TENSOR_CORE_OPS`] name.
pub fn half_type(op: &str) -> Option<HalfType> {
    match op {
        "gemm_mma_bf16" => Some(HalfType::Bf16),
        "gemm_mma_f16" => Some(HalfType::F16),
        _ => None,
    }
}

/// The square size of the case at `scale`: the 4096³ of issue 14's targets on GPUs.
pub fn size(scale: Scale) -> usize {
    match scale {
        Scale::Small => 256,
        Scale::Cpu => 1024,
        Scale::Gpu => 4096,
    }
}

/// `C [n, n] = A [n, n] · Bᵀ` (A, B `[n, n]` in `dtype`, C f32) with the tensor-core kernel,
/// on `be`. FLOPs 2n³; minimum bytes: A and B once in 2-byte halves, C written once in f32.
pub fn gemm_mma_case<D: Driver>(be: Arc<PtxBackend<D>>, dtype: HalfType, n: usize) -> OpCase {
    let nf = n as f64;
    OpCase::new(
        dtype.kernel(),
        format!("m=n=k={n} A·Bᵀ (tensor cores, f32 accumulation)"),
        Work {
            flops: 2.0 * nf * nf * nf,
            bytes: 2.0 * 2.0 * nf * nf + 4.0 * nf * nf,
        },
        Box::new(move |_, rng| {
            let d = be.driver();
            let vals = rng.uniform_vec(n * n, -1.0, 1.0);
            let a = d.upload(&pack_half(dtype, &vals))?;
            let vals = rng.uniform_vec(n * n, -1.0, 1.0);
            let b = d.upload(&pack_half(dtype, &vals))?;
            let c = d.alloc_zeroed(n * n)?;
            let be = be.clone();
            Ok(Box::new(move || {
                gemm_mma(
                    &be,
                    &MmaGemm {
                        dtype,
                        m: n,
                        n,
                        k: n,
                        a: &a,
                        a_offset: 0,
                        b: &b,
                        b_offset: 0,
                        c: &c,
                        c_offset: 0,
                        alpha: 1.0,
                        beta: None,
                        c_block: None,
                        layouts: Default::default(),
                        batch: Batch::ONE,
                    },
                )
            }))
        }),
    )
}

/// The tensor-core GEMM against the f32 `matmul` of the same shape, on one backend, both
/// timed on the wall clock after a device synchronisation (the same timer for both).
pub fn tensor_core_vs_f32_gemm<D: Driver>(
    be: Arc<PtxBackend<D>>,
    dtype: HalfType,
    n: usize,
    budget: &Budget,
) -> Result<Comparison> {
    let dyn_be: Arc<dyn Backend> = be.clone();
    let clock = WallClock::new(dyn_be.clone());
    let mut rng = Rng::new(21);
    let mut tc = gemm_mma_case(be, dtype, n).prepare(&dyn_be, &mut rng)?;
    let ours = measure(&clock, budget, &mut tc)?;
    drop(tc);
    let mut f32_gemm = super::cases::matmul_case(1, n, n, n).prepare(&dyn_be, &mut rng)?;
    let base = measure(&clock, budget, &mut f32_gemm)?;
    Ok(Comparison {
        name: "tensor_core_vs_f32_gemm".into(),
        backend: dyn_be.kind().name().into(),
        shape: format!("{} m=n=k={n}", dtype.kernel()),
        ratio: base.median_s / ours.median_s,
        ours_ms: ours.median_s * 1e3,
        baseline_ms: base.median_s * 1e3,
        target: None,
        note: format!(
            "{} (bf16/f16 inputs, f32 accumulation) vs the f32 matmul (gemm_tiled_128), wall \
             clock after a synchronisation",
            dtype.kernel()
        ),
    })
}

#[cfg(all(test, feature = "ptx-sim"))]
mod tests {
    use super::*;
    use crate::backend::ptx_sim::SimDriver;

    /// The comparison runs end to end on the simulator (on cuda it is `bella bench`'s); the
    /// times are the simulator's, meaningless, so only the shape of the result is checked.
    #[test]
    fn the_comparison_runs_on_the_simulator() {
        let be = Arc::new(PtxBackend::new(SimDriver::new()).unwrap());
        let budget = Budget {
            warmup_runs: 0,
            min_runs: 1,
            max_runs: 1,
            min_time: std::time::Duration::ZERO,
        };
        let c = tensor_core_vs_f32_gemm(be, HalfType::Bf16, 128, &budget).unwrap();
        assert_eq!(c.name, "tensor_core_vs_f32_gemm");
        assert!(
            c.ratio > 0.0 && c.ours_ms > 0.0 && c.baseline_ms > 0.0,
            "{c:?}"
        );
    }
}
