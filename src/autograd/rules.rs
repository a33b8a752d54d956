//! Forward and backward rules of the tape, written only with ops (so they run on every
//! backend). Per-particle blocks are strided views into the `[K, D]` arenas.

use super::{Arena, DenseSlots, FrozenRef, LoraSlots};
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::ops::{self, Adapter, LoraForwardOut, MatmulOperand};
use crate::tensor::{OutSlot, Strided, Tensor};

/// Rows and columns of `x_k` and the stride between particles (0 when shared).
fn rows_of(x: &Tensor, k: usize, i: usize, op: &str) -> Result<(usize, usize)> {
    match *x.shape() {
        [m, ii] if ii == i => Ok((m, 0)),
        [kk, m, ii] if kk == k && ii == i => Ok((m, m * i)),
        _ => Err(BellaError::shape(
            op,
            "x",
            format!("[M, {i}] or [{k}, M, {i}]"),
            x.shape(),
        )),
    }
}

fn operand(
    t: &Tensor,
    offset: usize,
    stride: usize,
    rows: usize,
    cols: usize,
) -> MatmulOperand<'_> {
    MatmulOperand::strided(t, offset, stride, rows, cols)
}

/// A `[rows, cols]` tensor of ones (bias products and particle sums).
fn ones(be: &dyn Backend, rows: usize, cols: usize) -> Result<Tensor> {
    be.upload(&[rows, cols], &vec![1.0; rows * cols])
}

fn adapter<'a>(arena: Arena<'a>, slots: LoraSlots) -> Adapter<'a> {
    Adapter {
        a: Strided {
            tensor: arena.params,
            offset: slots.a_offset,
            stride: arena.d,
        },
        b: Strided {
            tensor: arena.params,
            offset: slots.b_offset,
            stride: arena.d,
        },
        k: arena.k,
        r: slots.rank,
    }
}

pub(super) fn lora_forward(
    be: &dyn Backend,
    x: &Tensor,
    base: FrozenRef,
    arena: Arena,
    slots: LoraSlots,
    scale: f32,
) -> Result<LoraForwardOut> {
    ops::lora_forward(be, x, base.weight, base.bias, &adapter(arena, slots), scale)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn lora_backward(
    be: &dyn Backend,
    dy: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    arena: Arena,
    slots: LoraSlots,
    scale: f32,
    h: &Tensor,
    need_dx: bool,
    grad: &mut Tensor,
) -> Result<Option<Tensor>> {
    let da = OutSlot {
        offset: slots.a_offset,
        stride: arena.d,
    };
    let db = OutSlot {
        offset: slots.b_offset,
        stride: arena.d,
    };
    let ad = adapter(arena, slots);
    // Mixed precision (x in a 16-bit type): dy in that type too, as autocast's backward (the
    // contract of `ops::lora_backward` with its two rounding points); f32: unchanged.
    let dy = ops::cast(be, dy, x.dtype())?;
    ops::lora_backward_into(be, &dy, x, weight, &ad, h, scale, need_dx, grad, da, db)
}

/// `y = x W0ᵀ (+ 1 biasᵀ)` over the last axis of `x` (`[.., I]` → `[.., O]`): the rows of
/// every particle in one matmul, the bias through a ones column (a device op too).
pub(crate) fn frozen_forward(be: &dyn Backend, x: &Tensor, base: FrozenRef) -> Result<Tensor> {
    let [o, i] = *base.weight.shape() else {
        return Err(BellaError::shape(
            "frozen linear",
            "weight",
            "[O, I]",
            base.weight.shape(),
        ));
    };
    let lead = match x.shape().split_last() {
        Some((&last, lead)) if last == i && !lead.is_empty() => lead.to_vec(),
        _ => {
            return Err(BellaError::shape(
                "frozen linear",
                "x",
                format!("[.., {i}]"),
                x.shape(),
            ))
        }
    };
    let rows: usize = lead.iter().product();
    let x2 = x.reshape(&[rows, i])?;
    let mut y = ops::matmul(be, &x2, base.weight, false, true, 1.0)?;
    if let Some(b) = base.bias {
        let ones = ones(be, rows, 1)?;
        let mut yb = be.zeros(&[rows, o])?;
        let one = OutSlot {
            offset: 0,
            stride: 0,
        };
        ops::matmul_into(
            be,
            1,
            operand(&ones, 0, 0, rows, 1),
            false,
            operand(b, 0, 0, 1, o),
            false,
            1.0,
            &mut yb,
            one,
        )?;
        y = ops::axpby(be, 1.0, &y, 1.0, &yb)?;
    }
    let mut shape = lead;
    shape.push(o);
    y.reshape(&shape)
}

/// `dx = dy W0` for [`frozen_forward`] (`dy [.., O]` → `dx [.., I]`).
pub(crate) fn frozen_backward(be: &dyn Backend, dy: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (o, i) = (weight.shape()[0], weight.shape()[1]);
    let lead = &dy.shape()[..dy.shape().len() - 1];
    let rows: usize = lead.iter().product();
    let dx = ops::matmul(be, &dy.reshape(&[rows, o])?, weight, false, false, 1.0)?;
    let mut shape = lead.to_vec();
    shape.push(i);
    dx.reshape(&shape)
}

/// `y_k = x_k W_kᵀ (+ 1 b_kᵀ)`: one batched matmul, and one more against a ones column for
/// the bias (so the bias add is a device op too).
pub(super) fn dense_forward(
    be: &dyn Backend,
    x: &Tensor,
    arena: Arena,
    s: DenseSlots,
) -> Result<Tensor> {
    let (k, d) = (arena.k, arena.d);
    let (i, o) = (s.in_features, s.out_features);
    let (m, xs) = rows_of(x, k, i, "dense")?;
    let mut y = be.zeros(&[k, m, o])?;
    let slot = OutSlot {
        offset: 0,
        stride: m * o,
    };
    let w = operand(arena.params, s.w_offset, d, o, i);
    ops::matmul_into(
        be,
        k,
        operand(x, 0, xs, m, i),
        false,
        w,
        true,
        1.0,
        &mut y,
        slot,
    )?;
    let Some(b_off) = s.b_offset else {
        return Ok(y);
    };
    let ones = ones(be, m, 1)?;
    let mut yb = be.zeros(&[k, m, o])?;
    let b = operand(arena.params, b_off, d, 1, o);
    ops::matmul_into(
        be,
        k,
        operand(&ones, 0, 0, m, 1),
        false,
        b,
        false,
        1.0,
        &mut yb,
        slot,
    )?;
    ops::axpby(be, 1.0, &y, 1.0, &yb)
}

/// `dW_k = dy_kᵀ x_k`, `db_k = dy_kᵀ 1`, written into the gradient arena;
/// `dx_k = dy_k W_k` (summed over particles for a shared `x`) when asked.
pub(super) fn dense_backward(
    be: &dyn Backend,
    dy: &Tensor,
    x: &Tensor,
    arena: Arena,
    s: DenseSlots,
    need_dx: bool,
    grad: &mut Tensor,
) -> Result<Option<Tensor>> {
    let (k, d) = (arena.k, arena.d);
    let (i, o) = (s.in_features, s.out_features);
    let (m, xs) = rows_of(x, k, i, "dense backward")?;
    let dyo = operand(dy, 0, m * o, m, o);
    let w_slot = OutSlot {
        offset: s.w_offset,
        stride: d,
    };
    ops::matmul_into(
        be,
        k,
        dyo,
        true,
        operand(x, 0, xs, m, i),
        false,
        1.0,
        grad,
        w_slot,
    )?;
    if let Some(b_off) = s.b_offset {
        let ones = ones(be, m, 1)?;
        let b_slot = OutSlot {
            offset: b_off,
            stride: d,
        };
        ops::matmul_into(
            be,
            k,
            dyo,
            true,
            operand(&ones, 0, 0, m, 1),
            false,
            1.0,
            grad,
            b_slot,
        )?;
    }
    if !need_dx {
        return Ok(None);
    }
    let mut dx = be.zeros(&[k, m, i])?;
    let w = operand(arena.params, s.w_offset, d, o, i);
    let slot = OutSlot {
        offset: 0,
        stride: m * i,
    };
    ops::matmul_into(be, k, dyo, false, w, false, 1.0, &mut dx, slot)?;
    if xs != 0 {
        return Ok(Some(dx));
    }
    // Shared x: dx = Σ_k dx_k, as ones[1, K] · dx viewed as [K, M·I].
    let ones = ones(be, 1, k)?;
    let mut sum = be.zeros(&[m, i])?;
    let all = operand(&dx, 0, 0, k, m * i);
    let one = OutSlot {
        offset: 0,
        stride: 0,
    };
    ops::matmul_into(
        be,
        1,
        operand(&ones, 0, 0, 1, k),
        false,
        all,
        false,
        1.0,
        &mut sum,
        one,
    )?;
    Ok(Some(sum))
}

/// `softmax_xent` with shared labels (`[M]`) or per-particle labels (`[K·M]`). The latter
/// runs as one `[1, K·M, C]` problem, whose `dlogits` carry a `1/(K·M)` factor; scaling by K
/// gives each particle the gradient of its own mean loss.
pub(super) fn xent(be: &dyn Backend, logits: &Tensor, labels: &[u32]) -> Result<(Tensor, Tensor)> {
    let [k, m, c] = *logits.shape() else {
        return Err(BellaError::shape(
            "softmax_xent",
            "logits",
            "[K, M, C]",
            logits.shape(),
        ));
    };
    if labels.len() == m {
        return ops::softmax_xent(be, logits, labels);
    }
    if labels.len() != k * m {
        return Err(BellaError::shape(
            "softmax_xent",
            "labels",
            format!("[{m}] or [{}]", k * m),
            &[labels.len()],
        ));
    }
    let flat = logits.reshape(&[1, k * m, c])?;
    let (loss, dl) = ops::softmax_xent(be, &flat, labels)?;
    let dl = ops::axpby(be, k as f32, &dl, 0.0, &dl)?;
    Ok((loss, dl.reshape(&[k, m, c])?))
}
