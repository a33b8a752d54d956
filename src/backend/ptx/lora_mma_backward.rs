//! The tensor-core `lora_backward`: bf16/f16 `x`, `weight`, `lora_a`, `lora_b` with `dy` and
//! `h` in the same type (the autocast contract of `ops::lora_backward`: `ĝ = rnd(dy B)` and,
//! for a shared x, `rnd(Σ_k dy_k)`), each product one batched `gemm_mma` launch for all K
//! particles, the operands read as stored through the kernel's layouts (K-contiguous or
//! K-major, `ldmatrix .trans`), f32 accumulation, f32 gradients:
//!
//! | product | op(A) | op(B) | C |
//! | --- | --- | --- | --- |
//! | `g_k = dy_k B_k` | `dy_k [M, O]` | `B_k [O, r]` K-major | scratch `[K, M, r]` f32, then `ĝ = rnd(g)` (`cast`) |
//! | `d_lora_b_k = s dy_kᵀ h_k` | `dy_k` K-major (`[M, O]` read as `[k, m]`) | `h_k [M, r]` K-major | the `d_lora_b` slot |
//! | `d_lora_a_k = s ĝ_kᵀ x_k` | `ĝ_k` K-major | `x_k [M, I]` K-major | the `d_lora_a` slot |
//! | `dx = dy W` (shared x: `rnd(Σ_k dy_k) W`) | `dy_k` / the rounded sum `[M, O]` | `W [O, I]` K-major | `dx` |
//! | `dx += s ĝ_k A_k` | `ĝ_k [M, r]` | `A_k [r, I]` K-major | `dx` (beta 1) |
//!
//! **Shared x, M a multiple of 8** (the stacked path): ĝ is computed transposed, so that the
//! K rank products into the one dx (which a batch cannot take: its blocks would race on the
//! tiles) become one product over K·r:
//!
//! | product | op(A) | op(B) | C |
//! | --- | --- | --- | --- |
//! | `g_kᵀ = B_kᵀ dy_kᵀ` | `B_k [O, r]` K-major | `dy_k [M, O]` | scratch `[K, r, M]` f32, then `ĝᵀ` (`cast`) |
//! | `d_lora_a_k = s ĝ_kᵀ x` | `ĝᵀ_k [r, M]` | `x [M, I]` K-major (batch stride 0) | the `d_lora_a` slot |
//! | `dx += s Ĝ [A_0; …; A_K-1]` | `ĝᵀ` read as `[K·r, M]` K-major | the lora_a blocks `[K·r, I]` K-major | `dx` (beta 1), one launch |
//!
//! (`d_lora_b` and the base `dx` as above.) Each element of `gᵀ` is the sum over O of the
//! same products in the same order as `g`'s, so `ĝᵀ` holds ĝ's values; only the rank term's
//! f32 accumulation changes (over K·r in one product, added to dx once, instead of K
//! additions). The lora_a blocks are read in place when contiguous (`stride == r·I`, or K =
//! 1); a parameter arena's (blocks D apart) are first copied into a contiguous 16-bit scratch
//! by one `gather_blocks` launch (kernels/activation.ptx). Other M keep the K launches; a
//! per-particle x is unchanged.
//!
//! So O, r and I must be multiples of 8 (16-byte rows of every operand and block), the
//! adapter views 16-byte aligned ([`covers`]); other shapes take the composed f32 path. A
//! shared x's `rnd(Σ_k dy_k)` is one `sum_blocks_bf16` / `_f16` launch (kernels/activation.ptx:
//! dy read once, f32 sums in block order, one rounding).

use super::activation::{gather_blocks, sum_blocks_half};
use super::cast::cast_buf;
use super::driver::Driver;
use super::gemm_mma::{gemm_mma, Batch, HalfType, Layouts, MmaGemm};
use super::PtxBackend;
use crate::backend::{GradTargets, LoraBackwardArgs};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// Whether the tensor-core path computes this `lora_backward`: all six inputs one 16-bit
/// type, O, r and I multiples of 8, the `lora_a` / `lora_b` blocks 16-byte aligned (offsets
/// and strides multiples of 8 elements).
pub(crate) fn covers(args: &LoraBackwardArgs) -> bool {
    let d = args.dims;
    let t = args.x.dtype();
    let eight = |v: usize| v.is_multiple_of(8);
    t.is_half()
        && args.dy.dtype() == t
        && args.h.dtype() == t
        && eight(d.o)
        && eight(d.r)
        && eight(d.i)
        && eight(args.a.offset)
        && eight(args.a.stride)
        && eight(args.b.offset)
        && eight(args.b.stride)
}

/// Whether a shared x's rank term runs as one product over K·r (the stacked path, see the
/// module notes): a shared x and M a multiple of 8 (ĝᵀ's rows of M are a K-contiguous
/// operand, and `[K·r, M]` a K-major one).
fn stacked(args: &LoraBackwardArgs) -> bool {
    args.dims.x_shared && args.dims.m.is_multiple_of(8)
}

/// The module's products (the caller checked [`covers`] and the op's checks passed).
pub(crate) fn backward<D: Driver>(
    be: &PtxBackend<D>,
    args: &LoraBackwardArgs,
    grads: GradTargets<'_>,
) -> Result<Option<Tensor>> {
    backward_with(be, args, grads, stacked(args))
}

/// [`backward`] on the stacked path (`stacked`: a shared x, M a multiple of 8) or on the
/// per-particle layout of ĝ (`[K, M, r]`, a shared x's rank term K launches); the tests run
/// both on one case.
fn backward_with<D: Driver>(
    be: &PtxBackend<D>,
    args: &LoraBackwardArgs,
    grads: GradTargets<'_>,
    stacked: bool,
) -> Result<Option<Tensor>> {
    let d = args.dims;
    let s = args.scale;
    let dtype = args.x.dtype();
    let half = HalfType::of("lora_backward (tensor cores)", dtype)?;
    let (mo, mr, mi, ri) = (d.m * d.o, d.m * d.r, d.m * d.i, d.r * d.i);
    let (dy, x, w) = (be.buf(args.dy)?, be.buf(args.x)?, be.buf(args.weight)?);
    let (a, b, h) = (
        be.buf(args.a.tensor)?,
        be.buf(args.b.tensor)?,
        be.buf(args.h)?,
    );
    // Words of a 16-bit element offset (the blocks are 16-byte aligned: `covers`).
    let w16 = |elems: usize| elems / 2;
    let nk = Layouts {
        a_kmajor: false,
        b_kmajor: true,
    };
    let kn = Layouts {
        a_kmajor: true,
        b_kmajor: false,
    };
    let kk = Layouts {
        a_kmajor: true,
        b_kmajor: true,
    };
    let gemm = |m, n, k, a, b, c, alpha, beta, layouts, batch| {
        launch(be, half, (m, n, k), a, b, c, (alpha, beta), layouts, batch)
    };
    // The K particles' blocks, one launch: strides in 16-bit elements (A, B) and floats (C).
    let per_particle = |a, b, c| Batch {
        count: d.k,
        a,
        b,
        c,
    };

    // ĝ_k = rnd(dy_k B_k): f32 products into a scratch, one rounding into a 16-bit copy.
    // Stacked: gᵀ_k [r, M] = B_kᵀ dy_kᵀ, the scratch [K, r, M] (each element the same sum
    // over O in the same order: the same values, transposed).
    let g = be.storage(d.k * mr)?;
    let g16 = be.storage(dtype.words(d.k * mr))?;
    let b_off = w16(args.b.offset);
    if stacked {
        let batch = per_particle(args.b.stride, mo, mr);
        let (b_k, dy_k) = ((b, b_off), (dy, 0));
        gemm(d.r, d.m, d.o, b_k, dy_k, (&g.buf, 0), 1.0, None, kn, batch)?;
    } else {
        let batch = per_particle(mo, args.b.stride, mr);
        gemm(
            d.m,
            d.r,
            d.o,
            (dy, 0),
            (b, b_off),
            (&g.buf, 0),
            1.0,
            None,
            nk,
            batch,
        )?;
    }
    cast_buf(be, DType::F32, dtype, &g16.buf, &g.buf, d.k * mr)?;

    // d_lora_b_k [O, r] = s dy_kᵀ h_k and d_lora_a_k [r, I] = s ĝ_kᵀ x_k, into their slots.
    let (out_a, out_b) = match grads {
        GradTargets::Arena(grad) => {
            let g = be.buf_mut(grad)?;
            (g, g)
        }
        GradTargets::Split(da, db) => (be.buf_mut(da)?, be.buf_mut(db)?),
    };
    let x_block = if d.x_shared { 0 } else { mi };
    let batch = per_particle(mo, mr, args.db.stride);
    let c_b = (out_b, args.db.offset);
    gemm(d.o, d.r, d.m, (dy, 0), (h, 0), c_b, s, None, kk, batch)?;
    let batch = per_particle(mr, x_block, args.da.stride);
    let c_a = (out_a, args.da.offset);
    // stacked: ĝᵀ_k [r, M] K-contiguous (rows of M); else ĝ_k [M, r] K-major
    let layouts = if stacked { nk } else { kk };
    gemm(
        d.r,
        d.i,
        d.m,
        (&g16.buf, 0),
        (x, 0),
        c_a,
        s,
        None,
        layouts,
        batch,
    )?;

    if !args.need_dx {
        return Ok(None);
    }
    // dx: the base product(s), then the rank products accumulated (beta 1).
    let dx = be.storage(if d.x_shared { mi } else { d.k * mi })?;
    let a_off = w16(args.a.offset);
    if d.x_shared {
        let sum16;
        let base_a = if d.k > 1 {
            // rnd(Σ_k dy_k): the K blocks summed in f32 and rounded once, dy read once.
            sum16 = be.storage(dtype.words(mo))?;
            sum_blocks_half(be, dtype, dy, (d.k, mo), &sum16.buf)?;
            &sum16.buf
        } else {
            dy
        };
        let one = Batch::ONE;
        gemm(
            d.m,
            d.i,
            d.o,
            (base_a, 0),
            (w, 0),
            (&dx.buf, 0),
            1.0,
            None,
            nk,
            one,
        )?;
        if stacked {
            // Σ_k ĝ_k A_k = Ĝ [M, K·r] · [A_0; …; A_K-1] [K·r, I]: one product over K·r, ĝᵀ
            // read as [K·r, M] (K-major) and the lora_a blocks stacked [K·r, I] (K-major), in
            // place when contiguous, else gathered (an arena's blocks D apart).
            let stack;
            let a_stack = if d.k == 1 || args.a.stride == ri {
                (a, a_off)
            } else {
                stack = be.storage(dtype.words(d.k * ri))?;
                let blocks = (d.k, w16(ri), w16(args.a.stride));
                gather_blocks(be, (a, a_off), blocks, &stack.buf)?;
                (&stack.buf, 0)
            };
            let g_all = (&g16.buf, 0);
            let c = (&dx.buf, 0);
            gemm(
                d.m,
                d.i,
                d.k * d.r,
                g_all,
                a_stack,
                c,
                s,
                Some(1.0),
                kk,
                one,
            )?;
        } else {
            // every particle adds into the one dx: K launches (a batch would race on its
            // tiles)
            for k in 0..d.k {
                let g_k = (&g16.buf, w16(k * mr));
                let a_k = (a, a_off + w16(k * args.a.stride));
                gemm(d.m, d.i, d.r, g_k, a_k, (&dx.buf, 0), s, Some(1.0), nk, one)?;
            }
        }
    } else {
        let batch = per_particle(mo, 0, mi);
        gemm(
            d.m,
            d.i,
            d.o,
            (dy, 0),
            (w, 0),
            (&dx.buf, 0),
            1.0,
            None,
            nk,
            batch,
        )?;
        let batch = per_particle(mr, args.a.stride, mi);
        let g_all = (&g16.buf, 0);
        gemm(
            d.m,
            d.i,
            d.r,
            g_all,
            (a, a_off),
            (&dx.buf, 0),
            s,
            Some(1.0),
            nk,
            batch,
        )?;
    }
    let shape = if d.x_shared {
        vec![d.m, d.i]
    } else {
        vec![d.k, d.m, d.i]
    };
    Ok(Some(be.tensor(&shape, dx)?))
}

/// One `gemm_mma` launch: `c[m, n] (+)= alpha · op(a) · op(b)` for each block of `batch`,
/// each operand `(buffer, offset in words)` (C's in floats).
#[allow(clippy::too_many_arguments)]
fn launch<D: Driver>(
    be: &PtxBackend<D>,
    dtype: HalfType,
    (m, n, k): (usize, usize, usize),
    (a, a_offset): (&D::Buf, usize),
    (b, b_offset): (&D::Buf, usize),
    (c, c_offset): (&D::Buf, usize),
    (alpha, beta): (f32, Option<f32>),
    layouts: Layouts,
    batch: Batch,
) -> Result<()> {
    gemm_mma(
        be,
        &MmaGemm {
            dtype,
            m,
            n,
            k,
            a,
            a_offset,
            b,
            b_offset,
            c,
            c_offset,
            alpha,
            beta,
            c_block: None,
            layouts,
            batch,
        },
    )
}

#[cfg(all(test, feature = "ptx-sim"))]
mod tests;
