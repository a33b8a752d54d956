//! `lora_forward` (DESIGN.md op 1); the contract is on [`lora_forward`].

use super::{expect_device, expect_finite, expect_nonempty, expect_rank, expect_shape};
use crate::backend::{Backend, LoraDims, LoraForwardArgs};
use crate::error::{BellaError, Result};
use crate::tensor::{Strided, Tensor};

const OP: &str = "lora_forward";

/// K adapters `(A_k, B_k)` of rank r: blocks of `[r, I]` and `[O, r]` inside one or two
/// tensors (the `[K, D]` parameter arena in training; `[K,r,I]`/`[K,O,r]` tensors for `bella op`).
#[derive(Clone, Copy, Debug)]
pub struct Adapter<'a> {
    /// The `lora_a` blocks: K blocks of `[r, I]`, block k at `a.offset + k * a.stride`.
    pub a: Strided<'a>,
    /// The `lora_b` blocks: K blocks of `[O, r]`, block k at `b.offset + k * b.stride`.
    pub b: Strided<'a>,
    /// Number of particles K (≥ 1).
    pub k: usize,
    /// Adapter rank r (≥ 1).
    pub r: usize,
}

impl<'a> Adapter<'a> {
    /// From `lora_a [K, r, I]` and `lora_b [K, O, r]` tensors (K, r and O are read from
    /// them). `op` names the op in error messages.
    ///
    /// # Errors
    /// [`BellaError::Shape`] if either tensor is not 3-D or `lora_b` is not `[K, O, r]`.
    pub fn from_tensors(op: &str, lora_a: &'a Tensor, lora_b: &'a Tensor) -> Result<Self> {
        let sa = expect_rank(op, "lora_a", lora_a, 3)?;
        let sb = expect_rank(op, "lora_b", lora_b, 3)?;
        let (k, r, i) = (sa[0], sa[1], sa[2]);
        let o = sb[1];
        expect_shape(op, "lora_b", lora_b, &[k, o, r])?;
        Ok(Adapter {
            a: Strided::contiguous(lora_a, r * i, false),
            b: Strided::contiguous(lora_b, o * r, false),
            k,
            r,
        })
    }

    /// Check the adapter against a layer of `o × i` and return nothing or a clear error.
    pub(crate) fn check(&self, op: &str, o: usize, i: usize) -> Result<()> {
        if self.k == 0 || self.r == 0 {
            return Err(BellaError::invalid(format!(
                "{op}: need K ≥ 1 particles and rank r ≥ 1 (got K={}, r={})",
                self.k, self.r
            )));
        }
        if !self.a.fits(self.k, self.r * i) {
            return Err(BellaError::invalid(format!(
                "{op}: lora_a blocks of [{}, {i}] for K={} do not fit in a tensor of shape {:?}",
                self.r,
                self.k,
                self.a.tensor.shape()
            )));
        }
        if !self.b.fits(self.k, o * self.r) {
            return Err(BellaError::invalid(format!(
                "{op}: lora_b blocks of [{o}, {}] for K={} do not fit in a tensor of shape {:?}",
                self.r,
                self.k,
                self.b.tensor.shape()
            )));
        }
        Ok(())
    }
}

/// Layer sizes from `x`, `weight` and the adapter, checked against each other.
pub(crate) fn layer_dims(op: &str, x: &Tensor, weight: &Tensor, ad: &Adapter) -> Result<LoraDims> {
    let w = expect_rank(op, "weight", weight, 2)?;
    let (o, i) = (w[0], w[1]);
    expect_nonempty(op, "weight", weight)?;
    let (m, x_shared) = match x.rank() {
        2 => {
            expect_shape(op, "x", x, &[x.shape()[0], i])?;
            (x.shape()[0], true)
        }
        3 => {
            expect_shape(op, "x", x, &[ad.k, x.shape()[1], i])?;
            (x.shape()[1], false)
        }
        _ => {
            return Err(BellaError::shape(
                op,
                "x",
                format!("[M, {i}] or [{}, M, {i}]", ad.k),
                x.shape(),
            ))
        }
    };
    expect_nonempty(op, "x", x)?;
    ad.check(op, o, i)?;
    Ok(LoraDims {
        k: ad.k,
        m,
        i,
        o,
        r: ad.r,
        x_shared,
    })
}

/// Outputs of [`lora_forward`].
#[derive(Debug)]
pub struct LoraForwardOut {
    /// `y [K, M, O]`: each particle's layer output.
    pub y: Tensor,
    /// `h [K, M, r]`: the adapter activations `x_k A_kᵀ`, kept for
    /// [`lora_backward`](super::lora_backward).
    pub h: Tensor,
}

/// `lora_forward` (DESIGN.md op 1): one linear layer `W0` with K LoRA adapters, all
/// particles in one call.
///
/// In `x` (`[M, I]` shared by all particles, or `[K, M, I]`), `weight [O, I]`, optional
/// `bias [O]`, the adapter's `A_k [r, I]` and `B_k [O, r]`, `scale` `s` (PEFT's
/// `alpha / r`). Out `y [K, M, O]` and `h [K, M, r]`:
/// `h_k = x_k A_kᵀ`, `y_k = x_k Wᵀ + bias + s · h_k B_kᵀ`.
/// With a shared `x` the base product `x Wᵀ` is computed once for all K particles.
///
/// **Dtypes.** `x`, `weight`, `lora_a` and `lora_b` are all f32, or all bf16 or all f16
/// ([`crate::dtype`]; `bias` f32 or their type); `y` and `h` are f32: the f32 math on the
/// exact 16-bit values, accumulated in f32. On PTX (cuda, ptx-sim) an `x` shared or per
/// particle with I a multiple of 8 runs the tensor cores (`h` by `gemm_mma_*`, `y` by
/// `lora_forward_mma_*`, which carries `s·h` into the rank update split into 16-bit terms);
/// on wgpu the kernels read the packed operands as stored (`lora_forward_bf16` / `_f16`,
/// h on the 16-bit GEMM); every other case, and the CPU, widen the operands on the device
/// (temporary f32 copies) and run the f32 kernels. The split has the 16-bit type's range: bf16's is f32's,
/// but for f16 on the tensor cores `|s·h|` must stay below 65408, beyond which `y` is not
/// finite (where PyTorch's f16 autocast would already have overflowed `h`).
///
/// # Errors
/// [`BellaError::Shape`] if the shapes disagree (or a tensor is empty);
/// [`BellaError::Invalid`] if K or r is 0, an adapter block does not fit its tensor, `scale`
/// is not finite, or a tensor is on another backend;
/// [`BellaError::Device`] if the outputs do not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
///
/// # Example
///
/// One particle (K = 1), one row (M = 1), I = 2, O = 1, rank 1:
/// `x Wᵀ = 1·3 + 2·4 = 11`, `h = x Aᵀ = 3`, `y = 11 + 0.5 + 0.5 · 3 · 2 = 14.5`.
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::ops::{lora_forward, Adapter};
/// use bella::Backend;
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let x = be.upload(&[1, 2], &[1.0, 2.0])?; // shared x [M, I]
/// let w = be.upload(&[1, 2], &[3.0, 4.0])?; // weight [O, I]
/// let bias = be.upload(&[1], &[0.5])?;
/// let a = be.upload(&[1, 1, 2], &[1.0, 1.0])?; // lora_a [K, r, I]
/// let b = be.upload(&[1, 1, 1], &[2.0])?; // lora_b [K, O, r]
/// let adapter = Adapter::from_tensors("lora_forward", &a, &b)?;
///
/// let out = lora_forward(&be, &x, &w, Some(&bias), &adapter, 0.5)?;
/// assert_eq!(out.y.shape(), &[1, 1, 1]);
/// assert_eq!(be.download(&out.h)?, vec![3.0]);
/// assert_eq!(be.download(&out.y)?, vec![14.5]);
/// # Ok(())
/// # }
/// ```
pub fn lora_forward(
    be: &dyn Backend,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    adapter: &Adapter,
    scale: f32,
) -> Result<LoraForwardOut> {
    let dims = layer_dims(OP, x, weight, adapter)?;
    if let Some(b) = bias {
        expect_shape(OP, "bias", b, &[dims.o])?;
        expect_device(OP, be, &[("bias", b)])?;
    }
    expect_finite(OP, "scale", scale)?;
    expect_device(
        OP,
        be,
        &[
            ("x", x),
            ("weight", weight),
            ("lora_a", adapter.a.tensor),
            ("lora_b", adapter.b.tensor),
        ],
    )?;
    let (y, h) = be.lora_forward(&LoraForwardArgs {
        dims,
        x,
        weight,
        bias,
        a: adapter.a,
        b: adapter.b,
        scale,
    })?;
    Ok(LoraForwardOut { y, h })
}
