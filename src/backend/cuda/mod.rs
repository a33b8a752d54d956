//! The CUDA backend: the hand-written PTX of `kernels/`, driven by the shared launch code
//! of `backend::ptx` over the CUDA driver API (cudarc with dynamic loading: the binary
//! builds without a toolkit and looks for libcuda at run time).

mod device;

pub use device::CudaDriver;

use crate::backend::ptx::PtxBackend;
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use std::sync::Arc;

/// The CUDA backend. Beyond [`Backend`] it offers [`CudaBackend::time_ms`] for benchmarks.
pub type CudaBackend = PtxBackend<CudaDriver>;

impl PtxBackend<CudaDriver> {
    /// GPU milliseconds of the work queued by `work`, measured with CUDA events.
    pub fn time_ms(&self, work: impl FnOnce() -> Result<()>) -> Result<f32> {
        self.driver().time_ms(work)
    }
}

/// Open the backend, or say why it is not available.
pub fn open() -> Result<Arc<dyn Backend>> {
    Ok(open_cuda()?)
}

/// Open the backend with its concrete type (for timing with CUDA events).
pub fn open_cuda() -> Result<Arc<CudaBackend>> {
    // cudarc panics on its first call when libcuda is missing: ask first.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(BellaError::unavailable(
            "cuda",
            "no CUDA driver on this machine (libcuda.so could not be loaded)",
        ));
    }
    // A driver older than the CUDA 12.8 API cudarc binds can lack a symbol, which cudarc
    // reports by panicking: turn that into an error too.
    let driver = std::panic::catch_unwind(CudaDriver::new).map_err(|_| {
        BellaError::unavailable(
            "cuda",
            "the CUDA driver library is missing an entry point (driver older than CUDA 12.8?)",
        )
    })??;
    Ok(Arc::new(PtxBackend::new(driver)?))
}
