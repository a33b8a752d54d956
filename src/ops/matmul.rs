//! `matmul` (DESIGN.md op 3): batched, general.
//!
//! In `a`, `b` (each `[Kb, m, n]` or shared `[m, n]`), `trans_a`, `trans_b`, `alpha`;
//! out `c = alpha · op(a) op(b)`, `[Kb, M, N]` if either input is batched, else `[M, N]`.

use super::{expect_device, expect_finite, expect_nonempty};
use crate::backend::{Backend, MatmulArgs};
use crate::error::{BellaError, Result};
use crate::tensor::{OutSlot, Strided, Tensor};

const OP: &str = "matmul";

/// One operand: `batch` blocks of `rows × cols` (as stored) inside a tensor; stride 0 = shared.
#[derive(Clone, Copy, Debug)]
pub struct MatmulOperand<'a> {
    pub view: Strided<'a>,
    pub rows: usize,
    pub cols: usize,
}

impl<'a> MatmulOperand<'a> {
    /// A whole `[m, n]` (shared) or `[Kb, m, n]` tensor.
    pub fn whole(name: &str, t: &'a Tensor) -> Result<(Self, Option<usize>)> {
        match *t.shape() {
            [m, n] => Ok((
                MatmulOperand {
                    view: Strided::contiguous(t, m * n, true),
                    rows: m,
                    cols: n,
                },
                None,
            )),
            [kb, m, n] => Ok((
                MatmulOperand {
                    view: Strided::contiguous(t, m * n, false),
                    rows: m,
                    cols: n,
                },
                Some(kb),
            )),
            _ => Err(BellaError::shape(
                OP,
                name,
                "[m, n] or [Kb, m, n]",
                t.shape(),
            )),
        }
    }
}

/// The general form: operands as strided views, `c` written into `out` at `slot`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    be: &dyn Backend,
    batch: usize,
    a: MatmulOperand,
    trans_a: bool,
    b: MatmulOperand,
    trans_b: bool,
    alpha: f32,
    out: &mut Tensor,
    slot: OutSlot,
) -> Result<()> {
    let (m, ka) = if trans_a {
        (a.cols, a.rows)
    } else {
        (a.rows, a.cols)
    };
    let (kb, n) = if trans_b {
        (b.cols, b.rows)
    } else {
        (b.rows, b.cols)
    };
    if ka != kb {
        return Err(BellaError::invalid(format!(
            "{OP}: inner dimensions differ: op(a) is [{m}, {ka}], op(b) is [{kb}, {n}]"
        )));
    }
    if batch == 0 || m == 0 || n == 0 || ka == 0 {
        return Err(BellaError::invalid(format!(
            "{OP}: empty product (batch {batch}, m {m}, n {n}, inner {ka})"
        )));
    }
    expect_finite(OP, "alpha", alpha)?;
    expect_device(
        OP,
        be,
        &[("a", a.view.tensor), ("b", b.view.tensor), ("c", out)],
    )?;
    if !a.view.fits(batch, a.rows * a.cols) || !b.view.fits(batch, b.rows * b.cols) {
        return Err(BellaError::invalid(format!(
            "{OP}: operand blocks do not fit their tensors"
        )));
    }
    let last = slot.offset + (batch - 1) * slot.stride + m * n;
    if last > out.numel() {
        return Err(BellaError::invalid(format!(
            "{OP}: output blocks do not fit a tensor of shape {:?}",
            out.shape()
        )));
    }
    if out.same_storage(a.view.tensor) || out.same_storage(b.view.tensor) {
        return Err(BellaError::invalid(format!(
            "{OP}: the output aliases an input"
        )));
    }
    be.matmul(
        &MatmulArgs {
            batch,
            m,
            n,
            inner: ka,
            a: a.view,
            b: b.view,
            trans_a,
            trans_b,
            alpha,
            out: slot,
        },
        out,
    )
}

/// The op-contract form on whole tensors.
pub fn matmul(
    be: &dyn Backend,
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
) -> Result<Tensor> {
    expect_nonempty(OP, "a", a)?;
    expect_nonempty(OP, "b", b)?;
    let (oa, ba) = MatmulOperand::whole("a", a)?;
    let (ob, bb) = MatmulOperand::whole("b", b)?;
    let batch = match (ba, bb) {
        (Some(x), Some(y)) if x != y => {
            return Err(BellaError::shape(
                OP,
                "b",
                format!("batch {x} like `a`"),
                b.shape(),
            ))
        }
        (Some(x), _) | (None, Some(x)) => Some(x),
        (None, None) => None,
    };
    let m = if trans_a { oa.cols } else { oa.rows };
    let n = if trans_b { ob.rows } else { ob.cols };
    let shape: Vec<usize> = match batch {
        Some(kb) => vec![kb, m, n],
        None => vec![m, n],
    };
    be.memory_budget().check(be.kind(), OP, &[("c", &shape)])?;
    let mut out = be.zeros(&shape)?;
    matmul_into(
        be,
        batch.unwrap_or(1),
        oa,
        trans_a,
        ob,
        trans_b,
        alpha,
        &mut out,
        OutSlot {
            offset: 0,
            stride: m * n,
        },
    )?;
    Ok(out)
}
