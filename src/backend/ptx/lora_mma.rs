//! `lora_forward_mma_bf16` / `lora_forward_mma_f16` (kernels/lora.ptx): the tensor-core
//! fused LoRA forward, all K particles in one launch:
//!
//! `y_k[M, O] (f32) = x_k[M, I] · W[O, I]ᵀ (+ bias[O]) + s · h_k[M, r] · B_k[O, r]ᵀ`, k < K,
//!
//! with one `x` shared by the particles or one `x_k` per particle ([`LoraMma::x_ps`]).
//! x, W and B are bf16 or f16 in bella's packed storage (two per 32-bit word, element `2i`
//! in the low half: `crate::dtype`), h, bias and y are f32. The base product `x_k Wᵀ` runs
//! gemm_mma's mainloop once per 128 × 128 output tile (a shared x: once for all particles);
//! the rank term is an mma epilogue on top of it, with `s·h` split exactly into three 16-bit
//! terms (hi + mid + lo, three mma per k16 step) so that the rank term is f32 math (see the
//! kernel's header).
//!
//! **In the ops**: `ops::lora_forward` on PTX runs it for a 16-bit `x` where it `covers`
//! the case (`forward`: h by `gemm_mma` — one blocked-store launch for a shared x and
//! stacked `lora_a` blocks, else one batched launch — then this kernel); other 16-bit cases
//! widen their operands on the device.

use super::driver::{Driver, Param};
use super::gemm_mma::{gemm_mma, Batch, HalfType, MmaGemm};
use super::modules::{grid_1d, resident_ctas, u32_of, LORA};
use super::{ptr_at, PtxBackend};
use crate::backend::LoraForwardArgs;
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

/// One launch. Offsets of the 16-bit operands are in 32-bit words (x and W: multiples of 4,
/// 16-byte aligned rows), of the f32 operands in floats.
pub struct LoraMma<'a, B> {
    /// the format of x, W and B ([`DType::BF16`] or [`DType::F16`]; selects the kernel)
    pub dtype: DType,
    /// rows of x and of each y_k
    pub m: usize,
    /// rows of W and B_k, columns of y_k
    pub o: usize,
    /// the inner dimension of x Wᵀ: at least 8 and a multiple of 8
    pub i: usize,
    /// the rank r (≥ 1)
    pub r: usize,
    /// particles K (≥ 1)
    pub k: usize,
    /// x `[m, i]` (shared), or the K blocks x_k `[m, i]` (per particle), packed
    pub x: &'a B,
    /// words before x's (x_0's) first element (a multiple of 4)
    pub x_offset: usize,
    /// `None`: one x for every particle; `Some(ps)`: x per particle, x_k starting `ps`
    /// 16-bit elements after x_k-1 (a multiple of 8: 16-byte aligned rows)
    pub x_ps: Option<usize>,
    /// W `[o, i]`, packed
    pub w: &'a B,
    /// words before W's first element (a multiple of 4)
    pub w_offset: usize,
    /// `Some((buffer, float offset))`: bias `[o]`, f32; `None`: no bias (not read)
    pub bias: Option<(&'a B, usize)>,
    /// h `[k, m, r]`, f32
    pub h: &'a B,
    /// floats before h's first element
    pub h_offset: usize,
    /// B_k `[o, r]` at element `k · b_ps` from `b_offset`, packed
    pub b: &'a B,
    /// words before B_0's first element
    pub b_offset: usize,
    /// 16-bit elements between the starts of B_k and B_k+1 (any; usually ≥ o·r)
    pub b_ps: usize,
    /// y `[k, m, o]`, f32
    pub y: &'a B,
    /// floats before y's first element
    pub y_offset: usize,
    /// the LoRA scale s
    pub scale: f32,
}

/// Output tile of one CTA (square).
pub const TILE: usize = 128;
/// Registers per thread, the larger of ptxas' sm_80 (212) and sm_90 (216) reports.
pub const REGS: u32 = 216;
/// Static shared memory per CTA (gemm_mma's 3 stages; the epilogue stages the rank operands
/// in two 16 KiB buffers of them).
pub const SMEM: u32 = 49152;

/// The kernel entry for `dtype`.
pub fn kernel(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::BF16 => Ok("lora_forward_mma_bf16"),
        DType::F16 => Ok("lora_forward_mma_f16"),
        DType::F32 => Err(BellaError::invalid(
            "lora_forward_mma: x, W and B must be bf16 or f16, not f32",
        )),
    }
}

/// CTAs resident per SM on both sm_80 and sm_90 (1: registers), the grid's CTAs per SM.
pub fn blocks_per_sm() -> u32 {
    resident_ctas(REGS, SMEM)
}

/// Launch `l` on `be` (the `lora` module).
pub fn lora_forward_mma<D: Driver>(be: &PtxBackend<D>, l: &LoraMma<'_, D::Buf>) -> Result<()> {
    launch_in(be, LORA, l)
}

/// Launch `l` with the kernel of `module` (tests load altered copies under other names).
pub(crate) fn launch_in<D: Driver>(
    be: &PtxBackend<D>,
    module: &str,
    l: &LoraMma<'_, D::Buf>,
) -> Result<()> {
    let name = kernel(l.dtype)?;
    check(be.driver(), name, l)?;
    // work units: the output tiles (all particles each), or every particle's tiles
    let tiles = l.m.div_ceil(TILE) * l.o.div_ceil(TILE);
    let units = if l.x_ps.is_some() { tiles * l.k } else { tiles };
    u32_of(
        name,
        "work units (tiles, times K for a per-particle x)",
        units,
    )?;
    // without a bias the pointer is not read; pass y's so that every argument is a buffer
    let (bias_buf, bias_offset) = l.bias.unwrap_or((l.y, l.y_offset));
    let flags = u32::from(l.bias.is_some()) | (u32::from(l.x_ps.is_some()) << 1);
    let params = vec![
        ("p_y", ptr_at(l.y, l.y_offset)),
        ("p_x", ptr_at(l.x, l.x_offset)),
        ("p_w", ptr_at(l.w, l.w_offset)),
        ("p_bias", ptr_at(bias_buf, bias_offset)),
        ("p_h", ptr_at(l.h, l.h_offset)),
        ("p_b", ptr_at(l.b, l.b_offset)),
        ("p_m", Param::U32(u32_of(name, "m", l.m)?)),
        ("p_o", Param::U32(u32_of(name, "o", l.o)?)),
        ("p_i", Param::U32(u32_of(name, "i", l.i)?)),
        ("p_r", Param::U32(u32_of(name, "r", l.r)?)),
        ("p_k", Param::U32(u32_of(name, "k", l.k)?)),
        ("p_b_ps", Param::U32(u32_of(name, "b_ps", l.b_ps)?)),
        ("p_scale", Param::F32(l.scale)),
        ("p_flags", Param::U32(flags)),
        (
            "p_x_ps",
            Param::U32(u32_of(name, "x_ps", l.x_ps.unwrap_or(0))?),
        ),
    ];
    let grid = grid_1d(be.props(), units, blocks_per_sm());
    be.launch_named(module, name, grid, params)
}

/// The kernel's preconditions, as errors naming it.
fn check<D: Driver>(d: &D, name: &str, l: &LoraMma<'_, D::Buf>) -> Result<()> {
    let bad = |msg: String| Err(BellaError::invalid(format!("{name}: {msg}")));
    if l.m == 0 || l.o == 0 || l.r == 0 || l.k == 0 {
        return bad(format!(
            "empty shape m = {}, o = {}, r = {}, k = {} (all must be >= 1)",
            l.m, l.o, l.r, l.k
        ));
    }
    if l.i < 8 || l.i % 8 != 0 {
        return bad(format!(
            "i = {} must be a positive multiple of 8 (x and W rows are copied in 16-byte cp.async chunks)",
            l.i
        ));
    }
    if l.x_offset % 4 != 0 || l.w_offset % 4 != 0 {
        return bad(format!(
            "x and W offsets {} and {} words must be multiples of 4 (16-byte aligned rows)",
            l.x_offset, l.w_offset
        ));
    }
    if let Some(ps) = l.x_ps {
        if ps % 8 != 0 {
            return bad(format!(
                "x_ps = {ps} must be a multiple of 8 (every x_k row 16-byte aligned)"
            ));
        }
    }
    // x's elements: x_K-1 ends (K-1)·x_ps + m·i after x_0's start
    let x_elems = (l.k - 1) * l.x_ps.unwrap_or(0) + l.m * l.i;
    // every element index the kernel forms (u32 arithmetic) must fit
    u32_of(name, "(k-1)·x_ps + m·i", x_elems)?;
    u32_of(name, "o·i", l.o * l.i)?;
    u32_of(name, "k·m·r", l.k * l.m * l.r)?;
    u32_of(name, "k·m·o", l.k * l.m * l.o)?;
    let b_elems = (l.k - 1) * l.b_ps + l.o * l.r;
    u32_of(name, "(k-1)·b_ps + o·r", b_elems)?;
    let mut need = vec![
        ("x", l.x, l.x_offset, x_elems / 2),
        ("W", l.w, l.w_offset, l.o * l.i / 2),
        ("h", l.h, l.h_offset, l.k * l.m * l.r),
        ("B", l.b, l.b_offset, b_elems.div_ceil(2)),
        ("y", l.y, l.y_offset, l.k * l.m * l.o),
    ];
    if let Some((bias, offset)) = l.bias {
        need.push(("bias", bias, offset, l.o));
    }
    for (what, buf, offset, words) in need {
        let len = d.buf_len(buf);
        if offset + words > len {
            return bad(format!(
                "{what} needs {words} words at offset {offset}, the buffer has {len}"
            ));
        }
    }
    Ok(())
}

/// Whether [`forward`] computes this 16-bit `lora_forward`: x shared or per particle, I a
/// multiple of 8 (so every x_k row is 16-byte aligned too), `lora_a` blocks 16-byte aligned
/// (element offset and stride multiples of 8, for the h GEMMs), `lora_b` at an even element
/// offset (B_k is addressed from a word).
pub(crate) fn covers(args: &LoraForwardArgs) -> bool {
    let d = args.dims;
    d.i.is_multiple_of(8)
        && args.a.offset.is_multiple_of(8)
        && args.a.stride.is_multiple_of(8)
        && args.b.offset.is_multiple_of(2)
}

/// `ops::lora_forward` on 16-bit operands with a shared `x` (the caller checked [`covers`]
/// and the op's checks): `h_k = x A_kᵀ` by the tensor-core GEMM (one `gemm_mma` launch for
/// all particles with its blocked store writing `h [K, M, r]`, or one per particle when the
/// `lora_a` blocks are not contiguous), then `y` by [`lora_forward_mma`] in one launch.
pub(crate) fn forward<D: Driver>(
    be: &PtxBackend<D>,
    args: &LoraForwardArgs,
) -> Result<(Tensor, Tensor)> {
    let d = args.dims;
    let dtype = args.x.dtype();
    let half = HalfType::of("lora_forward_mma", dtype)?;
    let h = be.storage(d.k * d.m * d.r)?;
    let y = be.storage(d.k * d.m * d.o)?;
    let (x, w) = (be.buf(args.x)?, be.buf(args.weight)?);
    let (a, b) = (be.buf(args.a.tensor)?, be.buf(args.b.tensor)?);
    // h [K, M, r]: for a shared x and A_k stacked contiguously (a whole lora_a tensor),
    // x · [A_0; …; A_K-1]ᵀ as one GEMM of N = K·r stored in r-wide blocks; else h_k = x_k A_kᵀ
    // for the K particles as one batched GEMM (an arena's blocks are D apart).
    let stacked = d.x_shared && args.a.stride == d.r * d.i;
    let (n, c_block, batch) = if stacked {
        (d.k * d.r, Some(d.r), Batch::ONE)
    } else {
        let x_block = if d.x_shared { 0 } else { d.m * d.i };
        let batch = Batch {
            count: d.k,
            a: x_block,
            b: args.a.stride,
            c: d.m * d.r,
        };
        (d.r, None, batch)
    };
    gemm_mma(
        be,
        &MmaGemm {
            dtype: half,
            m: d.m,
            n,
            k: d.i,
            a: x,
            a_offset: 0,
            b: a,
            b_offset: args.a.offset / 2,
            c: &h.buf,
            c_offset: 0,
            alpha: 1.0,
            beta: None,
            c_block,
            layouts: Default::default(),
            batch,
        },
    )?;
    // a 16-bit bias is widened (O values)
    let bias = match args.bias {
        Some(t) if t.dtype().is_half() => Some(super::cast::cast(be, t, DType::F32)?),
        other => other.cloned(),
    };
    let bias_buf = bias.as_ref().map(|t| be.buf(t)).transpose()?;
    lora_forward_mma(
        be,
        &LoraMma {
            dtype,
            m: d.m,
            o: d.o,
            i: d.i,
            r: d.r,
            k: d.k,
            x,
            x_offset: 0,
            x_ps: (!d.x_shared).then_some(d.m * d.i),
            w,
            w_offset: 0,
            bias: bias_buf.map(|b| (b, 0)),
            h: &h.buf,
            h_offset: 0,
            b,
            b_offset: args.b.offset / 2,
            b_ps: args.b.stride,
            y: &y.buf,
            y_offset: 0,
            scale: args.scale,
        },
    )?;
    Ok((
        be.tensor(&[d.k, d.m, d.o], y)?,
        be.tensor(&[d.k, d.m, d.r], h)?,
    ))
}

#[cfg(all(test, feature = "ptx-sim"))]
mod tests;
