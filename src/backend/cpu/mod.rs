//! The CPU backend: the reference every other backend is checked against, and the fallback
//! on machines without a GPU. Readable first; the big products go through the `gemm` crate's
//! AVX-512 kernels (else `matrixmultiply`), the memory-bound passes through hand-vectorised
//! kernels with the instruction set picked at run time (`simd`), and particles/rows run in
//! parallel with rayon.

mod activation;
mod cast;
mod gemm;
mod lora;
mod matmul;
mod optim;
mod simd;
mod softmax;
mod svgd;
mod transpose;

pub use gemm::gemm;

use crate::backend::{
    checks, AdamW, Backend, BackendKind, EnsembleStats, GradTargets, LoraBackwardArgs,
    LoraForwardArgs, MatmulArgs, MemoryBudget,
};
use crate::error::{BellaError, Result};
use crate::tensor::{Storage, Tensor};
use std::any::Any;

/// Host memory: a plain vector.
pub struct CpuStorage(pub Vec<f32>);

/// Big buffers are handed back to `output_buffer` instead of the allocator (see there).
impl Drop for CpuStorage {
    fn drop(&mut self) {
        if self.0.capacity() >= RECYCLE_MIN {
            let v = std::mem::take(&mut self.0);
            *RECYCLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        }
    }
}

/// Buffers of at least this many f32 (8 MiB) are recycled.
const RECYCLE_MIN: usize = 2 << 20;
/// The most recently freed big buffer, if any: one, so at most one idle buffer is held.
static RECYCLED: std::sync::Mutex<Option<Vec<f32>>> = std::sync::Mutex::new(None);

/// An empty vector with room for `n` f32 that the caller will write in full.
///
/// Big outputs reuse the last big buffer a CPU tensor freed when it has room (and is not
/// over twice the size): glibc returns such buffers to the kernel at once, and faulting a
/// fresh 64 MiB back in (the kernel zeroes every page) cost about as much as a whole pass
/// over it, once per SVGD step for φ. Fresh big ones ask Linux for transparent huge pages
/// before the first touch: faulting 64 MiB in by 4 KiB page took longer than the whole
/// SVGD direction pass (about 90 ms against 16 ms with 2 MiB pages).
pub(crate) fn output_buffer(n: usize) -> Vec<f32> {
    if n >= RECYCLE_MIN {
        let mut slot = RECYCLED.lock().unwrap_or_else(|e| e.into_inner());
        if slot
            .as_ref()
            .is_some_and(|v| (n..=2 * n).contains(&v.capacity()))
        {
            let mut v = slot.take().unwrap();
            v.clear();
            return v;
        }
    }
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

impl Storage for CpuStorage {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn duplicate(&self) -> Result<Box<dyn Storage>> {
        Ok(Box::new(CpuStorage(self.0.clone())))
    }
}

/// The data of a CPU tensor (errors if the tensor lives elsewhere).
pub fn data(t: &Tensor) -> Result<&[f32]> {
    t.storage()
        .as_any()
        .downcast_ref::<CpuStorage>()
        .map(|s| s.0.as_slice())
        .ok_or_else(|| wrong_device(t))
}

/// Mutable data of a CPU tensor (copy-on-write if shared).
pub fn data_mut(t: &mut Tensor) -> Result<&mut [f32]> {
    let dev = t.device();
    t.storage_mut()?
        .as_any_mut()
        .downcast_mut::<CpuStorage>()
        .map(|s| s.0.as_mut_slice())
        .ok_or_else(|| BellaError::invalid(format!("cpu backend given a tensor on {dev}")))
}

fn wrong_device(t: &Tensor) -> BellaError {
    BellaError::invalid(format!("cpu backend given a tensor on {}", t.device()))
}

/// Wrap host data as a CPU tensor.
pub fn tensor(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
    Tensor::from_storage(shape, BackendKind::Cpu, Box::new(CpuStorage(data)))
}

/// The CPU backend: every op on host memory (GEMMs through a well-kept GEMM crate, particles
/// and rows in parallel with rayon). Always present; the fallback without a GPU.
#[derive(Default, Clone, Copy)]
pub struct CpuBackend;

impl CpuBackend {
    /// The CPU backend (no state: every instance is the same).
    pub fn new() -> Self {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }
    fn describe(&self) -> String {
        format!("CPU, {} threads (rayon)", rayon::current_num_threads())
    }
    fn memory_budget(&self) -> MemoryBudget {
        MemoryBudget::host(isize::MAX as u64)
    }
    fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        checks::alloc(
            self.kind(),
            &self.memory_budget(),
            "upload",
            shape,
            Some(data.len()),
        )?;
        tensor(shape, data.to_vec())
    }
    fn download_words(&self, t: &Tensor) -> Result<Vec<f32>> {
        Ok(data(t)?.to_vec())
    }
    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        checks::alloc(self.kind(), &self.memory_budget(), "zeros", shape, None)?;
        tensor(shape, vec![0.0; crate::tensor::numel(shape)])
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    unsafe fn lora_forward_unchecked(&self, args: &LoraForwardArgs) -> Result<(Tensor, Tensor)> {
        lora::forward(args)
    }
    unsafe fn lora_backward_unchecked(
        &self,
        args: &LoraBackwardArgs,
        grads: GradTargets<'_>,
    ) -> Result<Option<Tensor>> {
        lora::backward(args, grads)
    }
    unsafe fn matmul_unchecked(&self, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
        matmul::matmul(args, out)
    }
    unsafe fn pairwise_sqdist_unchecked(
        &self,
        theta: &Tensor,
        k: usize,
        d: usize,
    ) -> Result<Tensor> {
        tensor(&[k, k], svgd::pairwise_sqdist(data(theta)?, k, d))
    }
    unsafe fn rbf_kernel_unchecked(
        &self,
        theta: &Tensor,
        k: usize,
        d: usize,
        bandwidth: Option<f32>,
    ) -> Result<(Tensor, f32)> {
        let sq = svgd::pairwise_sqdist(data(theta)?, k, d);
        let (kern, h) = svgd::rbf_from_sqdist(&sq, k, bandwidth);
        Ok((tensor(&[k, k], kern)?, h))
    }
    unsafe fn svgd_direction_unchecked(
        &self,
        theta: &Tensor,
        score: &Tensor,
        kernel: &Tensor,
        k: usize,
        d: usize,
        bandwidth: f32,
    ) -> Result<Tensor> {
        let phi = svgd::direction(data(theta)?, data(score)?, data(kernel)?, k, d, bandwidth);
        tensor(&[k, d], phi)
    }
    unsafe fn adamw_step_unchecked(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamW,
    ) -> Result<()> {
        optim::adamw(
            data_mut(param)?,
            data(grad)?,
            data_mut(m)?,
            data_mut(v)?,
            hp,
        );
        Ok(())
    }
    unsafe fn relu_forward_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        tensor(x.shape(), activation::map(data(x)?, activation::relu))
    }
    unsafe fn relu_backward_unchecked(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dx = activation::zip(data(x)?, data(dy)?, activation::relu_grad);
        tensor(x.shape(), dx)
    }
    unsafe fn gelu_forward_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        tensor(x.shape(), activation::map(data(x)?, activation::gelu))
    }
    unsafe fn gelu_backward_unchecked(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let dx = activation::zip(data(x)?, data(dy)?, activation::gelu_grad);
        tensor(x.shape(), dx)
    }
    unsafe fn softmax_xent_unchecked(
        &self,
        logits: &Tensor,
        labels: &[u32],
        k: usize,
        m: usize,
        c: usize,
    ) -> Result<(Tensor, Tensor)> {
        let (loss, dlogits) = softmax::xent(data(logits)?, labels, k, m, c);
        Ok((tensor(&[k], loss)?, tensor(&[k, m, c], dlogits)?))
    }
    unsafe fn ensemble_stats_unchecked(
        &self,
        logits: &Tensor,
        k: usize,
        m: usize,
        c: usize,
    ) -> Result<EnsembleStats> {
        let s = softmax::ensemble_stats(data(logits)?, k, m, c);
        Ok(EnsembleStats {
            probs: tensor(&[m, c], s.probs)?,
            entropy: tensor(&[m], s.entropy)?,
            expected_entropy: tensor(&[m], s.expected_entropy)?,
            mutual_info: tensor(&[m], s.mutual_info)?,
        })
    }
    unsafe fn axpby_unchecked(
        &self,
        alpha: f32,
        x: &Tensor,
        beta: f32,
        y: &Tensor,
    ) -> Result<Tensor> {
        let out = activation::zip(data(x)?, data(y)?, |a, b| alpha * a + beta * b);
        tensor(x.shape(), out)
    }
    unsafe fn cast_unchecked(&self, x: &Tensor, to: crate::dtype::DType) -> Result<Tensor> {
        cast::cast(x, to)
    }
}
