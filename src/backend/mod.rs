//! The backend surface: one method per op of DESIGN.md, on arguments the op layer
//! (`crate::ops`) has already checked. A backend implements this trait and nothing else;
//! the shared test bodies (`crate::testing`) then check it against the CPU reference.
//!
//! The checked methods of [`Backend`] verify what the kernels rely on (`checks`): shapes
//! agree with the dims given, every `Strided` block fits in its tensor, every tensor lives
//! on this backend, outputs do not alias inputs, outputs fit the memory budget. Backends
//! implement the `unsafe` `*_unchecked` kernels, which may assume all of that.

pub mod checks;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(any(feature = "cuda", feature = "ptx-sim"))]
pub mod ptx;
#[cfg(feature = "ptx-sim")]
pub mod ptx_sim;
#[cfg(feature = "wgpu")]
pub mod wgpu;

pub use checks::MemoryBudget;

use crate::error::{BellaError, Result};
use crate::tensor::{OutSlot, Strided, Tensor};
use std::fmt;
use std::str::FromStr;

/// The four backends of DESIGN.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    Cpu,
    Wgpu,
    Cuda,
    PtxSim,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Cpu,
        BackendKind::Wgpu,
        BackendKind::Cuda,
        BackendKind::PtxSim,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::PtxSim => "ptx-sim",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BellaError;
    fn from_str(s: &str) -> Result<Self> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| BellaError::Unknown {
                what: "backend",
                name: s.to_string(),
            })
    }
}

/// Sizes of one LoRA layer call. `x_shared`: `x` is `[M, I]` for all particles, else `[K, M, I]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraDims {
    pub k: usize,
    pub m: usize,
    pub i: usize,
    pub o: usize,
    pub r: usize,
    pub x_shared: bool,
}

/// `lora_forward`: `y_k = x_k Wᵀ + bias + s·(x_k A_kᵀ) B_kᵀ`, `h_k = x_k A_kᵀ`.
/// `a` blocks are `[r, I]`, `b` blocks are `[O, r]`.
pub struct LoraForwardArgs<'a> {
    pub dims: LoraDims,
    pub x: &'a Tensor,
    pub weight: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    pub a: Strided<'a>,
    pub b: Strided<'a>,
    pub scale: f32,
}

/// `lora_backward`. `d_lora_a` blocks (`[r, I]`) are written at `da`, `d_lora_b` blocks
/// (`[O, r]`) at `db`, both into the one gradient tensor (the `[K, D]` arena in training).
pub struct LoraBackwardArgs<'a> {
    pub dims: LoraDims,
    pub dy: &'a Tensor,
    pub x: &'a Tensor,
    pub weight: &'a Tensor,
    pub a: Strided<'a>,
    pub b: Strided<'a>,
    pub h: &'a Tensor,
    pub scale: f32,
    /// Whether to compute `dx` (the first layer of a network does not need it).
    pub need_dx: bool,
    pub da: OutSlot,
    pub db: OutSlot,
}

/// `matmul`: for each of `batch` blocks, `c = alpha · op(a) op(b)` with `op(a)` `[m, n_inner]`,
/// `op(b)` `[n_inner, n]`, `c` `[m, n]`. Stored `a` is `[n_inner, m]` when `trans_a`,
/// stored `b` is `[n, n_inner]` when `trans_b`. Stride 0 broadcasts a shared operand.
pub struct MatmulArgs<'a> {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub inner: usize,
    pub a: Strided<'a>,
    pub b: Strided<'a>,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub out: OutSlot,
}

/// PyTorch AdamW hyper-parameters for one step (`step` ≥ 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u32,
}

impl AdamW {
    /// Bias corrections `(1 − β1ᵗ, 1 − β2ᵗ)`, computed in f64 on the host so every backend
    /// divides by the same f32 values.
    pub fn bias_corrections(&self) -> (f32, f32) {
        let t = self.step.min(i32::MAX as u32) as i32;
        (
            (1.0 - (self.beta1 as f64).powi(t)) as f32,
            (1.0 - (self.beta2 as f64).powi(t)) as f32,
        )
    }
}

/// Outputs of `ensemble_stats`.
pub struct EnsembleStats {
    pub probs: Tensor,
    pub entropy: Tensor,
    pub expected_entropy: Tensor,
    pub mutual_info: Tensor,
}

/// One method per op. Shapes are given explicitly so that kernels never re-derive them.
///
/// Each op has a checked method, which callers use, and an `unsafe` `*_unchecked` method,
/// which backends implement. The checked method verifies everything the kernel relies on
/// ([`checks`]: sizes agree with the dims given, strided blocks fit their tensors, labels
/// index inside a row, tensors live on this backend, outputs do not alias inputs, the
/// outputs fit the [`MemoryBudget`]) and only then calls the kernel, so no call through
/// this trait reads or writes past a buffer. `crate::ops` checks the full op contract on top.
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// The device in words (adapter name, driver), for `bella doctor` and reports.
    fn describe(&self) -> String;
    /// What may still be allocated; every op's outputs are checked against it first.
    fn memory_budget(&self) -> MemoryBudget;

    /// A tensor of `shape` holding `data` (checked against the shape and the budget).
    fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor>;
    fn download(&self, t: &Tensor) -> Result<Vec<f32>>;
    /// A tensor of zeros (checked against the budget).
    fn zeros(&self, shape: &[usize]) -> Result<Tensor>;
    /// Wait for all queued work (benchmarks time after this).
    fn synchronize(&self) -> Result<()>;

    fn lora_forward(&self, args: &LoraForwardArgs) -> Result<(Tensor, Tensor)> {
        checks::lora_forward(self.kind(), &self.memory_budget(), args)?;
        // SAFETY: the sizes the kernel relies on were checked just above.
        unsafe { self.lora_forward_unchecked(args) }
    }
    /// Writes `d_lora_a`, `d_lora_b` into `grad`; returns `dx` when asked
    /// (`[M, I]` summed over particles for a shared `x`, else `[K, M, I]`).
    fn lora_backward(&self, args: &LoraBackwardArgs, grad: &mut Tensor) -> Result<Option<Tensor>> {
        checks::lora_backward(self.kind(), &self.memory_budget(), args, grad)?;
        // SAFETY: checked above.
        unsafe { self.lora_backward_unchecked(args, grad) }
    }
    /// Writes `c` into `out` at `args.out`.
    fn matmul(&self, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
        checks::matmul(self.kind(), args, out)?;
        // SAFETY: checked above.
        unsafe { self.matmul_unchecked(args, out) }
    }
    /// `theta` is `[k, d]`; returns `[k, k]`.
    fn pairwise_sqdist(&self, theta: &Tensor, k: usize, d: usize) -> Result<Tensor> {
        let budget = self.memory_budget();
        let ts = [("theta", theta)];
        checks::particles(
            self.kind(),
            &budget,
            "pairwise_sqdist",
            &ts,
            (k, d),
            &[("sqdist", &[k, k])],
        )?;
        // SAFETY: checked above.
        unsafe { self.pairwise_sqdist_unchecked(theta, k, d) }
    }
    /// Returns the `[k, k]` kernel and the bandwidth used (median heuristic when `None`).
    fn rbf_kernel(
        &self,
        theta: &Tensor,
        k: usize,
        d: usize,
        bandwidth: Option<f32>,
    ) -> Result<(Tensor, f32)> {
        let budget = self.memory_budget();
        let ts = [("theta", theta)];
        checks::particles(
            self.kind(),
            &budget,
            "rbf_kernel",
            &ts,
            (k, d),
            &[("kernel", &[k, k])],
        )?;
        // SAFETY: checked above.
        unsafe { self.rbf_kernel_unchecked(theta, k, d, bandwidth) }
    }
    fn svgd_direction(
        &self,
        theta: &Tensor,
        score: &Tensor,
        kernel: &Tensor,
        k: usize,
        d: usize,
        bandwidth: f32,
    ) -> Result<Tensor> {
        let budget = self.memory_budget();
        let ts = [("theta", theta), ("score", score)];
        checks::particles(
            self.kind(),
            &budget,
            "svgd_direction",
            &ts,
            (k, d),
            &[("phi", &[k, d])],
        )?;
        checks::svgd_kernel_matrix(self.kind(), kernel, k, bandwidth)?;
        // SAFETY: checked above.
        unsafe { self.svgd_direction_unchecked(theta, score, kernel, k, d, bandwidth) }
    }
    /// Updates `param`, `m`, `v` in place.
    fn adamw_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamW,
    ) -> Result<()> {
        checks::adamw(self.kind(), param, grad, m, v, hp.step)?;
        // SAFETY: checked above.
        unsafe { self.adamw_step_unchecked(param, grad, m, v, hp) }
    }
    fn relu_forward(&self, x: &Tensor) -> Result<Tensor> {
        checks::same_len(
            self.kind(),
            &self.memory_budget(),
            "relu_forward",
            &[("x", x)],
        )?;
        // SAFETY: checked above.
        unsafe { self.relu_forward_unchecked(x) }
    }
    fn relu_backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let ts = [("x", x), ("dy", dy)];
        checks::same_len(self.kind(), &self.memory_budget(), "relu_backward", &ts)?;
        // SAFETY: checked above.
        unsafe { self.relu_backward_unchecked(x, dy) }
    }
    fn gelu_forward(&self, x: &Tensor) -> Result<Tensor> {
        checks::same_len(
            self.kind(),
            &self.memory_budget(),
            "gelu_forward",
            &[("x", x)],
        )?;
        // SAFETY: checked above.
        unsafe { self.gelu_forward_unchecked(x) }
    }
    fn gelu_backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let ts = [("x", x), ("dy", dy)];
        checks::same_len(self.kind(), &self.memory_budget(), "gelu_backward", &ts)?;
        // SAFETY: checked above.
        unsafe { self.gelu_backward_unchecked(x, dy) }
    }
    /// `logits` `[k, m, c]`, `m` labels each `< c`. Returns `loss [k]`, `dlogits`.
    fn softmax_xent(
        &self,
        logits: &Tensor,
        labels: &[u32],
        k: usize,
        m: usize,
        c: usize,
    ) -> Result<(Tensor, Tensor)> {
        let budget = self.memory_budget();
        checks::logits(
            self.kind(),
            &budget,
            "softmax_xent",
            logits,
            Some(labels),
            (k, m, c),
        )?;
        // SAFETY: checked above.
        unsafe { self.softmax_xent_unchecked(logits, labels, k, m, c) }
    }
    fn ensemble_stats(
        &self,
        logits: &Tensor,
        k: usize,
        m: usize,
        c: usize,
    ) -> Result<EnsembleStats> {
        let budget = self.memory_budget();
        checks::logits(
            self.kind(),
            &budget,
            "ensemble_stats",
            logits,
            None,
            (k, m, c),
        )?;
        // SAFETY: checked above.
        unsafe { self.ensemble_stats_unchecked(logits, k, m, c) }
    }
    /// Utility (not one of DESIGN.md's ten): `out = alpha·x + beta·y`, elementwise. Training
    /// uses it to form SVGD scores and to add broadcast biases.
    fn axpby(&self, alpha: f32, x: &Tensor, beta: f32, y: &Tensor) -> Result<Tensor> {
        checks::same_len(
            self.kind(),
            &self.memory_budget(),
            "axpby",
            &[("x", x), ("y", y)],
        )?;
        // SAFETY: checked above.
        unsafe { self.axpby_unchecked(alpha, x, beta, y) }
    }

    // The kernels. Callers use the checked methods above.

    /// # Safety
    /// `args` passed [`checks`]: the sizes agree with `args.dims`, the views fit, every
    /// tensor is on this backend. (So for every `*_unchecked` method below.)
    unsafe fn lora_forward_unchecked(&self, args: &LoraForwardArgs) -> Result<(Tensor, Tensor)>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn lora_backward_unchecked(
        &self,
        args: &LoraBackwardArgs,
        grad: &mut Tensor,
    ) -> Result<Option<Tensor>>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn matmul_unchecked(&self, args: &MatmulArgs, out: &mut Tensor) -> Result<()>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn pairwise_sqdist_unchecked(
        &self,
        theta: &Tensor,
        k: usize,
        d: usize,
    ) -> Result<Tensor>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn rbf_kernel_unchecked(
        &self,
        theta: &Tensor,
        k: usize,
        d: usize,
        bandwidth: Option<f32>,
    ) -> Result<(Tensor, f32)>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn svgd_direction_unchecked(
        &self,
        theta: &Tensor,
        score: &Tensor,
        kernel: &Tensor,
        k: usize,
        d: usize,
        bandwidth: f32,
    ) -> Result<Tensor>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn adamw_step_unchecked(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamW,
    ) -> Result<()>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn relu_forward_unchecked(&self, x: &Tensor) -> Result<Tensor>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn relu_backward_unchecked(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn gelu_forward_unchecked(&self, x: &Tensor) -> Result<Tensor>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn gelu_backward_unchecked(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn softmax_xent_unchecked(
        &self,
        logits: &Tensor,
        labels: &[u32],
        k: usize,
        m: usize,
        c: usize,
    ) -> Result<(Tensor, Tensor)>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn ensemble_stats_unchecked(
        &self,
        logits: &Tensor,
        k: usize,
        m: usize,
        c: usize,
    ) -> Result<EnsembleStats>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn axpby_unchecked(
        &self,
        alpha: f32,
        x: &Tensor,
        beta: f32,
        y: &Tensor,
    ) -> Result<Tensor>;
}

/// Open one backend, or say why it is not available (not compiled in, no device, no driver).
pub fn open(kind: BackendKind) -> Result<std::sync::Arc<dyn Backend>> {
    match kind {
        BackendKind::Cpu => Ok(std::sync::Arc::new(cpu::CpuBackend::new())),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => wgpu::open(),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => cuda::open(),
        #[cfg(feature = "ptx-sim")]
        BackendKind::PtxSim => ptx_sim::open(),
        #[allow(unreachable_patterns)]
        other => Err(BellaError::unavailable(
            other.name(),
            format!("not compiled in (build with `--features {}`)", other.name()),
        )),
    }
}

/// `auto`: CUDA if a driver and device are present, else wgpu on a real GPU, else the CPU.
pub fn open_auto() -> std::sync::Arc<dyn Backend> {
    if let Ok(b) = open(BackendKind::Cuda) {
        return b;
    }
    #[cfg(feature = "wgpu")]
    if wgpu::has_real_gpu() {
        if let Ok(b) = open(BackendKind::Wgpu) {
            return b;
        }
    }
    std::sync::Arc::new(cpu::CpuBackend::new())
}

/// Parse `cpu|wgpu|cuda|ptx-sim|auto` and open it.
pub fn open_named(name: &str) -> Result<std::sync::Arc<dyn Backend>> {
    if name == "auto" {
        return Ok(open_auto());
    }
    open(name.parse()?)
}
