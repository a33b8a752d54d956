//! The CUDA backend: the hand-written PTX of `kernels/`, driven by the shared launch code
//! of `backend::ptx` over the CUDA driver API (cudarc with dynamic loading: the binary
//! builds without a toolkit and looks for libcuda at run time).

mod device;

pub use device::CudaDriver;

use crate::backend::ptx::PtxBackend;
use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;
use std::sync::Arc;

/// The CUDA backend. Beyond [`Backend`] it offers [`CudaBackend::time_ms`] for benchmarks
/// and, for frameworks that own the memory and the stream (PyTorch, JAX, CuPy), tensors over
/// the caller's device memory ([`CudaBackend::tensor_from_device_ptr`]), the device address
/// of any tensor ([`CudaBackend::device_ptr`]) and the caller's stream
/// ([`CudaBackend::set_stream`]): ops then read and write the caller's buffers in place,
/// ordered on its stream, with no copies.
pub type CudaBackend = PtxBackend<CudaDriver>;

impl PtxBackend<CudaDriver> {
    /// GPU milliseconds of the work queued by `work`, measured with CUDA events.
    pub fn time_ms(&self, work: impl FnOnce() -> Result<()>) -> Result<f32> {
        self.driver().time_ms(work)
    }

    /// A tensor of `shape` (row-major, contiguous f32) over the caller's device memory at
    /// `ptr` (for example a PyTorch tensor's `data_ptr()`): ops read it, and in-place ops
    /// (`adamw_step`, the `_into` ops) write it, without a copy. bella never frees it.
    ///
    /// # Safety
    /// `ptr` must address at least `numel(shape)` f32 of this device's primary context
    /// (the one PyTorch and JAX use on device 0), stay valid while the tensor or any clone
    /// of it lives, and not be written by other work while bella's queued work uses it
    /// (order both on one stream: [`CudaBackend::set_stream`]). A clone written in place
    /// is copied first (tensors have value semantics), so write only through the tensor
    /// itself to update the caller's memory.
    pub unsafe fn tensor_from_device_ptr(&self, ptr: u64, shape: &[usize]) -> Result<Tensor> {
        let len = crate::tensor::numel(shape);
        let buf = unsafe { self.driver().borrow_device_ptr(ptr, len)? };
        self.tensor_over(shape, buf)
    }

    /// [`CudaBackend::tensor_from_device_ptr`] for any dtype: a bf16/f16 tensor over the
    /// caller's 16-bit device memory (a PyTorch `bfloat16` / `float16` tensor's
    /// `data_ptr()`), read as bella's packed layout (element `2i` in the low half of word
    /// `i`, which is the little-endian memory order of two consecutive 16-bit values). A
    /// 16-bit tensor must have an even element count: bella's storage is whole 32-bit words,
    /// and an odd count would reach 2 bytes past the caller's buffer.
    ///
    /// # Safety
    /// As [`CudaBackend::tensor_from_device_ptr`], with `numel(shape) · dtype.size_bytes()` bytes
    /// at `ptr`, 4-byte aligned.
    pub unsafe fn tensor_from_device_ptr_as(
        &self,
        ptr: u64,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let n = crate::tensor::numel(shape);
        if dtype.is_half() && !n.is_multiple_of(2) {
            return Err(BellaError::invalid(format!(
                "a {dtype} tensor over device memory needs an even element count (shape \
                 {shape:?} has {n}): bella's storage is 32-bit words of two values"
            )));
        }
        if !ptr.is_multiple_of(4) {
            return Err(BellaError::invalid(format!(
                "device pointer {ptr:#x} is not 4-byte aligned"
            )));
        }
        let words = unsafe { self.tensor_from_device_ptr(ptr, &[dtype.words(n)])? };
        words.reinterpret(shape, dtype)
    }

    /// The device address of a tensor's data (valid while the tensor lives), so a caller
    /// can read an output in place (e.g. through `__cuda_array_interface__`).
    pub fn device_ptr(&self, t: &Tensor) -> Result<u64> {
        Ok(self.driver().device_ptr(self.buf(t)?))
    }

    /// Run all later work on the caller's stream (a raw `CUstream` as an integer, e.g.
    /// `torch.cuda.current_stream().cuda_stream`; 0 is the legacy default stream), or on
    /// bella's own again with `None`. See [`CudaDriver::set_stream`].
    ///
    /// # Safety
    /// As [`CudaDriver::set_stream`]: a valid stream of the primary context that outlives
    /// the tensors created while it is set.
    pub unsafe fn set_stream(&self, raw: Option<usize>) -> Result<()> {
        unsafe { self.driver().set_stream(raw) }
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
