//! Host side of `shaders/matmul.wgsl`: the general batched GEMM, also used for the small
//! products of `lora_forward` / `lora_backward`.
//!
//! One dispatch per product, on one of three kernels (see the shader's header):
//! `gemm_narrow_splitk` for products at most 16 columns wide (or, computed as `cᵀ = op(b)ᵀ
//! op(a)ᵀ`, at most 16 rows tall), `gemm_tiled_128` for big ones, `gemm_tiled` otherwise.
//!
//! A product of 16-bit operands (both bf16 or both f16, `c` f32) runs on `gemm_tiled_bf16` /
//! `gemm_tiled_f16`, or `gemm_narrow_splitk_bf16` / `_f16` where the f32 product would take
//! the narrow kernel ([`half_step`], [`matmul_half`]), which read the packed halves directly
//! and widen them in registers: no f32 copy of an operand is made. On a device with
//! `SHADER_F16` a wider f16 product runs `gemm_tiled_f16_native` instead
//! (`shaders/matmul_f16.wgsl`, `enable f16;`): the same tiles and contract, the operands
//! read as `array<f16>` and widened with `f32(h)`.

use super::kernels::{Binding, Kernel, Params, Step};
use super::{bind4, storage, storage_mut, WgpuBackend};
use crate::backend::MatmulArgs;
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

/// Output tiles (rows × columns) of each kernel.
const TILE: (usize, usize) = (64, 64);
const TILE_128: (usize, usize) = (128, 128);
const NARROW_TILE: (usize, usize) = (64, 16);

/// A buffer with per-batch blocks at `offset + b · stride` (stride 0: shared).
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub binding: Binding<'a>,
    pub offset: usize,
    pub stride: usize,
}

/// The shape of one batched product `c = alpha · op(a) op(b)`.
pub struct Gemm {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub inner: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
}

/// Columns of `op(b)` and of `c` taken `cols` at a time from separate places: column `j`
/// of `op(b)` is row `j % cols` of the `[cols, inner]` block at `b.offset + (j / cols) ·
/// b_stride` (`trans_b` layout), and `c[i, j]` is at `c.offset + (j / cols) · c_stride + i ·
/// cols + j % cols`. This is how the stacked `h = x [A_0; …; A_K-1]ᵀ` of a shared `x` reads
/// the particles' A through the arena and writes `h` as `[K, M, r]`.
#[derive(Clone, Copy)]
pub struct Groups {
    pub cols: usize,
    pub b_stride: usize,
    pub c_stride: usize,
}

/// Every operand as strides, as the kernel reads them (see the shader's header).
struct Layout {
    m: usize,
    n: usize,
    a: [usize; 4], // off, batch stride, row stride, k stride
    b: [usize; 6], // off, batch stride, k stride, column stride, group, group stride
    c: [usize; 6], // off, batch stride, row stride, column stride, group, group stride
}

impl Layout {
    fn new(g: &Gemm, a: &Operand, b: &Operand, c: &Operand, groups: Option<Groups>) -> Layout {
        let (a_rs, a_ks) = if g.trans_a { (1, g.m) } else { (g.inner, 1) };
        let (b_ks, b_cs) = if g.trans_b { (1, g.inner) } else { (g.n, 1) };
        let (b_grp, b_gs, c_rs, c_grp, c_gs) = match groups {
            Some(gr) => (gr.cols, gr.b_stride, gr.cols, gr.cols, gr.c_stride),
            None => (g.n, 0, g.n, g.n, 0),
        };
        Layout {
            m: g.m,
            n: g.n,
            a: [a.offset, a.stride, a_rs, a_ks],
            b: [b.offset, b.stride, b_ks, b_cs, b_grp.max(1), b_gs],
            c: [c.offset, c.stride, c_rs, 1, c_grp.max(1), c_gs],
        }
    }

    /// The same product as `cᵀ = op(b)ᵀ op(a)ᵀ`: rows and columns swap roles (only for
    /// ungrouped layouts). The operand buffers swap bindings too, see [`step_with`].
    fn transposed(&self) -> Layout {
        let [ao, abs, ars, aks] = self.a;
        let [bo, bbs, bks, bcs, ..] = self.b;
        let [co, cbs, crs, ccs, ..] = self.c;
        Layout {
            m: self.n,
            n: self.m,
            a: [bo, bbs, bcs, bks],
            b: [ao, abs, aks, ars, self.m.max(1), 0],
            c: [co, cbs, ccs, crs, self.m.max(1), 0],
        }
    }
}

/// One dispatch of a matmul kernel; `c` is written, never accumulated into.
pub fn step<'a>(
    be: &WgpuBackend,
    g: &Gemm,
    a: Operand<'a>,
    b: Operand<'a>,
    c: Operand<'a>,
) -> Step<'a> {
    step_with(be, g, a, b, c, None)
}

/// [`step`] with the columns of `op(b)` and `c` in groups (see [`Groups`]).
pub fn step_with<'a>(
    be: &WgpuBackend,
    g: &Gemm,
    a: Operand<'a>,
    b: Operand<'a>,
    c: Operand<'a>,
    groups: Option<Groups>,
) -> Step<'a> {
    // The kernels read grouped columns of op(b) along k only (see the shader's b_block).
    debug_assert!(
        groups.is_none() || g.trans_b,
        "grouped columns need trans_b"
    );
    let (layout, ab, bb) = oriented(g, a, b, c, groups);
    let (m, n) = (layout.m, layout.n);
    let (kernel, (tm, tn)) = if n <= NARROW_TILE.1 {
        (Kernel::GemmNarrowSplitK, NARROW_TILE)
    } else if prefers_128(m, n, g.batch, be.min_big_tiles()) {
        (Kernel::GemmTiled128, TILE_128)
    } else {
        (Kernel::GemmTiled, TILE)
    };
    let (tiles_m, tiles_n) = (m.div_ceil(tm), n.div_ceil(tn));
    let params = gemm_params(&layout, g, tiles_m, tiles_n);
    Step {
        kernel,
        params,
        bindings: vec![ab, bb, c.binding],
        groups: (tiles_m * tiles_n * g.batch) as u64,
    }
}

/// The product's layout as a kernel will compute it, with the bindings of its two operands:
/// a short, wide product (at most 16 rows) as its transpose, so that it runs on a narrow
/// kernel (which takes at most 16 columns).
fn oriented<'a>(
    g: &Gemm,
    a: Operand<'a>,
    b: Operand<'a>,
    c: Operand<'a>,
    groups: Option<Groups>,
) -> (Layout, Binding<'a>, Binding<'a>) {
    let layout = Layout::new(g, &a, &b, &c, groups);
    if groups.is_none() && g.m <= NARROW_TILE.1 && g.n > NARROW_TILE.1 {
        (layout.transposed(), b.binding, a.binding)
    } else {
        (layout, a.binding, b.binding)
    }
}

/// The kernels' `GemmParams` for `layout` (with the shape's `inner`, `batch` and `alpha`).
fn gemm_params(layout: &Layout, g: &Gemm, tiles_m: usize, tiles_n: usize) -> Params {
    let [a_off, a_bs, a_rs, a_ks] = layout.a;
    let [b_off, b_bs, b_ks, b_cs, b_grp, b_gs] = layout.b;
    let [c_off, c_bs, c_rs, c_cs, c_grp, c_gs] = layout.c;
    Params::named()
        .set_u("m", layout.m)
        .set_u("n", layout.n)
        .set_u("inner", g.inner)
        .set_u("batch", g.batch)
        .set_u("a_off", a_off)
        .set_u("a_bs", a_bs)
        .set_u("a_rs", a_rs)
        .set_u("a_ks", a_ks)
        .set_u("b_off", b_off)
        .set_u("b_bs", b_bs)
        .set_u("b_ks", b_ks)
        .set_u("b_cs", b_cs)
        .set_u("b_grp", b_grp)
        .set_u("b_gs", b_gs)
        .set_u("c_grp", c_grp)
        .set_u("c_gs", c_gs)
        .set_u("c_off", c_off)
        .set_u("c_bs", c_bs)
        .set_u("c_rs", c_rs)
        .set_u("c_cs", c_cs)
        .set_f("alpha", g.alpha)
        .set_u("tiles_m", tiles_m)
        .set_u("tiles_n", tiles_n)
}

/// 128×128 tiles (8×8 per invocation) rather than 64×64 ones when they waste at most 1/8
/// more work in padding and there are at least `min_tiles` of them (`batch` products of
/// `m × n`). Also used for `lora_forward` / `lora_dx`.
pub fn prefers_128(m: usize, n: usize, batch: usize, min_tiles: usize) -> bool {
    let padded = |t: usize| m.div_ceil(t) * t * n.div_ceil(t) * t;
    let tiles = m.div_ceil(128) * n.div_ceil(128) * batch;
    m >= 128 && n >= 128 && tiles >= min_tiles && 8 * padded(128) <= 9 * padded(64)
}

fn gemm_of(args: &MatmulArgs) -> Gemm {
    Gemm {
        batch: args.batch,
        m: args.m,
        n: args.n,
        inner: args.inner,
        trans_a: args.trans_a,
        trans_b: args.trans_b,
        alpha: args.alpha,
    }
}

pub fn matmul(be: &WgpuBackend, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
    let op = "matmul";
    let a = storage(op, args.a.tensor)?;
    let b = storage(op, args.b.tensor)?;
    let c = storage_mut(op, out)?;
    let gemm = gemm_of(args);
    let s = step(
        be,
        &gemm,
        Operand {
            binding: bind4(a),
            offset: args.a.offset,
            stride: args.a.stride,
        },
        Operand {
            binding: bind4(b),
            offset: args.b.offset,
            stride: args.b.stride,
        },
        Operand {
            binding: super::bind(c),
            offset: args.out.offset,
            stride: args.out.stride,
        },
    );
    be.run(op, &[s])
}

/// The dispatch of a product of two `dt` operands (bf16 or f16): `a` and `b` bound as the
/// packed words they are stored as (offsets and strides element indices of the 16-bit
/// tensors), `c` f32; columns in groups as [`step_with`]. At most 16 columns (or, as its
/// transpose, rows) run `gemm_narrow_splitk_bf16` / `_f16` (64×16 tiles), the rest
/// `gemm_tiled_bf16`, `gemm_tiled_f16` or, on a device with `SHADER_F16`,
/// `gemm_tiled_f16_native` (64×64, read as `array<f16>`).
///
/// # Errors
/// [`BellaError::Invalid`] for an f32 `dt`.
pub fn half_step<'a>(
    be: &WgpuBackend,
    dt: DType,
    g: &Gemm,
    a: Operand<'a>,
    b: Operand<'a>,
    c: Operand<'a>,
    groups: Option<Groups>,
) -> Result<Step<'a>> {
    debug_assert!(
        groups.is_none() || g.trans_b,
        "grouped columns need trans_b"
    );
    let (layout, ab, bb) = oriented(g, a, b, c, groups);
    let (kernel, (tm, tn)) = match (dt, layout.n <= NARROW_TILE.1) {
        (DType::BF16, true) => (Kernel::GemmNarrowSplitKBf16, NARROW_TILE),
        (DType::F16, true) => (Kernel::GemmNarrowSplitKF16, NARROW_TILE),
        (DType::BF16, false) => (Kernel::GemmTiledBf16, TILE),
        (DType::F16, false) if be.shader_f16() => (Kernel::GemmTiledF16Native, TILE),
        (DType::F16, false) => (Kernel::GemmTiledF16, TILE),
        (DType::F32, _) => {
            return Err(BellaError::invalid(
                "the 16-bit GEMM kernels take bf16 or f16 operands, not f32",
            ))
        }
    };
    let (tiles_m, tiles_n) = (layout.m.div_ceil(tm), layout.n.div_ceil(tn));
    Ok(Step {
        kernel,
        params: gemm_params(&layout, g, tiles_m, tiles_n),
        bindings: vec![ab, bb, c.binding],
        groups: (tiles_m * tiles_n * g.batch) as u64,
    })
}

/// `matmul` of 16-bit operands (both bf16 or both f16; `out` f32), read as they are stored:
/// each element is widened to f32 exactly in the kernel and the products accumulate in f32,
/// with no f32 copy of either operand.
pub fn matmul_half(be: &WgpuBackend, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
    let op = "matmul";
    let (da, db) = (args.a.tensor.dtype(), args.b.tensor.dtype());
    if !da.is_half() || da != db {
        return Err(BellaError::invalid(format!(
            "{op}: the 16-bit kernels need a and b both bf16 or both f16, not {da} and {db}"
        )));
    }
    let a = storage(op, args.a.tensor)?;
    let b = storage(op, args.b.tensor)?;
    let c = storage_mut(op, out)?;
    let s = half_step(
        be,
        da,
        &gemm_of(args),
        Operand {
            binding: super::bind(a),
            offset: args.a.offset,
            stride: args.a.stride,
        },
        Operand {
            binding: super::bind(b),
            offset: args.b.offset,
            stride: args.b.stride,
        },
        Operand {
            binding: super::bind(c),
            offset: args.out.offset,
            stride: args.out.stride,
        },
        None,
    )?;
    be.run(op, &[s])
}

#[cfg(test)]
mod tests;
