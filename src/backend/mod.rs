//! The backend surface: one method per op of DESIGN.md, on arguments the op layer
//! (`crate::ops`) has already checked. A backend implements this trait and nothing else;
//! the shared test bodies (`crate::testing`) then check it against the CPU reference.
//!
//! The checked methods of [`Backend`] verify what the kernels rely on (`checks`): shapes
//! agree with the dims given, every `Strided` block fits in its tensor, every tensor lives
//! on this backend, outputs do not alias inputs, outputs fit the memory budget. Backends
//! implement the `unsafe` `*_unchecked` kernels, which may assume all of that.

mod bandwidth;
pub mod checks;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod lora_half;
#[cfg(any(feature = "cuda", feature = "ptx-sim"))]
pub mod ptx;
#[cfg(feature = "ptx-sim")]
pub mod ptx_sim;
#[cfg(feature = "wgpu")]
pub mod wgpu;

pub use crate::device::BackendKind;
pub use bandwidth::median_bandwidth;
pub use checks::MemoryBudget;

use crate::dtype::{pack_bits, unpack_bits, DType};
use crate::error::{BellaError, Result};
use crate::tensor::{numel, OutSlot, Strided, Tensor};

/// Sizes of one LoRA layer call. `x_shared`: `x` is `[M, I]` for all particles, else `[K, M, I]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraDims {
    /// Particles K.
    pub k: usize,
    /// Rows M of `x` per particle.
    pub m: usize,
    /// Input features I.
    pub i: usize,
    /// Output features O.
    pub o: usize,
    /// Adapter rank r.
    pub r: usize,
    /// `x` is one `[M, I]` for all particles (else `[K, M, I]`).
    pub x_shared: bool,
}

/// `lora_forward`: `y_k = x_k Wᵀ + bias + s·(x_k A_kᵀ) B_kᵀ`, `h_k = x_k A_kᵀ`.
/// `a` blocks are `[r, I]`, `b` blocks are `[O, r]`. Built by [`crate::ops::lora_forward`].
pub struct LoraForwardArgs<'a> {
    /// The layer's sizes; every tensor below agrees with them.
    pub dims: LoraDims,
    /// `[M, I]` if `dims.x_shared`, else `[K, M, I]`.
    pub x: &'a Tensor,
    /// The frozen `W0`, `[O, I]`.
    pub weight: &'a Tensor,
    /// `[O]`, added to every row.
    pub bias: Option<&'a Tensor>,
    /// `lora_a` blocks, `[r, I]` per particle.
    pub a: Strided<'a>,
    /// `lora_b` blocks, `[O, r]` per particle.
    pub b: Strided<'a>,
    /// The LoRA scale `s = alpha / r`.
    pub scale: f32,
}

/// `lora_backward`. `d_lora_a` blocks (`[r, I]`) are written at `da`, `d_lora_b` blocks
/// (`[O, r]`) at `db`, into the tensors [`GradTargets`] names: one gradient tensor (the
/// `[K, D]` arena in training) or one tensor each.
pub struct LoraBackwardArgs<'a> {
    /// The layer's sizes; every tensor below agrees with them.
    pub dims: LoraDims,
    /// Upstream gradient `[K, M, O]`.
    pub dy: &'a Tensor,
    /// The forward's input: `[M, I]` if `dims.x_shared`, else `[K, M, I]`.
    pub x: &'a Tensor,
    /// The frozen `W0`, `[O, I]`.
    pub weight: &'a Tensor,
    /// `lora_a` blocks, `[r, I]` per particle.
    pub a: Strided<'a>,
    /// `lora_b` blocks, `[O, r]` per particle.
    pub b: Strided<'a>,
    /// The forward's `h = x_k A_kᵀ`, `[K, M, r]`.
    pub h: &'a Tensor,
    /// The LoRA scale `s`.
    pub scale: f32,
    /// Whether to compute `dx` (the first layer of a network does not need it).
    pub need_dx: bool,
    /// Where particle k's `d_lora_a` block goes in the gradient tensor.
    pub da: OutSlot,
    /// Where particle k's `d_lora_b` block goes in the gradient tensor.
    pub db: OutSlot,
}

/// Where [`Backend::lora_backward`] writes the adapter gradients, on the device: the slots
/// are [`LoraBackwardArgs::da`] and [`LoraBackwardArgs::db`].
pub enum GradTargets<'a> {
    /// Both into one tensor (training's `[K, D]` gradient arena: particle k's row holds its
    /// `d_lora_a` block, then its `d_lora_b` block); the rest of it is left as it was.
    Arena(&'a mut Tensor),
    /// `d_lora_a` into the first tensor, `d_lora_b` into the second (two distinct storages:
    /// for example `[K, r, I]` and `[K, O, r]` with slots `{0, r·I}` and `{0, O·r}`).
    Split(&'a mut Tensor, &'a mut Tensor),
}

impl GradTargets<'_> {
    /// The tensors written: `(d_lora_a's, d_lora_b's)`, the same one twice for an arena.
    pub fn tensors(&self) -> (&Tensor, &Tensor) {
        match self {
            GradTargets::Arena(g) => (g, g),
            GradTargets::Split(a, b) => (a, b),
        }
    }
}

/// `matmul`: for each of `batch` blocks, `c = alpha · op(a) op(b)` with `op(a)` `[m, n_inner]`,
/// `op(b)` `[n_inner, n]`, `c` `[m, n]`. Stored `a` is `[n_inner, m]` when `trans_a`,
/// stored `b` is `[n, n_inner]` when `trans_b`. Stride 0 broadcasts a shared operand.
pub struct MatmulArgs<'a> {
    /// Number of products.
    pub batch: usize,
    /// Rows of `op(a)` and `c`.
    pub m: usize,
    /// Columns of `op(b)` and `c`.
    pub n: usize,
    /// The shared dimension (`n_inner`).
    pub inner: usize,
    /// `a` blocks as stored (`[m, inner]`, or `[inner, m]` when `trans_a`).
    pub a: Strided<'a>,
    /// `b` blocks as stored (`[inner, n]`, or `[n, inner]` when `trans_b`).
    pub b: Strided<'a>,
    /// Use `aᵀ`.
    pub trans_a: bool,
    /// Use `bᵀ`.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Where block k of `c` (`[m, n]`) is written in the output tensor.
    pub out: OutSlot,
}

/// PyTorch AdamW hyper-parameters for one step (`step` ≥ 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay `β1`, in `[0, 1)`.
    pub beta1: f32,
    /// Second-moment decay `β2`, in `[0, 1)`.
    pub beta2: f32,
    /// Added to `√v̂` in the denominator.
    pub eps: f32,
    /// Decoupled weight decay `wd`: `param` is scaled by `1 − lr·wd` each step.
    pub weight_decay: f32,
    /// The step count `t`, starting at 1 (the bias corrections use it).
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

/// Outputs of [`ensemble_stats`](crate::ops::ensemble_stats). Entropies in nats.
pub struct EnsembleStats {
    /// `[M, C]`: the mean over particles of the softmax.
    pub probs: Tensor,
    /// `[M]`: the entropy of `probs` (total uncertainty).
    pub entropy: Tensor,
    /// `[M]`: the mean of the particles' own entropies.
    pub expected_entropy: Tensor,
    /// `[M]`: `entropy − expected_entropy`, the particles' disagreement.
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
///
/// The checked methods return [`BellaError::Invalid`] for arguments that break those
/// rules and [`BellaError::Device`] for outputs over the budget or a device failure; their
/// semantics are the op contracts documented on the functions of [`crate::ops`].
pub trait Backend: Send + Sync {
    /// Which backend this is; every tensor it makes carries this kind.
    fn kind(&self) -> BackendKind;
    /// The device in words (adapter name, driver), for `bella doctor` and reports.
    fn describe(&self) -> String;
    /// What may still be allocated; every op's outputs are checked against it first.
    fn memory_budget(&self) -> MemoryBudget;

    /// An f32 tensor of `shape` holding `data` (checked against the shape and the budget).
    fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor>;
    /// The tensor's storage words, copied to the host (waits for queued work): its values
    /// for an f32 tensor, the packed pairs of [`crate::dtype`] (as f32 bit patterns) for a
    /// bf16/f16 one. Callers use [`Backend::download`] / [`Backend::download_bits`].
    fn download_words(&self, t: &Tensor) -> Result<Vec<f32>>;
    /// The tensor's values as f32, row-major, copied to the host (waits for queued work);
    /// a bf16/f16 tensor's values are widened exactly.
    fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        match t.dtype() {
            DType::F32 => self.download_words(t),
            half => Ok(self
                .download_bits(t)?
                .into_iter()
                .map(|b| half.widen_bits(b))
                .collect()),
        }
    }
    /// A bf16/f16 tensor of `shape` from the bits of its elements (row-major).
    fn upload_bits(&self, shape: &[usize], dtype: DType, bits: &[u16]) -> Result<Tensor> {
        if !dtype.is_half() || bits.len() != numel(shape) {
            return Err(BellaError::invalid(format!(
                "upload_bits: {} values for a {dtype} tensor of shape {shape:?} (a 16-bit \
                 dtype and one value per element)",
                bits.len()
            )));
        }
        let words: Vec<f32> = pack_bits(bits).into_iter().map(f32::from_bits).collect();
        self.upload(&[words.len()], &words)?
            .reinterpret(shape, dtype)
    }
    /// A tensor of `shape` and `dtype` holding `data` rounded to `dtype` on the host (the
    /// rule of [`crate::dtype`]); f32 is [`Backend::upload`].
    fn upload_as(&self, shape: &[usize], dtype: DType, data: &[f32]) -> Result<Tensor> {
        match dtype {
            DType::F32 => self.upload(shape, data),
            half => {
                let bits: Vec<u16> = data.iter().map(|&x| half.round_bits(x)).collect();
                self.upload_bits(shape, half, &bits)
            }
        }
    }
    /// The bits of a bf16/f16 tensor's elements, row-major (waits for queued work).
    fn download_bits(&self, t: &Tensor) -> Result<Vec<u16>> {
        if !t.dtype().is_half() {
            return Err(BellaError::invalid(format!(
                "download_bits: the tensor is {}, not bf16/f16",
                t.dtype()
            )));
        }
        let words: Vec<u32> = self
            .download_words(&t.words_view())?
            .into_iter()
            .map(f32::to_bits)
            .collect();
        Ok(unpack_bits(&words, t.numel()))
    }
    /// A tensor of zeros (checked against the budget).
    fn zeros(&self, shape: &[usize]) -> Result<Tensor>;
    /// Wait for all queued work (benchmarks time after this).
    fn synchronize(&self) -> Result<()>;

    /// [`lora_forward`](crate::ops::lora_forward) on checked sizes: returns `(y, h)`,
    /// `y [K, M, O]`, `h [K, M, r]`.
    fn lora_forward(&self, args: &LoraForwardArgs) -> Result<(Tensor, Tensor)> {
        checks::lora_forward(self.kind(), &self.memory_budget(), args)?;
        // SAFETY: the sizes the kernel relies on were checked just above.
        unsafe {
            if args.x.dtype().is_half() {
                self.lora_forward_half_unchecked(args)
            } else {
                self.lora_forward_unchecked(args)
            }
        }
    }
    /// [`lora_backward`](crate::ops::lora_backward): writes `d_lora_a`, `d_lora_b` into
    /// `grads` at `args.da` / `args.db`; returns `dx` when `args.need_dx`
    /// (`[M, I]` summed over particles for a shared `x`, else `[K, M, I]`).
    fn lora_backward(
        &self,
        args: &LoraBackwardArgs,
        grads: GradTargets<'_>,
    ) -> Result<Option<Tensor>> {
        checks::lora_backward(self.kind(), &self.memory_budget(), args, &grads)?;
        // SAFETY: checked above.
        unsafe {
            if args.x.dtype().is_half() {
                self.lora_backward_half_unchecked(args, grads)
            } else {
                self.lora_backward_unchecked(args, grads)
            }
        }
    }
    /// [`matmul`](crate::ops::matmul_into): writes each block of `c` into `out` at `args.out`.
    /// `a` and `b` are both f32 or both one 16-bit type; `c` is f32.
    fn matmul(&self, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
        checks::matmul(self.kind(), args, out)?;
        // SAFETY: checked above.
        unsafe {
            if args.a.tensor.dtype().is_half() {
                self.matmul_half_unchecked(args, out)
            } else {
                self.matmul_unchecked(args, out)
            }
        }
    }
    /// [`cast`](crate::ops::cast): `x` converted to `to` (the rule of [`crate::dtype`]); the
    /// same tensor when it already is `to`, bf16 ↔ f16 through f32.
    fn cast(&self, x: &Tensor, to: DType) -> Result<Tensor> {
        checks::cast(self.kind(), &self.memory_budget(), x, to)?;
        if x.dtype() == to {
            return Ok(x.clone());
        }
        // SAFETY: checked above (on this backend, output budgeted); the pair is f32 and a
        // 16-bit type, as `cast_unchecked` requires.
        unsafe {
            if x.dtype().is_half() && to.is_half() {
                let wide = self.cast_unchecked(x, DType::F32)?;
                self.cast_unchecked(&wide, to)
            } else {
                self.cast_unchecked(x, to)
            }
        }
    }
    /// [`pairwise_sqdist`](crate::ops::pairwise_sqdist): `theta` is `[k, d]`; returns `[k, k]`.
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
    /// [`rbf_kernel`](crate::ops::rbf_kernel): returns the `[k, k]` kernel and the bandwidth
    /// used (median heuristic when `None`).
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
    /// [`svgd_direction`](crate::ops::svgd_direction): `theta`, `score` `[k, d]`, `kernel`
    /// `[k, k]`; returns `phi [k, d]`.
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
    /// [`adamw_step`](crate::ops::adamw_step): updates `param`, `m`, `v` in place.
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
    /// [`svgd_step`](crate::ops::svgd_step): `theta`, `score`, `m`, `v` `[k, d]`, `kernel`
    /// `[k, k]`; updates `theta`, `m`, `v` in place.
    #[allow(clippy::too_many_arguments)]
    fn svgd_step(
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
        let budget = self.memory_budget();
        let ts = [("theta", &*theta), ("score", score), ("m", &*m), ("v", &*v)];
        // The unfused default holds φ and the scaled gradient.
        let temps: [(&str, &[usize]); 2] = [("phi", &[k, d]), ("grad", &[k, d])];
        checks::particles(self.kind(), &budget, "svgd_step", &ts, (k, d), &temps)?;
        checks::svgd_kernel_matrix(self.kind(), kernel, k, bandwidth)?;
        checks::adamw(self.kind(), theta, score, m, v, hp.step)?;
        // SAFETY: checked above.
        unsafe {
            self.svgd_step_unchecked(
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
        }
    }
    /// [`relu_forward`](crate::ops::relu_forward): `max(x, 0)`, elementwise.
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
    /// [`relu_backward`](crate::ops::relu_backward): `dy · 1[x > 0]`, elementwise.
    fn relu_backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let ts = [("x", x), ("dy", dy)];
        checks::same_len(self.kind(), &self.memory_budget(), "relu_backward", &ts)?;
        // SAFETY: checked above.
        unsafe { self.relu_backward_unchecked(x, dy) }
    }
    /// [`gelu_forward`](crate::ops::gelu_forward): tanh-form GELU, elementwise.
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
    /// [`gelu_backward`](crate::ops::gelu_backward): `dy · gelu'(x)`, elementwise.
    fn gelu_backward(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let ts = [("x", x), ("dy", dy)];
        checks::same_len(self.kind(), &self.memory_budget(), "gelu_backward", &ts)?;
        // SAFETY: checked above.
        unsafe { self.gelu_backward_unchecked(x, dy) }
    }
    /// [`softmax_xent`](crate::ops::softmax_xent): `logits` `[k, m, c]`, `m` labels each
    /// `< c`. Returns `loss [k]`, `dlogits [k, m, c]`.
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
    /// [`ensemble_stats`](crate::ops::ensemble_stats) of `logits [k, m, c]`.
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
    /// `lora_forward` with `x`, `weight`, `lora_a`, `lora_b` in one 16-bit type (bias f32
    /// or that type): the f32 math on the exact 16-bit values, `y` and `h` f32. The default
    /// widens the operands on the device ([`Backend::cast_unchecked`], temporary f32 copies)
    /// and runs the f32 kernel; a backend with a 16-bit kernel overrides it where it can.
    ///
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn lora_forward_half_unchecked(
        &self,
        args: &LoraForwardArgs,
    ) -> Result<(Tensor, Tensor)> {
        // SAFETY: the caller's contract is this function's.
        unsafe { lora_forward_half_widened(self, args) }
    }
    /// `lora_backward` with `x`, `weight`, `lora_a`, `lora_b` in one 16-bit type: with `dy`
    /// and `h` f32, the f32 math on the exact 16-bit values; with `dy` and `h` in that type
    /// too, the contract with two rounding points of [`crate::ops::lora_backward`]
    /// (gradients f32 either way). The default runs it on the f32 kernels
    /// (`lora_backward_half_widened`).
    ///
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn lora_backward_half_unchecked(
        &self,
        args: &LoraBackwardArgs,
        grads: GradTargets<'_>,
    ) -> Result<Option<Tensor>> {
        // SAFETY: the caller's contract is this function's.
        unsafe { lora_backward_half_widened(self, args, grads) }
    }
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn lora_backward_unchecked(
        &self,
        args: &LoraBackwardArgs,
        grads: GradTargets<'_>,
    ) -> Result<Option<Tensor>>;
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    unsafe fn matmul_unchecked(&self, args: &MatmulArgs, out: &mut Tensor) -> Result<()>;
    /// `matmul` with bf16/f16 `a` and `b` (one type), f32 `c`: the product of the exact
    /// 16-bit values with f32 accumulation. The default widens both operands on the device
    /// ([`Backend::cast_unchecked`], a temporary f32 copy of each) and runs the f32 kernel; a
    /// backend with a 16-bit kernel (PTX: tensor cores) overrides it for what that covers.
    ///
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`]; `a` and `b` have one 16-bit dtype.
    unsafe fn matmul_half_unchecked(&self, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
        // SAFETY: the caller's contract is this function's.
        unsafe { matmul_half_widened(self, args, out) }
    }
    /// `x` converted between f32 and a 16-bit type (exactly one of `x.dtype()` and `to` is
    /// f32). The default goes through the host (download, convert, upload); the GPU backends
    /// override it with their `cast` kernels.
    ///
    /// # Safety
    /// `x` is on this backend and the output fits the budget ([`Backend::cast`] checks).
    unsafe fn cast_unchecked(&self, x: &Tensor, to: DType) -> Result<Tensor> {
        if to == DType::F32 {
            let v = self.download(x)?;
            self.upload(x.shape(), &v)
        } else {
            let v = self.download_words(x)?;
            self.upload_as(x.shape(), to, &v)
        }
    }
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
    /// The default runs the two ops: [`Backend::svgd_direction_unchecked`], `φ` scaled by
    /// `grad_scale` ([`Backend::axpby_unchecked`]), [`Backend::adamw_step_unchecked`]; a
    /// backend with a fused kernel overrides it.
    ///
    /// # Safety
    /// As [`Backend::lora_forward_unchecked`].
    #[allow(clippy::too_many_arguments)]
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
        // SAFETY: the caller's contract is this function's.
        unsafe {
            svgd_step_two_ops(
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
        }
    }
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

/// `svgd_step` as the two ops (direction, φ scaled by `grad_scale`, AdamW): the default of
/// [`Backend::svgd_step_unchecked`], and the fallback of a backend whose fused kernel does
/// not cover the case.
///
/// # Safety
/// As [`Backend::svgd_step_unchecked`] (the checks of [`Backend::svgd_step`] cover the three
/// ops: same shapes, φ and g budgeted).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn svgd_step_two_ops<B: Backend + ?Sized>(
    be: &B,
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
    // SAFETY: as stated above.
    unsafe {
        let phi = be.svgd_direction_unchecked(theta, score, kernel, k, d, bandwidth)?;
        let g = be.axpby_unchecked(grad_scale, &phi, 0.0, &phi)?;
        be.adamw_step_unchecked(theta, &g, m, v, hp)
    }
}

/// `t` widened to f32 on the device (itself if it is f32).
///
/// # Safety
/// `t` is on `be` (the op's checks passed).
unsafe fn widened<B: Backend + ?Sized>(be: &B, t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::F32 => Ok(t.clone()),
        // SAFETY: the caller's contract.
        _ => unsafe { be.cast_unchecked(t, DType::F32) },
    }
}

/// The two operand views `a`, `b` over widened copies of their tensors (one copy when they
/// share a storage, as `lora_a` and `lora_b` in one arena do); views keep their offsets and
/// strides, which the element counts keep valid.
///
/// # Safety
/// As [`widened`].
unsafe fn widened_pair<B: Backend + ?Sized>(
    be: &B,
    a: &Strided,
    b: &Strided,
) -> Result<(Tensor, Tensor)> {
    // SAFETY: the caller's contract.
    unsafe {
        let wa = widened(be, a.tensor)?;
        let wb = if b.tensor.same_storage(a.tensor) {
            wa.clone()
        } else {
            widened(be, b.tensor)?
        };
        Ok((wa, wb))
    }
}

/// `matmul` of bf16/f16 operands by widening both on the device and running the f32 kernel:
/// the default of [`Backend::matmul_half_unchecked`], and the fallback of a backend whose
/// 16-bit kernel does not cover the case.
///
/// # Safety
/// As [`Backend::matmul_half_unchecked`].
pub(crate) unsafe fn matmul_half_widened<B: Backend + ?Sized>(
    be: &B,
    args: &MatmulArgs,
    out: &mut Tensor,
) -> Result<()> {
    // SAFETY: the caller's contract; the widened views still fit.
    unsafe {
        let (a, b) = widened_pair(be, &args.a, &args.b)?;
        let wide = MatmulArgs {
            a: Strided {
                tensor: &a,
                ..args.a
            },
            b: Strided {
                tensor: &b,
                ..args.b
            },
            ..*args
        };
        be.matmul_unchecked(&wide, out)
    }
}

/// `lora_forward` of 16-bit operands by widening them on the device and running the f32
/// kernel: the default of [`Backend::lora_forward_half_unchecked`] and the fallback of a
/// backend whose 16-bit kernel does not cover the case.
///
/// # Safety
/// As [`Backend::lora_forward_unchecked`].
pub(crate) unsafe fn lora_forward_half_widened<B: Backend + ?Sized>(
    be: &B,
    args: &LoraForwardArgs,
) -> Result<(Tensor, Tensor)> {
    // SAFETY: the caller's contract; the widened views still fit.
    unsafe {
        let (x, w) = (widened(be, args.x)?, widened(be, args.weight)?);
        let (a, b) = widened_pair(be, &args.a, &args.b)?;
        let bias = args.bias.map(|t| widened(be, t)).transpose()?;
        let f32_args = LoraForwardArgs {
            x: &x,
            weight: &w,
            bias: bias.as_ref(),
            a: Strided {
                tensor: &a,
                ..args.a
            },
            b: Strided {
                tensor: &b,
                ..args.b
            },
            ..*args
        };
        be.lora_forward_unchecked(&f32_args)
    }
}

/// `lora_backward` of 16-bit operands on the f32 kernels: the default of
/// [`Backend::lora_backward_half_unchecked`]. With `dy` and `h` f32, the operands are
/// widened on the device and the f32 `lora_backward` runs; with `dy` and `h` 16-bit too, the
/// contract with its two rounding points is composed of f32 products
/// (`lora_half::lora_backward_half_dy`).
///
/// # Safety
/// As [`Backend::lora_forward_unchecked`].
pub(crate) unsafe fn lora_backward_half_widened<B: Backend + ?Sized>(
    be: &B,
    args: &LoraBackwardArgs,
    grads: GradTargets<'_>,
) -> Result<Option<Tensor>> {
    // SAFETY: the caller's contract; the widened views still fit.
    unsafe {
        if args.dy.dtype().is_half() {
            return lora_half::lora_backward_half_dy(be, args, grads);
        }
        let (x, w) = (widened(be, args.x)?, widened(be, args.weight)?);
        let (a, b) = widened_pair(be, &args.a, &args.b)?;
        let f32_args = LoraBackwardArgs {
            x: &x,
            weight: &w,
            a: Strided {
                tensor: &a,
                ..args.a
            },
            b: Strided {
                tensor: &b,
                ..args.b
            },
            ..*args
        };
        be.lora_backward_unchecked(&f32_args, grads)
    }
}

/// Open one backend, or say why it is not available (not compiled in, no device, no driver).
///
/// # Errors
/// [`BellaError::BackendUnavailable`] with the reason.
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

/// Parse `cpu|wgpu|cuda|ptx-sim|auto` and open it (`auto` as [`open_auto`]).
///
/// # Errors
/// [`BellaError::Unknown`] for another name; as [`open`] otherwise.
pub fn open_named(name: &str) -> Result<std::sync::Arc<dyn Backend>> {
    if name == "auto" {
        return Ok(open_auto());
    }
    open(name.parse()?)
}
