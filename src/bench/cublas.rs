//! The CUDA anchor: cuBLAS SGEMM (cudarc, dynamically loaded) for the base product `x Wᵀ`
//! of a LoRA layer, timed with CUDA events. The fused `lora_forward` on the CUDA backend is
//! measured against it. Built with the `cuda` feature; without a driver, libcublas or a
//! device it returns an error saying which, and `bella bench` reports it as not measured.

use super::measure::{measure, Budget, Stats};
use super::timer::{Body, Timer};
use crate::error::{BellaError, Result};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{sys::CUevent_flags, CudaContext, CudaStream};
use std::sync::Arc;

fn err(e: impl std::fmt::Display) -> BellaError {
    BellaError::device("cuda", format!("cuBLAS anchor: {e}"))
}

/// CUDA events recorded on one stream around the body: device time of the work it queued.
pub struct CudaEvents {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

impl Timer for CudaEvents {
    fn clock(&self) -> &'static str {
        "gpu"
    }
    fn time(&self, body: &mut Body) -> Result<f64> {
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags).map_err(err)?;
        let end = self.ctx.new_event(flags).map_err(err)?;
        start.record(&self.stream).map_err(err)?;
        body()?;
        end.record(&self.stream).map_err(err)?;
        Ok(start.elapsed_ms(&end).map_err(err)? as f64 * 1e-3)
    }
}

/// Are libcuda and libcublas loadable? (cudarc panics on first use when they are not.)
fn libraries_present() -> bool {
    // SAFETY: these only try to open the shared libraries.
    unsafe { cudarc::driver::sys::is_culib_present() && cudarc::cublas::sys::is_culib_present() }
}

/// Time `y[M,O] = x[M,I] · Wᵀ` (W `[O,I]`, row-major) with cuBLAS on device 0.
pub fn base_product(m: usize, i: usize, o: usize, budget: &Budget) -> Result<Stats> {
    if !libraries_present() {
        return Err(err("libcuda or libcublas not found"));
    }
    // Any panic inside cudarc (a library that loads but lacks a symbol) becomes an error.
    std::panic::catch_unwind(|| run(m, i, o, budget))
        .unwrap_or_else(|_| Err(err("cudarc panicked while loading CUDA")))
}

fn run(m: usize, i: usize, o: usize, budget: &Budget) -> Result<Stats> {
    let ctx = CudaContext::new(0).map_err(err)?;
    let stream = ctx.default_stream();
    let blas = CudaBlas::new(stream.clone()).map_err(err)?;
    let x = stream.alloc_zeros::<f32>(m * i).map_err(err)?;
    let w = stream.alloc_zeros::<f32>(o * i).map_err(err)?;
    let mut y = stream.alloc_zeros::<f32>(m * o).map_err(err)?;
    // Column-major view: yᵀ [O, M] = W [O, I] · xᵀ [I, M]; row-major W is column-major Wᵀ.
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: o as i32,
        n: m as i32,
        k: i as i32,
        alpha: 1.0f32,
        lda: i as i32,
        ldb: i as i32,
        beta: 0.0f32,
        ldc: o as i32,
    };
    let timer = CudaEvents {
        ctx: ctx.clone(),
        stream: stream.clone(),
    };
    let mut body = || -> Result<()> {
        // SAFETY: the buffers hold exactly the sizes the configuration addresses.
        unsafe { blas.gemm(cfg, &w, &x, &mut y) }.map_err(err)
    };
    let stats = measure(&timer, budget, &mut body)?;
    stream.synchronize().map_err(err)?;
    Ok(stats)
}
