//! `lora_backward` (DESIGN.md op 2).
//!
//! In `dy [K, M, O]`, `x`, `weight`, adapters, `h [K, M, r]`, `scale`. With `g_k = dy_k B_k`:
//! `d_lora_b_k = s · dy_kᵀ h_k`, `d_lora_a_k = s · g_kᵀ x_k`, `dx_k = dy_k W + s · g_k A_k`;
//! for a shared `x`, `dx = Σ_k dx_k` (`[M, I]`).

use super::lora_forward::{layer_dims, Adapter};
use super::{expect_device, expect_finite, expect_shape};
use crate::backend::{Backend, LoraBackwardArgs};
use crate::error::{BellaError, Result};
use crate::tensor::{OutSlot, Tensor};

const OP: &str = "lora_backward";

/// Gradients written into an existing tensor (the `[K, D]` gradient arena), and `dx` when
/// asked for. `da`/`db` say where each particle's `d_lora_a`/`d_lora_b` block goes.
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
    let dims = layer_dims(OP, x, weight, adapter)?;
    expect_shape(OP, "dy", dy, &[dims.k, dims.m, dims.o])?;
    expect_shape(OP, "h", h, &[dims.k, dims.m, dims.r])?;
    expect_finite(OP, "scale", scale)?;
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
            ("grad", grad),
        ],
    )?;
    let (ri, or) = (dims.r * dims.i, dims.o * dims.r);
    let fits = |s: OutSlot, len: usize| s.offset + (dims.k - 1) * s.stride + len <= grad.numel();
    if !fits(da, ri) || !fits(db, or) {
        return Err(BellaError::invalid(format!(
            "{OP}: gradient slots do not fit in a gradient tensor of shape {:?}",
            grad.shape()
        )));
    }
    for (name, t) in [("dy", dy), ("x", x), ("weight", weight), ("h", h)] {
        if grad.same_storage(t) {
            return Err(BellaError::invalid(format!(
                "{OP}: the gradient output aliases input `{name}`"
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
        grad,
    )
}

pub struct LoraGrads {
    pub dx: Tensor,
    pub d_lora_a: Tensor,
    pub d_lora_b: Tensor,
}

/// The op-contract form: returns `dx`, `d_lora_a [K, r, I]`, `d_lora_b [K, O, r]`.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward(
    be: &dyn Backend,
    dy: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    lora_a: &Tensor,
    lora_b: &Tensor,
    h: &Tensor,
    scale: f32,
) -> Result<LoraGrads> {
    let adapter = Adapter::from_tensors(OP, lora_a, lora_b)?;
    let dims = layer_dims(OP, x, weight, &adapter)?;
    let (ri, or) = (dims.r * dims.i, dims.o * dims.r);
    // One [K, rI + Or] gradient row per particle, as in the training arena.
    let row = ri + or;
    let mut grad = be.zeros(&[dims.k, row])?;
    let dx = lora_backward_into(
        be,
        dy,
        x,
        weight,
        &adapter,
        h,
        scale,
        true,
        &mut grad,
        OutSlot {
            offset: 0,
            stride: row,
        },
        OutSlot {
            offset: ri,
            stride: row,
        },
    )?
    .ok_or_else(|| BellaError::invalid(format!("{OP}: backend returned no dx")))?;
    let g = be.download(&grad)?;
    let mut da = Vec::with_capacity(dims.k * ri);
    let mut db = Vec::with_capacity(dims.k * or);
    for k in 0..dims.k {
        da.extend_from_slice(&g[k * row..k * row + ri]);
        db.extend_from_slice(&g[k * row + ri..(k + 1) * row]);
    }
    Ok(LoraGrads {
        dx,
        d_lora_a: be.upload(&[dims.k, dims.r, dims.i], &da)?,
        d_lora_b: be.upload(&[dims.k, dims.o, dims.r], &db)?,
    })
}
