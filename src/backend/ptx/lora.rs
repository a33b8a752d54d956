//! `lora_forward` (kernels/lora.ptx: h, then the fused base + rank update) and `lora_backward` (tiled GEMMs of
//! kernels/matmul.ptx).

use super::driver::{Driver, Param};
use super::gemm::{Gemm, Operand};
use super::modules::{grid_1d, u32_of, LORA};
use super::{ptr, ptr_at, PtxBackend};
use crate::backend::{GradTargets, LoraBackwardArgs, LoraForwardArgs};
use crate::error::Result;
use crate::tensor::Tensor;

/// The output tile of `lora_forward` (both modes): 128 × 128.
const TILE: usize = 128;
/// `lora_forward` holds ~180 registers per thread: one resident CTA of 256 threads per SM.
const CTAS_PER_SM: u32 = 1;
/// `lora_forward_64x32`'s output tile: 64 rows × 32 columns, the reduced dimension in
/// chunks of 64 (about 240 registers: one CTA per SM as well).
const NARROW_M: usize = 64;
const NARROW_N: usize = 32;
const NARROW_K: usize = 64;

/// Two launches, no repeated work:
/// 1. `h = x Aᵀ` for every particle, once. Shared x: the `lora_forward` kernel in h mode,
///    one GEMM `[M, I] × [I, K·r]` over the stacked (strided) A blocks; per-particle x:
///    a GEMM, K batched `[M, I] × [I, r]` (`gemm_narrow_splitk` for r ≤ 16).
/// 2. `lora_forward` in y mode: per 128 × 128 tile of y the base `x Wᵀ + bias` once, then
///    for each particle `y_k = base + s h_k B_kᵀ` (shared x: all K per tile; per-particle
///    x: one particle per work unit, its own base).
///
/// A shared x with fewer 128 × 128 tiles of y than SMs runs `forward_narrow` instead.
pub fn forward<D: Driver>(be: &PtxBackend<D>, args: &LoraForwardArgs) -> Result<(Tensor, Tensor)> {
    let d = args.dims;
    let y = be.storage(d.k * d.m * d.o)?;
    let h = be.storage(d.k * d.m * d.r)?;
    if d.k == 0 || d.m == 0 || d.o == 0 || d.r == 0 {
        return Ok((
            be.tensor(&[d.k, d.m, d.o], y)?,
            be.tensor(&[d.k, d.m, d.r], h)?,
        ));
    }
    let x = be.buf(args.x)?;
    let w = be.buf(args.weight)?;
    let a = be.buf(args.a.tensor)?;
    let b = be.buf(args.b.tensor)?;
    let bias = args.bias.map(|t| be.buf(t)).transpose()?;
    let sms = be.props().sm_count.max(1) as usize;
    // A shared x with fewer 128 × 128 tiles of y than SMs (e.g. M = 256): the 64 × 32 tile
    // kernel, no partial tiles of y.
    if d.x_shared && d.m.div_ceil(TILE) * d.o.div_ceil(TILE) < sms {
        forward_narrow(be, args, &y.buf, &h.buf, sms)?;
        return Ok((
            be.tensor(&[d.k, d.m, d.o], y)?,
            be.tensor(&[d.k, d.m, d.r], h)?,
        ));
    }
    let x_bs = if d.x_shared { 0 } else { d.m * d.i };
    let kname = "lora_forward";
    // One launch of the kernel over `units` output tiles (× `splits` in split mode).
    let launch = |flags: u32, units: usize, part: Option<&D::Buf>, splits: usize, chunk: usize| {
        u32_of(kname, "work units", units * splits)?;
        let params = vec![
            ("p_y", ptr(&y.buf)),
            ("p_h", ptr(&h.buf)),
            ("p_x", ptr(x)),
            ("p_w", ptr(w)),
            ("p_bias", ptr(bias.unwrap_or(w))), // not read unless flag bit 0
            ("p_a", ptr_at(a, args.a.offset)),
            ("p_b", ptr_at(b, args.b.offset)),
            ("p_m", Param::U32(u32_of(kname, "M", d.m)?)),
            ("p_o", Param::U32(u32_of(kname, "O", d.o)?)),
            ("p_i", Param::U32(u32_of(kname, "I", d.i)?)),
            ("p_r", Param::U32(u32_of(kname, "r", d.r)?)),
            ("p_k", Param::U32(u32_of(kname, "K", d.k)?)),
            ("p_x_bs", Param::U32(u32_of(kname, "x block stride", x_bs)?)),
            (
                "p_a_ps",
                Param::U32(u32_of(kname, "lora_a particle stride", args.a.stride)?),
            ),
            (
                "p_b_ps",
                Param::U32(u32_of(kname, "lora_b particle stride", args.b.stride)?),
            ),
            ("p_flags", Param::U32(flags)),
            ("p_scale", Param::F32(args.scale)),
            ("p_part", ptr(part.unwrap_or(&y.buf))), // not read unless flag bit 3 or 4
            ("p_splits", Param::U32(u32_of(kname, "splits", splits)?)),
            ("p_ichunk", Param::U32(u32_of(kname, "split chunk", chunk)?)),
        ];
        be.launch_named(
            LORA,
            kname,
            grid_1d(be.props(), units * splits, CTAS_PER_SM),
            params,
        )
    };
    let tiles_m = d.m.div_ceil(TILE);
    // Fewer tiles than SMs: split I into chunks (each at least 4 slices of 16), the split
    // launch writes one padded partial tile per chunk, the finish launch sums them in order
    // and runs the epilogue. `n` is the mode's column extent, `blocks` its output blocks.
    let run = |flags: u32, n: usize, blocks: usize| -> Result<()> {
        let units = tiles_m * n.div_ceil(TILE) * blocks;
        let slices = d.i.div_ceil(16);
        let want = (sms / units).min(slices / 4).max(1);
        if want == 1 {
            return launch(flags, units, None, 1, d.i.max(1));
        }
        let chunk = slices.div_ceil(want) * 16;
        let splits = d.i.div_ceil(chunk);
        let len = splits * blocks * tiles_m * TILE * n.div_ceil(TILE) * TILE;
        u32_of(kname, "partial sums", len)?;
        let part = be.storage(len)?;
        launch(flags | 8, units, Some(&part.buf), splits, chunk)?;
        launch(flags | 16, units, Some(&part.buf), splits, chunk)
    };

    // 1. h = x Aᵀ
    if d.x_shared {
        u32_of(kname, "K·r", d.k * d.r)?;
        run(2, d.k * d.r, 1)?;
    } else {
        Gemm {
            m: d.m,
            n: d.r,
            inner: d.i,
            batch: d.k,
            nred: 1,
            a: Operand {
                buf: x,
                offset: 0,
                block_stride: x_bs,
                s0: d.i,
                s1: 1,
            },
            // op(B)(i, rr) = A_k[rr, i]
            b: Operand {
                buf: a,
                offset: args.a.offset,
                block_stride: args.a.stride,
                s0: 1,
                s1: d.i,
            },
            c: &h.buf,
            c_offset: 0,
            c_block: d.m * d.r,
            c_row: d.r,
            alpha: 1.0,
            beta: None,
            bias: None,
        }
        .launch(be)?;
    }

    // 2. y
    let per_particle = !d.x_shared;
    let flags = u32::from(bias.is_some()) | (u32::from(per_particle) << 2);
    run(flags, d.o, if per_particle { d.k } else { 1 })?;
    Ok((
        be.tensor(&[d.k, d.m, d.o], y)?,
        be.tensor(&[d.k, d.m, d.r], h)?,
    ))
}

/// Shared x, few tiles: `lora_forward_64x32` in h mode (`[M, I] × [I, K·r]` in 64 × 32
/// tiles, I split into chunks of whole 64-deep slices so that about `sms` CTAs run; the
/// chunks' partial h summed by `sum_blocks`), then in y mode (64 × 32 tiles of y over all of
/// I: base + bias once, then each particle's rank update).
fn forward_narrow<D: Driver>(
    be: &PtxBackend<D>,
    args: &LoraForwardArgs,
    y: &D::Buf,
    h: &D::Buf,
    sms: usize,
) -> Result<()> {
    let d = args.dims;
    let kname = "lora_forward_64x32";
    let x = be.buf(args.x)?;
    let w = be.buf(args.weight)?;
    let a = be.buf(args.a.tensor)?;
    let b = be.buf(args.b.tensor)?;
    let bias = args.bias.map(|t| be.buf(t)).transpose()?;
    let kr = d.k * d.r;
    let h_len = d.k * d.m * d.r;
    let launch = |flags: u32, out_h: &D::Buf, units: usize, splits: usize, chunk: usize| {
        u32_of(kname, "work units", units)?;
        let params = vec![
            ("p_y", ptr(y)),
            ("p_h", ptr(out_h)),
            ("p_x", ptr(x)),
            ("p_w", ptr(w)),
            ("p_bias", ptr(bias.unwrap_or(w))), // not read unless flag bit 0
            ("p_a", ptr_at(a, args.a.offset)),
            ("p_b", ptr_at(b, args.b.offset)),
            ("p_m", Param::U32(u32_of(kname, "M", d.m)?)),
            ("p_o", Param::U32(u32_of(kname, "O", d.o)?)),
            ("p_i", Param::U32(u32_of(kname, "I", d.i)?)),
            ("p_r", Param::U32(u32_of(kname, "r", d.r)?)),
            ("p_k", Param::U32(u32_of(kname, "K", d.k)?)),
            (
                "p_a_ps",
                Param::U32(u32_of(kname, "lora_a particle stride", args.a.stride)?),
            ),
            (
                "p_b_ps",
                Param::U32(u32_of(kname, "lora_b particle stride", args.b.stride)?),
            ),
            ("p_flags", Param::U32(flags)),
            ("p_scale", Param::F32(args.scale)),
            ("p_splits", Param::U32(u32_of(kname, "splits", splits)?)),
            ("p_ichunk", Param::U32(u32_of(kname, "split chunk", chunk)?)),
        ];
        be.launch_named(LORA, kname, grid_1d(be.props(), units, CTAS_PER_SM), params)
    };
    // 1. h = x Aᵀ: split I so that the launch has about `sms` CTAs
    u32_of(kname, "K·r", kr)?;
    let tiles = d.m.div_ceil(NARROW_M) * kr.div_ceil(NARROW_N);
    let slices = d.i.div_ceil(NARROW_K);
    let want = (sms / tiles).min(slices).max(1);
    let chunk = slices.div_ceil(want).max(1) * NARROW_K;
    let splits = d.i.div_ceil(chunk).max(1);
    if splits == 1 {
        launch(2, h, tiles, 1, chunk)?;
    } else {
        u32_of(kname, "partial h", splits * h_len)?;
        let part = be.storage(splits * h_len)?;
        launch(2, &part.buf, tiles * splits, splits, chunk)?;
        super::activation::sum_blocks(be, &part.buf, splits, h_len, h)?;
    }
    // 2. y tiles over all of I
    let units = d.m.div_ceil(NARROW_M) * d.o.div_ceil(NARROW_N);
    launch(u32::from(bias.is_some()), h, units, 1, d.i)
}

/// With `g_k = dy_k B_k` (`[M, r]`, a scratch buffer):
/// `d_lora_b_k = s dy_kᵀ h_k`, `d_lora_a_k = s g_kᵀ x_k`, `dx_k = dy_k W + s g_k A_k`, and for
/// a shared x `dx = (Σ_k dy_k) W + s Σ_k g_k A_k`: `dy` summed over particles first, then one
/// GEMM for the base term; the rank term summed inside its GEMM (nred = K).
pub fn backward<D: Driver>(
    be: &PtxBackend<D>,
    args: &LoraBackwardArgs,
    grads: GradTargets<'_>,
) -> Result<Option<Tensor>> {
    let d = args.dims;
    let s = args.scale;
    let (mo, mr, mi) = (d.m * d.o, d.m * d.r, d.m * d.i);
    let x_bs = if d.x_shared { 0 } else { mi };
    let dy = be.buf(args.dy)?;
    let x = be.buf(args.x)?;
    let w = be.buf(args.weight)?;
    let a = be.buf(args.a.tensor)?;
    let b = be.buf(args.b.tensor)?;
    let h = be.buf(args.h)?;
    let g = be.storage(d.k * mr)?;

    // g_k = dy_k B_k: op(A) = dy_k [M, O], op(B) = B_k [O, r] as stored.
    Gemm {
        m: d.m,
        n: d.r,
        inner: d.o,
        batch: d.k,
        nred: 1,
        a: Operand {
            buf: dy,
            offset: 0,
            block_stride: mo,
            s0: d.o,
            s1: 1,
        },
        b: Operand {
            buf: b,
            offset: args.b.offset,
            block_stride: args.b.stride,
            s0: d.r,
            s1: 1,
        },
        c: &g.buf,
        c_offset: 0,
        c_block: mr,
        c_row: d.r,
        alpha: 1.0,
        beta: None,
        bias: None,
    }
    .launch(be)?;

    let dx = if args.need_dx {
        let dx_len = if d.x_shared { mi } else { d.k * mi };
        let dx = be.storage(dx_len)?;
        // Shared x: one output block summing all K particles; else K blocks.
        let (batch, nred) = if d.x_shared { (1, d.k) } else { (d.k, 1) };
        // Shared x: `Σ_k dy_k W = (Σ_k dy_k) W`, so sum dy first (one pass, `sum_blocks`)
        // and run one GEMM instead of K.
        let dy_sum = if d.x_shared && d.k > 1 {
            let sum = be.storage(mo)?;
            super::activation::sum_blocks(be, dy, d.k, mo, &sum.buf)?;
            Some(sum)
        } else {
            None
        };
        let (dy_src, dy_nred) = match &dy_sum {
            Some(sum) => (&sum.buf, 1),
            None => (dy, nred),
        };
        // dx = dy W: op(B) = W [O, I] as stored, shared by every particle.
        Gemm {
            m: d.m,
            n: d.i,
            inner: d.o,
            batch,
            nred: dy_nred,
            a: Operand {
                buf: dy_src,
                offset: 0,
                block_stride: mo,
                s0: d.o,
                s1: 1,
            },
            b: Operand {
                buf: w,
                offset: 0,
                block_stride: 0,
                s0: d.i,
                s1: 1,
            },
            c: &dx.buf,
            c_offset: 0,
            c_block: mi,
            c_row: d.i,
            alpha: 1.0,
            beta: None,
            bias: None,
        }
        .launch(be)?;
        // dx += s g A: op(B) = A_k [r, I] as stored.
        Gemm {
            m: d.m,
            n: d.i,
            inner: d.r,
            batch,
            nred,
            a: Operand {
                buf: &g.buf,
                offset: 0,
                block_stride: mr,
                s0: d.r,
                s1: 1,
            },
            b: Operand {
                buf: a,
                offset: args.a.offset,
                block_stride: args.a.stride,
                s0: d.i,
                s1: 1,
            },
            c: &dx.buf,
            c_offset: 0,
            c_block: mi,
            c_row: d.i,
            alpha: s,
            beta: Some(1.0),
            bias: None,
        }
        .launch(be)?;
        let shape = if d.x_shared {
            vec![d.m, d.i]
        } else {
            vec![d.k, d.m, d.i]
        };
        Some(be.tensor(&shape, dx)?)
    } else {
        None
    };

    let (out_a, out_b) = match grads {
        GradTargets::Arena(grad) => {
            let g = be.buf_mut(grad)?;
            (g, g)
        }
        GradTargets::Split(da, db) => (be.buf_mut(da)?, be.buf_mut(db)?),
    };
    // d_lora_b_k [O, r] = s dy_kᵀ h_k: op(A)(o, m) = dy_k[m, o], op(B) = h_k [M, r].
    Gemm {
        m: d.o,
        n: d.r,
        inner: d.m,
        batch: d.k,
        nred: 1,
        a: Operand {
            buf: dy,
            offset: 0,
            block_stride: mo,
            s0: 1,
            s1: d.o,
        },
        b: Operand {
            buf: h,
            offset: 0,
            block_stride: mr,
            s0: d.r,
            s1: 1,
        },
        c: out_b,
        c_offset: args.db.offset,
        c_block: args.db.stride,
        c_row: d.r,
        alpha: s,
        beta: None,
        bias: None,
    }
    .launch(be)?;
    // d_lora_a_k [r, I] = s g_kᵀ x_k: op(A)(rr, m) = g_k[m, rr], op(B) = x_k [M, I].
    Gemm {
        m: d.r,
        n: d.i,
        inner: d.m,
        batch: d.k,
        nred: 1,
        a: Operand {
            buf: &g.buf,
            offset: 0,
            block_stride: mr,
            s0: 1,
            s1: d.r,
        },
        b: Operand {
            buf: x,
            offset: 0,
            block_stride: x_bs,
            s0: d.i,
            s1: 1,
        },
        c: out_a,
        c_offset: args.da.offset,
        c_block: args.da.stride,
        c_row: d.i,
        alpha: s,
        beta: None,
        bias: None,
    }
    .launch(be)?;
    Ok(dx)
}
