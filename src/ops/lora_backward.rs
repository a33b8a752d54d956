//! `lora_backward` (DESIGN.md op 2); the contract is on [`lora_backward`].

use super::lora_forward::{layer_dims, Adapter};
use super::{expect_device, expect_finite, expect_shape};
use crate::backend::{Backend, GradTargets, LoraBackwardArgs};
use crate::error::{BellaError, Result};
use crate::tensor::{OutSlot, Tensor};

const OP: &str = "lora_backward";

/// [`lora_backward`] writing into an existing gradient tensor (the `[K, D]` gradient arena
/// of training) instead of returning new tensors.
///
/// Same inputs and math as [`lora_backward`].
/// Particle k's `d_lora_a` block (`[r, I]`) is written at `da.offset + k * da.stride` of
/// `grad`, its `d_lora_b` block (`[O, r]`) at `db.offset + k * db.stride`; the rest of `grad`
/// is left as it was. Returns `dx` (`[M, I]` summed over particles for a shared `x`, else
/// `[K, M, I]`) when `need_dx`, else `None`.
///
/// # Errors
/// As [`lora_backward`], and [`BellaError::Invalid`] if a slot does not fit in `grad` or
/// `grad` shares storage with an input.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward_into(
    be: &dyn Backend,
    dy: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    adapter: &Adapter,
    h: &Tensor,
    scale: f32,
    need_dx: bool,
    grad: &mut Tensor,
    da: OutSlot,
    db: OutSlot,
) -> Result<Option<Tensor>> {
    backward(
        be,
        dy,
        x,
        weight,
        adapter,
        h,
        scale,
        need_dx,
        GradTargets::Arena(grad),
        (da, db),
    )
}

/// The checks both entry points share, then the backend's `lora_backward`.
#[allow(clippy::too_many_arguments)]
fn backward(
    be: &dyn Backend,
    dy: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    adapter: &Adapter,
    h: &Tensor,
    scale: f32,
    need_dx: bool,
    grads: GradTargets<'_>,
    (da, db): (OutSlot, OutSlot),
) -> Result<Option<Tensor>> {
    let dims = layer_dims(OP, x, weight, adapter)?;
    expect_shape(OP, "dy", dy, &[dims.k, dims.m, dims.o])?;
    expect_shape(OP, "h", h, &[dims.k, dims.m, dims.r])?;
    expect_finite(OP, "scale", scale)?;
    let (ga, gb) = grads.tensors();
    expect_device(
        OP,
        be,
        &[
            ("dy", dy),
            ("x", x),
            ("weight", weight),
            ("h", h),
            ("lora_a", adapter.a.tensor),
            ("lora_b", adapter.b.tensor),
            ("d_lora_a", ga),
            ("d_lora_b", gb),
        ],
    )?;
    let (ri, or) = (dims.r * dims.i, dims.o * dims.r);
    let fits =
        |s: OutSlot, t: &Tensor, len: usize| s.offset + (dims.k - 1) * s.stride + len <= t.numel();
    if !fits(da, ga, ri) || !fits(db, gb, or) {
        return Err(BellaError::invalid(format!(
            "{OP}: gradient slots do not fit in gradient tensors of shapes {:?} and {:?}",
            ga.shape(),
            gb.shape()
        )));
    }
    for (name, t) in [("dy", dy), ("x", x), ("weight", weight), ("h", h)] {
        if ga.same_storage(t) || gb.same_storage(t) {
            return Err(BellaError::invalid(format!(
                "{OP}: a gradient output aliases input `{name}`"
            )));
        }
    }
    be.lora_backward(
        &LoraBackwardArgs {
            dims,
            dy,
            x,
            weight,
            a: adapter.a,
            b: adapter.b,
            h,
            scale,
            need_dx,
            da,
            db,
        },
        grads,
    )
}

/// Outputs of [`lora_backward`].
pub struct LoraGrads {
    /// Gradient of the input: `[M, I]` (summed over particles) for a shared `x`, else `[K, M, I]`.
    pub dx: Tensor,
    /// `d_lora_a [K, r, I]`.
    pub d_lora_a: Tensor,
    /// `d_lora_b [K, O, r]`.
    pub d_lora_b: Tensor,
}

/// `lora_backward` (DESIGN.md op 2): the gradients of [`lora_forward`](super::lora_forward)
/// for all K particles.
///
/// In `dy [K, M, O]`, `x` (`[M, I]` shared or `[K, M, I]`), `weight [O, I]`, the
/// [`Adapter`] of the forward (`lora_a [K, r, I]`, `lora_b [K, O, r]` blocks), `h [K, M, r]`
/// (from the forward), `scale` `s`. The gradients are written on the device, straight into
/// the returned tensors.
/// With `g_k = dy_k B_k` (`[M, r]`):
/// `d_lora_b_k = s · dy_kᵀ h_k`, `d_lora_a_k = s · g_kᵀ x_k`, `dx_k = dy_k W + s · g_k A_k`;
/// for a shared `x`, `dx = Σ_k dx_k` (`[M, I]`).
///
/// **Dtypes.** `x`, `weight`, `lora_a` and `lora_b` (the forward's operands) are all f32 or
/// all one 16-bit type `T` ([`crate::dtype`]); every output is f32.
/// - `dy` and `h` f32: the f32 math on the exact 16-bit values (the operands are widened on
///   the device).
/// - `dy` and `h` in `T` as well (mixed-precision training's backward, as autocast): the
///   products take 16-bit operands, so two intermediates are rounded once to `T` (`rnd`, to
///   nearest, ties to even): `ĝ_k = rnd(dy_k B_k)` replaces `g_k` in `d_lora_a` and `dx`, and
///   for a shared `x` the base term is `rnd(Σ_k dy_k) W`; every product accumulates in f32.
///   So `d_lora_b` is the f32 math on the exact inputs; `d_lora_a` and `dx` carry the
///   rounding of ĝ (relative `2⁻⁸` for bf16, `2⁻¹¹` for f16, per element of ĝ) and, shared,
///   of the dy sum. Backends agree with one another and with float64 of the same rounding
///   up to f32 accumulation and an occasional one-unit difference of a rounded
///   intermediate (where the f32 product sits at a rounding boundary).
/// - Any other mix of dtypes is an error.
///
/// # Errors
/// [`BellaError::Shape`] if the shapes disagree (or a tensor is empty);
/// [`BellaError::Invalid`] if `scale` is not finite or a tensor is on another backend;
/// [`BellaError::Device`] if the outputs do not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
///
/// # Example
///
/// The layer of [`lora_forward`](super::lora_forward)'s example (`x = [1, 2]`,
/// `W = [[3, 4]]`, `A = [[1, 1]]`, `B = [[2]]`, `s = 0.5`, so `h = 3`) with `dy = 1`:
/// `g = dy B = 2`, `d_lora_b = 0.5 · 1 · 3 = 1.5`, `d_lora_a = 0.5 · 2 · [1, 2] = [1, 2]`,
/// `dx = [3, 4] + 0.5 · 2 · [1, 1] = [4, 5]`.
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::ops::{lora_backward, lora_forward, Adapter};
/// use bella::Backend;
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let x = be.upload(&[1, 2], &[1.0, 2.0])?;
/// let w = be.upload(&[1, 2], &[3.0, 4.0])?;
/// let a = be.upload(&[1, 1, 2], &[1.0, 1.0])?;
/// let b = be.upload(&[1, 1, 1], &[2.0])?;
/// let adapter = Adapter::from_tensors("lora_forward", &a, &b)?;
/// let fwd = lora_forward(&be, &x, &w, None, &adapter, 0.5)?;
///
/// let dy = be.upload(&[1, 1, 1], &[1.0])?;
/// let g = lora_backward(&be, &dy, &x, &w, &adapter, &fwd.h, 0.5)?;
/// assert_eq!(be.download(&g.d_lora_b)?, vec![1.5]);
/// assert_eq!(be.download(&g.d_lora_a)?, vec![1.0, 2.0]);
/// assert_eq!(g.dx.shape(), &[1, 2]); // shared x: [M, I]
/// assert_eq!(be.download(&g.dx)?, vec![4.0, 5.0]);
/// # Ok(())
/// # }
/// ```
pub fn lora_backward(
    be: &dyn Backend,
    dy: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    adapter: &Adapter,
    h: &Tensor,
    scale: f32,
) -> Result<LoraGrads> {
    let dims = layer_dims(OP, x, weight, adapter)?;
    let (ri, or) = (dims.r * dims.i, dims.o * dims.r);
    let mut d_lora_a = be.zeros(&[dims.k, dims.r, dims.i])?;
    let mut d_lora_b = be.zeros(&[dims.k, dims.o, dims.r])?;
    let slots = (
        OutSlot {
            offset: 0,
            stride: ri,
        },
        OutSlot {
            offset: 0,
            stride: or,
        },
    );
    let dx = backward(
        be,
        dy,
        x,
        weight,
        adapter,
        h,
        scale,
        true,
        GradTargets::Split(&mut d_lora_a, &mut d_lora_b),
        slots,
    )?
    .ok_or_else(|| BellaError::invalid(format!("{OP}: backend returned no dx")))?;
    Ok(LoraGrads {
        dx,
        d_lora_a,
        d_lora_b,
    })
}
