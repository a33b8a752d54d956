//! `lora_backward` with a 16-bit `dy` and `h` (all six inputs in one 16-bit type): the
//! contract with autocast's rounding points, composed of the backend's own ops. It is the
//! default of every backend for that case (the CPU's included: its results are the
//! reference the others meet), and the fallback of a backend whose tensor-core path does
//! not cover a shape.
//!
//! With `T` the inputs' type and `rnd` one rounding to it (to nearest, ties to even):
//! `ĝ_k = rnd(dy_k B_k)` (an f32 product, rounded once, as an autocast 16-bit matmul's output
//! would be), `d_lora_b_k = s dy_kᵀ h_k`, `d_lora_a_k = s ĝ_kᵀ x_k`,
//! `dx_k = dy_k W + s ĝ_k A_k`; for a shared x, `dx = rnd(Σ_k dy_k) W + s Σ_k ĝ_k A_k` with
//! `Σ_k dy_k` accumulated in f32. Every product accumulates in f32; outputs are f32. The two
//! roundings are what lets every product of the op take 16-bit operands (tensor cores):
//! `ĝ` feeds two products, the sum of `dy` the largest one.

use super::{widened, widened_pair, Backend, GradTargets, LoraBackwardArgs, MatmulArgs};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::{OutSlot, Strided, Tensor};

/// `x` rounded to `to` and widened back: the f32 values of `rnd(x)`.
///
/// # Safety
/// `x` is an f32 tensor on `be` and the copies fit its budget.
unsafe fn rounded<B: Backend + ?Sized>(be: &B, x: &Tensor, to: DType) -> Result<Tensor> {
    // SAFETY: the caller's contract.
    unsafe {
        let half = be.cast_unchecked(x, to)?;
        be.cast_unchecked(&half, DType::F32)
    }
}

/// `Σ_k blocks[k]` of a tensor holding `k` contiguous blocks of `len` floats, as one product
/// `ones[1, k] · blocks[k, len]` (f32 accumulation), viewed as `shape`.
///
/// # Safety
/// `blocks` is f32 on `be`, `k · len` elements.
unsafe fn block_sum<B: Backend + ?Sized>(
    be: &B,
    blocks: &Tensor,
    k: usize,
    len: usize,
    shape: &[usize],
) -> Result<Tensor> {
    let ones = be.upload(&[1, k], &vec![1.0; k])?;
    let mut sum = be.zeros(&[1, len])?;
    // SAFETY: the views fit: ones is [1, k], blocks [k, len], sum [1, len].
    unsafe {
        be.matmul_unchecked(
            &MatmulArgs {
                batch: 1,
                m: 1,
                n: len,
                inner: k,
                a: Strided {
                    tensor: &ones,
                    offset: 0,
                    stride: 0,
                },
                b: Strided {
                    tensor: blocks,
                    offset: 0,
                    stride: 0,
                },
                trans_a: false,
                trans_b: false,
                alpha: 1.0,
                out: OutSlot {
                    offset: 0,
                    stride: 0,
                },
            },
            &mut sum,
        )?;
    }
    sum.reinterpret(shape, DType::F32)
}

/// One batched product `alpha · op(a_k) · op(b_k)` into `out` at `slot` (see
/// [`MatmulArgs`]); the dims are `(batch, m, n, inner)`.
///
/// # Safety
/// As [`Backend::matmul_unchecked`]: the views and the slot lie inside their tensors.
unsafe fn product<B: Backend + ?Sized>(
    be: &B,
    (batch, m, n, inner): (usize, usize, usize, usize),
    (a, trans_a): (Strided<'_>, bool),
    (b, trans_b): (Strided<'_>, bool),
    alpha: f32,
    out: &mut Tensor,
    slot: OutSlot,
) -> Result<()> {
    // SAFETY: the caller's contract (views and slot inside their tensors).
    unsafe {
        be.matmul_unchecked(
            &MatmulArgs {
                batch,
                m,
                n,
                inner,
                a,
                b,
                trans_a,
                trans_b,
                alpha,
                out: slot,
            },
            out,
        )
    }
}

/// The contract of the module notes on any backend, from its f32 `matmul`, `cast` and
/// `axpby`: the inputs widened on the device, `ĝ` and `Σ_k dy_k` rounded by a cast round
/// trip. For a shared x the rank term takes a `[K, M, I]` scratch before its sum over
/// particles (the tensor-core path of a backend sums inside its products instead).
///
/// # Safety
/// As [`Backend::lora_backward_unchecked`]; all six inputs have one 16-bit dtype.
pub(crate) unsafe fn lora_backward_half_dy<B: Backend + ?Sized>(
    be: &B,
    args: &LoraBackwardArgs,
    grads: GradTargets<'_>,
) -> Result<Option<Tensor>> {
    let d = args.dims;
    let s = args.scale;
    let t = args.x.dtype();
    let (mo, mr, mi) = (d.m * d.o, d.m * d.r, d.m * d.i);
    let x_bs = if d.x_shared { 0 } else { mi };
    let view = |tensor, offset, stride| Strided {
        tensor,
        offset,
        stride,
    };
    let slot = |offset, stride| OutSlot { offset, stride };
    // SAFETY: the caller's contract; every view below is a block layout the op's checks
    // bounded (dy [K, M, O], x, W [O, I], the adapter views, h [K, M, r]) or a new tensor.
    unsafe {
        let (dy, h) = (widened(be, args.dy)?, widened(be, args.h)?);
        let (x, w) = (widened(be, args.x)?, widened(be, args.weight)?);
        let (a, b) = widened_pair(be, &args.a, &args.b)?;
        let (av, bv) = (
            view(&a, args.a.offset, args.a.stride),
            view(&b, args.b.offset, args.b.stride),
        );

        // ĝ_k = rnd(dy_k B_k): [K, M, r].
        let mut g = be.zeros(&[d.k, d.m, d.r])?;
        product(
            be,
            (d.k, d.m, d.r, d.o),
            (view(&dy, 0, mo), false),
            (bv, false),
            1.0,
            &mut g,
            slot(0, mr),
        )?;
        let g = rounded(be, &g, t)?;

        // d_lora_b_k [O, r] = s dy_kᵀ h_k, d_lora_a_k [r, I] = s ĝ_kᵀ x_k, into their slots.
        let (out_a, out_b): (&mut Tensor, Option<&mut Tensor>) = match grads {
            GradTargets::Arena(arena) => (arena, None),
            GradTargets::Split(ta, tb) => (ta, Some(tb)),
        };
        product(
            be,
            (d.k, d.o, d.r, d.m),
            (view(&dy, 0, mo), true),
            (view(&h, 0, mr), false),
            s,
            match out_b {
                Some(tb) => tb,
                None => &mut *out_a,
            },
            args.db,
        )?;
        product(
            be,
            (d.k, d.r, d.i, d.m),
            (view(&g, 0, mr), true),
            (view(&x, 0, x_bs), false),
            s,
            out_a,
            args.da,
        )?;

        if !args.need_dx {
            return Ok(None);
        }
        // dx: the base term and the rank term, then base + s · rank.
        let (blocks, dx_shape) = if d.x_shared {
            (1, vec![d.m, d.i])
        } else {
            (d.k, vec![d.k, d.m, d.i])
        };
        let dy_base = if d.x_shared && d.k > 1 {
            let sum = block_sum(be, &dy, d.k, mo, &[d.m, d.o])?;
            rounded(be, &sum, t)?
        } else {
            dy.clone()
        };
        let mut base = be.zeros(&dx_shape)?;
        product(
            be,
            (blocks, d.m, d.i, d.o),
            (view(&dy_base, 0, mo), false),
            (view(&w, 0, 0), false),
            1.0,
            &mut base,
            slot(0, mi),
        )?;
        let mut rank = be.zeros(&[d.k, d.m, d.i])?;
        product(
            be,
            (d.k, d.m, d.i, d.r),
            (view(&g, 0, mr), false),
            (av, false),
            1.0,
            &mut rank,
            slot(0, mi),
        )?;
        let rank = if d.x_shared && d.k > 1 {
            block_sum(be, &rank, d.k, mi, &dx_shape)?
        } else {
            rank.reinterpret(&dx_shape, DType::F32)?
        };
        Ok(Some(be.axpby_unchecked(1.0, &base, s, &rank)?))
    }
}
