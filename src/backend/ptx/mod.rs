//! Host launch code for the hand-written PTX in `kernels/`, written once against the
//! [`driver::Driver`] surface: the CUDA backend and the PTX simulator both run it.
//!
//! One file per kernel family (the same names as `kernels/`): each computes its launch
//! configuration from the shapes and the device properties and passes the kernel's
//! parameters by name (`PtxBackend::launch_named`), put in `.param` order by
//! `kernels/abi.json` ([`abi`]), so each parameter list is stated once, in the ABI (which a
//! test holds equal to the `.entry` signatures). Every launch is checked against it.
pub mod abi;
pub mod driver;

mod activation;
mod cast;
mod gemm;
pub mod gemm_mma;
mod lora;
pub mod lora_mma;
mod lora_mma_backward;
mod modules;
mod optim;
mod softmax;
mod storage;
mod svgd;
#[cfg(all(test, feature = "ptx-sim"))]
mod tests;

pub use storage::PtxStorage;

use crate::backend::{
    checks, AdamW, Backend, BackendKind, EnsembleStats, GradTargets, LoraBackwardArgs,
    LoraForwardArgs, MatmulArgs, MemoryBudget,
};
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::{numel, Tensor};
use driver::{Driver, LaunchConfig, Param};
use std::sync::Arc;

/// Every op of DESIGN.md on a [`Driver`]: real CUDA or the PTX simulator.
pub struct PtxBackend<D: Driver> {
    driver: Arc<D>,
}

impl<D: Driver> PtxBackend<D> {
    /// Loads every `kernels/*.ptx` module once; a module the driver rejects is an error
    /// naming it.
    pub fn new(driver: D) -> Result<Self> {
        for (name, src) in modules::MODULES {
            driver.load_module(name, src)?;
        }
        Ok(PtxBackend {
            driver: Arc::new(driver),
        })
    }

    /// The driver the kernels run on.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    fn name(&self) -> &'static str {
        self.driver.kind().name()
    }

    /// The device buffer of a tensor of this backend.
    pub(crate) fn buf<'t>(&self, t: &'t Tensor) -> Result<&'t D::Buf> {
        t.storage()
            .as_any()
            .downcast_ref::<PtxStorage<D>>()
            .map(|s| &s.buf)
            .ok_or_else(|| self.wrong_device(t))
    }

    /// The device buffer of a tensor about to be written in place (copied first if shared).
    pub(crate) fn buf_mut<'t>(&self, t: &'t mut Tensor) -> Result<&'t D::Buf> {
        let err = self.wrong_device(t);
        t.storage_mut()?
            .as_any_mut()
            .downcast_mut::<PtxStorage<D>>()
            .map(|s| &s.buf)
            .ok_or(err)
    }

    fn wrong_device(&self, t: &Tensor) -> BellaError {
        BellaError::invalid(format!(
            "{} backend given a tensor on {}",
            self.name(),
            t.device()
        ))
    }

    /// A fresh zero-filled device allocation of `len` elements.
    pub(crate) fn storage(&self, len: usize) -> Result<PtxStorage<D>> {
        modules::u32_of(self.name(), "tensor size", len)?;
        Ok(PtxStorage {
            buf: self.driver.alloc_zeroed(len)?,
            len,
            driver: self.driver.clone(),
        })
    }

    /// A tensor of `shape` over a buffer the driver made (e.g. the caller's memory).
    #[cfg(feature = "cuda")]
    pub(crate) fn tensor_over(&self, shape: &[usize], buf: D::Buf) -> Result<Tensor> {
        let len = numel(shape);
        modules::u32_of(self.name(), "tensor size", len)?;
        let s = PtxStorage {
            buf,
            len,
            driver: self.driver.clone(),
        };
        self.tensor(shape, s)
    }

    pub(crate) fn tensor(&self, shape: &[usize], s: PtxStorage<D>) -> Result<Tensor> {
        Tensor::from_storage(shape, self.driver.kind(), Box::new(s))
    }

    /// Launches `kernel` of `module` with `params` in `.param` order, after checking them
    /// against the kernel's entry in `kernels/abi.json` (count and types).
    pub(crate) fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: LaunchConfig,
        params: &[Param<'_, D::Buf>],
    ) -> Result<()> {
        abi::check(module, kernel, params)?;
        self.driver.launch(module, kernel, cfg, params)
    }

    /// [`Self::launch`] with named arguments (the PTX parameter names, `p_...`), put in
    /// order by `kernels/abi.json`: every parameter exactly once.
    pub(crate) fn launch_named(
        &self,
        module: &str,
        kernel: &str,
        cfg: LaunchConfig,
        named: Vec<(&str, Param<'_, D::Buf>)>,
    ) -> Result<()> {
        let params = abi::order_named(kernel, named)?;
        self.launch(module, kernel, cfg, &params)
    }

    pub(crate) fn props(&self) -> &driver::DeviceProps {
        self.driver.props()
    }
}

/// A whole buffer as a kernel pointer argument.
pub(crate) fn ptr<B>(buf: &B) -> Param<'_, B> {
    Param::Ptr {
        buf,
        byte_offset: 0,
    }
}

/// A buffer from element `offset` on, as a kernel pointer argument.
pub(crate) fn ptr_at<B>(buf: &B, offset: usize) -> Param<'_, B> {
    Param::Ptr {
        buf,
        byte_offset: offset * std::mem::size_of::<f32>(),
    }
}

impl<D: Driver> Backend for PtxBackend<D> {
    fn kind(&self) -> BackendKind {
        self.driver.kind()
    }

    fn describe(&self) -> String {
        let p = self.driver.props();
        format!("{} ({} SMs), hand-written PTX", p.name, p.sm_count)
    }

    fn memory_budget(&self) -> MemoryBudget {
        self.driver.memory_budget()
    }

    fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        checks::alloc(
            self.kind(),
            &self.memory_budget(),
            "upload",
            shape,
            Some(data.len()),
        )?;
        modules::u32_of(self.name(), "tensor size", data.len())?;
        let s = PtxStorage {
            buf: self.driver.upload(data)?,
            len: data.len(),
            driver: self.driver.clone(),
        };
        self.tensor(shape, s)
    }

    fn download_words(&self, t: &Tensor) -> Result<Vec<f32>> {
        let words = t.dtype().words(t.numel());
        if words == 0 {
            return Ok(Vec::new());
        }
        self.driver.download(self.buf(t)?, words)
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        checks::alloc(self.kind(), &self.memory_budget(), "zeros", shape, None)?;
        let s = self.storage(numel(shape))?;
        self.tensor(shape, s)
    }

    fn synchronize(&self) -> Result<()> {
        self.driver.synchronize()
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
        gemm::matmul(self, args, out)
    }

    unsafe fn lora_forward_half_unchecked(
        &self,
        args: &LoraForwardArgs,
    ) -> Result<(Tensor, Tensor)> {
        if lora_mma::covers(args) {
            lora_mma::forward(self, args)
        } else {
            // SAFETY: the caller's contract is this function's.
            unsafe { crate::backend::lora_forward_half_widened(self, args) }
        }
    }

    unsafe fn lora_backward_half_unchecked(
        &self,
        args: &LoraBackwardArgs,
        grads: GradTargets<'_>,
    ) -> Result<Option<Tensor>> {
        if lora_mma_backward::covers(args) {
            lora_mma_backward::backward(self, args, grads)
        } else {
            // SAFETY: the caller's contract is this function's.
            unsafe { crate::backend::lora_backward_half_widened(self, args, grads) }
        }
    }

    unsafe fn cast_unchecked(&self, x: &Tensor, to: DType) -> Result<Tensor> {
        cast::cast(self, x, to)
    }

    unsafe fn matmul_half_unchecked(&self, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
        if gemm_mma::covers(args) {
            gemm_mma::matmul(self, args, out)
        } else {
            // SAFETY: the caller's contract is this function's.
            unsafe { crate::backend::matmul_half_widened(self, args, out) }
        }
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
        optim::adamw(self, param, grad, m, v, hp)
    }

    unsafe fn svgd_step_unchecked(
        &self,
        theta: &mut Tensor,
        score: &Tensor,
        kernel: &Tensor,
        (k, d): (usize, usize),
        bandwidth: f32,
        grad_scale: f32,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamW,
    ) -> Result<()> {
        if k > svgd::TILED_MAX_K {
            // No fused kernel past the tiled direction's K: the two ops.
            // SAFETY: this function's contract.
            return unsafe {
                crate::backend::svgd_step_two_ops(
                    self,
                    theta,
                    score,
                    kernel,
                    (k, d),
                    bandwidth,
                    grad_scale,
                    m,
                    v,
                    hp,
                )
            };
        }
        let step = svgd::FusedStep {
            grad_scale,
            hp,
            m,
            v,
        };
        svgd::step(self, theta, score, kernel, (k, d), bandwidth, step)
    }

    unsafe fn relu_forward_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        activation::unary(self, "relu_forward", x)
    }

    unsafe fn relu_backward_unchecked(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        activation::binary(self, "relu_backward", x, dy)
    }

    unsafe fn gelu_forward_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        activation::unary(self, "gelu_forward", x)
    }

    unsafe fn gelu_backward_unchecked(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        activation::binary(self, "gelu_backward", x, dy)
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
        activation::axpby(self, alpha, x, beta, y)
    }
}
