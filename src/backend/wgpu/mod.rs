//! The wgpu backend: every op of DESIGN.md as a hand-written WGSL compute shader
//! (`shaders/<family>.wgsl`, loaded with `include_str!`), checked against the CPU reference.
//!
//! - Pipelines and bind-group layouts are built once, on first use, and cached
//!   (`kernels::Kernels`); device buffers come from a pool (`pool::Pool`).
//! - Each op encodes all its dispatches into one compute pass and one submission.
//! - Device limits: the device is requested with the adapter's own limits; workgroup
//!   counts past 65535 per dimension are folded into 2-D; a tensor past the storage-binding
//!   limit is refused with an error naming the op. Validation, out-of-memory and internal
//!   errors are captured with error scopes and returned as `BellaError::Device`.
//! - Offsets of `Strided` views and `OutSlot`s travel as uniform parameters (element
//!   offsets), never as binding offsets (which would have to be 256-byte aligned).
//!
//! # f16 in WGSL
//!
//! Where the adapter offers `SHADER_F16`, the device is opened with it and f16 products run
//! `gemm_tiled_f16_native` (`shaders/matmul_f16.wgsl`, `enable f16;`: the operands read as
//! `array<f16>`). Without it — or with `BELLA_WGPU_F16=off` in the environment when the
//! process's device is opened, or a device from [`WgpuBackend::open_with`] with
//! `shader_f16: false` — they run the packed-u32 `gemm_tiled_f16`, which widens with integer
//! operations. bf16 has no WGSL type and always runs packed (`gemm_tiled_bf16`).
//! [`WgpuBackend::shader_f16`] says which; `bella doctor` prints it on the wgpu line.
//!
//! # Kernel timing
//!
//! Where the adapter has `TIMESTAMP_QUERY`, timestamps are written at the start and end of
//! each op's compute pass. Timing is off by default; a bench does:
//!
//! ```no_run
//! # fn main() -> bella::error::Result<()> {
//! let gpu = bella::backend::wgpu::WgpuBackend::new()?;
//! if gpu.set_timing(true) {
//!     // ... run one op ...
//!     let ns: Option<f64> = gpu.time_last_submit_ns();
//! }
//! # Ok(()) }
//! ```
//!
//! `time_last_submit_ns` waits for the last timed submission and returns the GPU time of its
//! compute pass in nanoseconds (`None` without timestamp support or before any timed op).
//!
//! The median of the RBF bandwidth heuristic runs on the host over the downloaded K×K
//! distances (K is small); the distances and the exponentials run on the device.

pub mod abi;
mod activation;
mod cast;
mod gpu;
mod kernels;
mod lora;
mod matmul;
mod optim;
mod pool;
mod softmax;
mod svgd;
#[cfg(test)]
mod tests;

use crate::backend::{
    checks, AdamW, Backend, BackendKind, EnsembleStats, GradTargets, LoraBackwardArgs,
    LoraForwardArgs, MatmulArgs, MemoryBudget,
};
use crate::error::{BellaError, Result};
use crate::tensor::{numel, Storage, Tensor};
use gpu::{Gpu, NAME};
pub use gpu::{OpenOptions, F16_ENV};
use kernels::{Binding, Kernels, Step};
use pool::{Pool, WgpuStorage};
use std::sync::{Arc, Mutex};

/// Shared by the backend and every tensor it made (tensors return buffers to the pool).
pub struct Inner {
    gpu: Gpu,
    pool: Pool,
    kernels: Kernels,
}

/// The wgpu backend. Cheap to clone; all clones share one device.
#[derive(Clone)]
pub struct WgpuBackend {
    ctx: Arc<Inner>,
}

/// One device per process: opening it again returns the same one.
static OPENED: Mutex<Option<WgpuBackend>> = Mutex::new(None);

/// Open the backend, or say why it is not available.
pub fn open() -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(WgpuBackend::new()?))
}

/// True when wgpu finds a hardware (non-CPU) adapter; `auto` prefers those over the CPU.
pub fn has_real_gpu() -> bool {
    gpu::has_real_gpu()
}

impl WgpuBackend {
    /// Open the process's wgpu device (the first call picks the adapter; later calls return
    /// the same one).
    ///
    /// # Errors
    /// [`BellaError::BackendUnavailable`] or [`BellaError::Device`] if no adapter or device
    /// can be had.
    pub fn new() -> Result<WgpuBackend> {
        let mut opened = OPENED
            .lock()
            .map_err(|_| BellaError::device(NAME, "device lock poisoned"))?;
        if let Some(b) = opened.as_ref() {
            return Ok(b.clone());
        }
        let backend = WgpuBackend::open_with(OpenOptions::from_env())?;
        *opened = Some(backend.clone());
        Ok(backend)
    }

    /// A device of its own (not the process's shared one) opened with `options`: e.g.
    /// `shader_f16: false` for the packed-u32 f16 kernel on an adapter that has `SHADER_F16`.
    /// Tensors of one device cannot be used on another.
    ///
    /// # Errors
    /// As [`WgpuBackend::new`].
    pub fn open_with(options: OpenOptions) -> Result<WgpuBackend> {
        Ok(WgpuBackend {
            ctx: Arc::new(Inner {
                gpu: Gpu::open(options)?,
                pool: Pool::default(),
                kernels: Kernels::default(),
            }),
        })
    }

    /// Whether the device has `SHADER_F16`, so that f16 products run the native-f16
    /// `gemm_tiled_f16_native` rather than the packed-u32 `gemm_tiled_f16`.
    pub fn shader_f16(&self) -> bool {
        self.ctx.gpu.shader_f16
    }

    /// Switch kernel timing on or off; returns whether the adapter supports it.
    pub fn set_timing(&self, on: bool) -> bool {
        match &self.ctx.gpu.timer {
            Some(t) => {
                t.set_enabled(on);
                true
            }
            None => false,
        }
    }

    /// GPU nanoseconds of the last timed op's compute pass (see the module docs).
    pub fn time_last_submit_ns(&self) -> Option<f64> {
        let timer = self.ctx.gpu.timer.as_ref()?;
        timer.last_ns(&self.ctx.gpu).ok().flatten()
    }

    /// The adapter's limits as the device was opened with them.
    pub fn limits(&self) -> wgpu::Limits {
        self.ctx.gpu.limits.clone()
    }

    /// How many 128×128 tiles a product needs before the GEMM-family kernels take their
    /// 128-tile variants: on a GPU enough to fill it with 64 workgroups; on a CPU adapter
    /// (lavapipe) any number, since there the bigger register block is faster whenever its
    /// padding costs little (measured: `benches/RESULTS.md`, "WGSL GEMM family").
    fn min_big_tiles(&self) -> usize {
        if self.ctx.gpu.info.device_type == wgpu::DeviceType::Cpu {
            1
        } else {
            64
        }
    }

    fn alloc(&self, len: usize) -> Result<WgpuStorage> {
        WgpuStorage::new(&self.ctx, len)
    }

    /// Copy a storage's values to the host (waits for the device).
    fn read(&self, s: &WgpuStorage) -> Result<Vec<f32>> {
        if s.len() == 0 {
            return Ok(Vec::new());
        }
        let gpu = &self.ctx.gpu;
        let bytes = s.binding_bytes();
        let staging = self.ctx.pool.take(gpu, bytes, pool::READBACK)?;
        let read = gpu.scoped("download", || {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(s.buffer(), 0, &staging, 0, bytes);
            gpu.queue.submit([enc.finish()]);
            let (tx, rx) = std::sync::mpsc::channel();
            staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| drop(tx.send(r)));
            gpu.wait("download")?;
            rx.recv()
                .map_err(|_| BellaError::device(NAME, "download: mapping was dropped"))?
                .map_err(|e| BellaError::device(NAME, format!("download: mapping failed: {e}")))?;
            let mut values = {
                let view = staging
                    .get_mapped_range(..bytes)
                    .map_err(|e| BellaError::device(NAME, format!("download: {e}")))?;
                bytemuck::pod_collect_to_vec::<u8, f32>(&view)
            };
            staging.unmap();
            values.truncate(s.len());
            Ok(values)
        });
        if read.is_ok() {
            self.ctx.pool.give(staging);
        }
        read
    }

    fn run(&self, op: &str, steps: &[Step]) -> Result<()> {
        kernels::run(&self.ctx.gpu, &self.ctx.pool, &self.ctx.kernels, op, steps)
    }
}

/// This backend's storage of `t`, or an error naming the op.
fn storage<'t>(op: &str, t: &'t Tensor) -> Result<&'t WgpuStorage> {
    t.storage()
        .as_any()
        .downcast_ref::<WgpuStorage>()
        .ok_or_else(|| {
            BellaError::invalid(format!(
                "{op}: wgpu backend given a tensor on {}",
                t.device()
            ))
        })
}

/// Exclusive access to `t`'s storage (copy-on-write when shared).
fn storage_mut<'t>(op: &str, t: &'t mut Tensor) -> Result<&'t WgpuStorage> {
    let dev = t.device();
    t.storage_mut()?
        .as_any_mut()
        .downcast_mut::<WgpuStorage>()
        .map(|s| &*s)
        .ok_or_else(|| BellaError::invalid(format!("{op}: wgpu backend given a tensor on {dev}")))
}

fn bind(s: &WgpuStorage) -> Binding<'_> {
    Binding {
        buffer: s.buffer(),
        bytes: s.binding_bytes(),
    }
}

/// A binding for a kernel that reads the storage as `array<vec4<f32>>` (the GEMM family):
/// its size rounded up to 16 bytes, so that the last partial vec4 is addressable. Pooled
/// buffers are at least 256 bytes and a power of two (or a multiple of 256) long, so the
/// rounded binding stays inside the buffer; the kernels never use the padding values.
fn bind4(s: &WgpuStorage) -> Binding<'_> {
    Binding {
        buffer: s.buffer(),
        bytes: s.binding_bytes().div_ceil(16) * 16,
    }
}

fn tensor(shape: &[usize], s: WgpuStorage) -> Result<Tensor> {
    Tensor::from_storage(shape, BackendKind::Wgpu, Box::new(s))
}

impl Backend for WgpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Wgpu
    }

    fn describe(&self) -> String {
        let gpu = &self.ctx.gpu;
        let i = &gpu.info;
        let f16 = match (gpu.shader_f16, gpu.f16_offered) {
            (true, _) => "on",
            (false, true) => "off (offered; BELLA_WGPU_F16=off or open_with)",
            (false, false) => "not offered",
        };
        format!(
            "{} ({:?}, {:?}, driver {} {}; SHADER_F16 {f16})",
            i.name, i.device_type, i.backend, i.driver, i.driver_info
        )
    }

    fn memory_budget(&self) -> MemoryBudget {
        let gpu = &self.ctx.gpu;
        // Allocation is limited by the buffer size; a kernel binding a tensor past the
        // (smaller) storage-binding limit is refused when the op runs.
        let max_buffer = gpu.limits.max_buffer_size;
        if gpu.info.device_type == ::wgpu::DeviceType::Cpu {
            // A CPU adapter (lavapipe) keeps its buffers in host memory.
            MemoryBudget::host(max_buffer)
        } else {
            // wgpu does not report free device memory; the per-buffer limit still holds.
            MemoryBudget {
                total_bytes: u64::MAX,
                max_buffer_bytes: max_buffer,
                source: "unknown for this adapter",
            }
        }
    }

    fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        checks::alloc(
            self.kind(),
            &self.memory_budget(),
            "upload",
            shape,
            Some(data.len()),
        )?;
        let s = self.alloc(data.len())?;
        if !data.is_empty() {
            let gpu = &self.ctx.gpu;
            gpu.scoped("upload", || {
                gpu.queue
                    .write_buffer(s.buffer(), 0, bytemuck::cast_slice(data));
                Ok(())
            })?;
        }
        tensor(shape, s)
    }

    fn download_words(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.read(storage("download", t)?)
    }
    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        checks::alloc(self.kind(), &self.memory_budget(), "zeros", shape, None)?;
        let s = self.alloc(numel(shape))?;
        let gpu = &self.ctx.gpu;
        gpu.scoped("zeros", || {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            enc.clear_buffer(s.buffer(), 0, Some(s.binding_bytes()));
            gpu.queue.submit([enc.finish()]);
            Ok(())
        })?;
        tensor(shape, s)
    }

    fn synchronize(&self) -> Result<()> {
        self.ctx.gpu.wait("synchronize")
    }

    unsafe fn lora_forward_unchecked(&self, args: &LoraForwardArgs) -> Result<(Tensor, Tensor)> {
        lora::forward(self, args)
    }

    unsafe fn lora_backward_unchecked(
        &self,
        args: &LoraBackwardArgs,
        grads: GradTargets<'_>,
    ) -> Result<Option<Tensor>> {
        lora::backward(self, args, grads)
    }

    unsafe fn matmul_unchecked(&self, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
        matmul::matmul(self, args, out)
    }

    unsafe fn lora_forward_half_unchecked(
        &self,
        args: &LoraForwardArgs,
    ) -> Result<(Tensor, Tensor)> {
        lora::forward(self, args)
    }

    unsafe fn matmul_half_unchecked(&self, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
        matmul::matmul_half(self, args, out)
    }

    unsafe fn cast_unchecked(&self, x: &Tensor, to: crate::dtype::DType) -> Result<Tensor> {
        cast::cast(self, x, to)
    }

    unsafe fn pairwise_sqdist_unchecked(
        &self,
        theta: &Tensor,
        k: usize,
        d: usize,
    ) -> Result<Tensor> {
        svgd::pairwise_sqdist(self, theta, k, d)
    }

    unsafe fn rbf_kernel_unchecked(
        &self,
        theta: &Tensor,
        k: usize,
        d: usize,
        bandwidth: Option<f32>,
    ) -> Result<(Tensor, f32)> {
        svgd::rbf_kernel(self, theta, k, d, bandwidth)
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
        svgd::direction(self, theta, score, kernel, k, d, bandwidth)
    }

    unsafe fn adamw_step_unchecked(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamW,
    ) -> Result<()> {
        optim::adamw_step(self, param, grad, m, v, hp)
    }

    unsafe fn relu_forward_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        activation::unary(self, kernels::Kernel::ReluForward, "relu_forward", x)
    }

    unsafe fn relu_backward_unchecked(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        activation::binary(
            self,
            kernels::Kernel::ReluBackward,
            "relu_backward",
            x,
            dy,
            1.0,
            1.0,
        )
    }

    unsafe fn gelu_forward_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        activation::unary(self, kernels::Kernel::GeluForward, "gelu_forward", x)
    }

    unsafe fn gelu_backward_unchecked(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        activation::binary(
            self,
            kernels::Kernel::GeluBackward,
            "gelu_backward",
            x,
            dy,
            1.0,
            1.0,
        )
    }

    unsafe fn softmax_xent_unchecked(
        &self,
        logits: &Tensor,
        labels: &[u32],
        k: usize,
        m: usize,
        c: usize,
    ) -> Result<(Tensor, Tensor)> {
        softmax::xent(self, logits, labels, k, m, c)
    }

    unsafe fn ensemble_stats_unchecked(
        &self,
        logits: &Tensor,
        k: usize,
        m: usize,
        c: usize,
    ) -> Result<EnsembleStats> {
        softmax::ensemble_stats(self, logits, k, m, c)
    }

    unsafe fn axpby_unchecked(
        &self,
        alpha: f32,
        x: &Tensor,
        beta: f32,
        y: &Tensor,
    ) -> Result<Tensor> {
        activation::binary(self, kernels::Kernel::Axpby, "axpby", x, y, alpha, beta)
    }
}
