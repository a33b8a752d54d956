//! `matmul` (DESIGN.md op 3); the contract is on [`matmul`].

use super::{expect_device, expect_finite, expect_nonempty};
use crate::backend::{Backend, MatmulArgs};
use crate::error::{BellaError, Result};
use crate::tensor::{OutSlot, Strided, Tensor};

const OP: &str = "matmul";

/// One operand: `batch` blocks of `rows × cols` (as stored) inside a tensor; stride 0 = shared.
#[derive(Clone, Copy, Debug)]
pub struct MatmulOperand<'a> {
    /// Where the blocks are: block `k` at `view.offset + k * view.stride`.
    pub view: Strided<'a>,
    /// Rows of one block as stored (before any transpose).
    pub rows: usize,
    /// Columns of one block as stored.
    pub cols: usize,
}

impl<'a> MatmulOperand<'a> {
    /// `rows × cols` blocks of `tensor` from element `offset`, `stride` elements apart (0:
    /// one block shared by every product).
    pub fn strided(
        tensor: &'a Tensor,
        offset: usize,
        stride: usize,
        rows: usize,
        cols: usize,
    ) -> Self {
        MatmulOperand {
            view: Strided {
                tensor,
                offset,
                stride,
            },
            rows,
            cols,
        }
    }

    /// A whole `[m, n]` (shared, stride 0) or `[Kb, m, n]` tensor; also returns the batch
    /// `Some(Kb)` for a 3-D tensor, `None` for a shared one. `name` is used in errors.
    ///
    /// # Errors
    /// [`BellaError::Shape`] if `t` is neither 2-D nor 3-D.
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

/// [`matmul`] on strided views, writing into an existing tensor: for each of `batch`
/// blocks, `c = alpha · op(a) op(b)` (`[m, n]`) is written at `slot.offset + k * slot.stride`
/// of `out`; the rest of `out` is left as it was. An operand with stride 0 is shared by every
/// block.
///
/// # Errors
/// [`BellaError::Invalid`] if the inner dimensions differ, a size is 0, `alpha` is not
/// finite, a block (in or out) does not fit its tensor, `out` shares storage with an input,
/// or a tensor is on another backend.
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

/// `matmul` (DESIGN.md op 3): batched, general `c = alpha · op(a) op(b)`, where `op(t)` is
/// `tᵀ` when its `trans_*` flag is set.
///
/// `a`, `b` are each `[Kb, rows, cols]` or shared `[rows, cols]` (a shared operand is used
/// for every batch entry). With `op(a)` `[m, n_inner]` and `op(b)` `[n_inner, n]`, out `c` is
/// `[Kb, m, n]` if either input is batched, else `[m, n]`. The workhorse for full-weight
/// gradients (`dW_k = dy_kᵀ x_k`) and anything the fused kernels don't cover.
///
/// **Dtypes.** `a` and `b` are both f32, or both bf16 or both f16 ([`crate::dtype`]); `c`
/// is f32 either way: the product of the exact 16-bit values accumulated in f32 (as a
/// tensor core does). On PTX (cuda, ptx-sim) bf16/f16 products run the tensor-core kernel
/// `gemm_mma_*` in every `trans_a` / `trans_b` layout, given blocks at offsets and strides
/// that are multiples of 8 elements, `m` (`n`) a multiple of 8 where `a` is stored
/// `[n_inner, m]` (`b` stored `[n_inner, n]`), and the inner dimension a multiple of 8 unless
/// both are; every other case, and the other backends, widen the operands on the device
/// and run the f32 kernel (same result within f32 accumulation; a temporary f32 copy).
///
/// # Errors
/// [`BellaError::Shape`] if an operand is not 2-D or 3-D, is empty, or the two batches
/// differ; [`BellaError::Invalid`] if the inner dimensions differ, `alpha` is not finite,
/// `a` and `b` have different dtypes, or a tensor is on another backend; [`BellaError::Device`] if the output does not fit the
/// backend's [memory budget](crate::backend::MemoryBudget).
///
/// # Example
///
/// `c = 2 · a bᵀ` with `a = [[1, 2, 3], [4, 5, 6]]`, `b = [[1, 0, 0], [0, 1, 1]]`:
/// `a bᵀ = [[1, 5], [4, 11]]`.
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::{ops, Backend};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let a = be.upload(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// let b = be.upload(&[2, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 1.0])?;
/// let c = ops::matmul(&be, &a, &b, false, true, 2.0)?;
/// assert_eq!(c.shape(), &[2, 2]);
/// assert_eq!(be.download(&c)?, vec![2.0, 10.0, 8.0, 22.0]);
///
/// // A batched `a` [2, 2, 3] against the shared `b`: one product per batch entry.
/// let a2 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
/// let a2 = be.upload(&[2, 2, 3], &a2)?;
/// let c2 = ops::matmul(&be, &a2, &b, false, true, 1.0)?;
/// assert_eq!(c2.shape(), &[2, 2, 2]);
/// assert_eq!(be.download(&c2)?, vec![1.0, 5.0, 4.0, 11.0, 0.0, 0.0, 1.0, 2.0]);
/// # Ok(())
/// # }
/// ```
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
