//! `gemm_mma_bf16` / `gemm_mma_f16` (kernels/matmul.ptx): the tensor-core GEMM,
//! `C[M, N] (f32) = alpha · op(A) · op(B)ᵀ (+ beta · C)` with A and B in a 16-bit float
//! format, f32 accumulation (`mma.sync.m16n8k16`, `ldmatrix`, 3-stage `cp.async` pipeline;
//! the design is in the kernel's header and kernels/README.md). Each operand is stored either
//! K-contiguous (A `[M, K]`, B `[N, K]`) or K-major (A `[K, M]`, B `[K, N]`, staged
//! transposed and read with `ldmatrix .trans`): [`Layouts`].
//!
//! **Packing.** Bella's tensors and device buffers are f32 only, so the half-precision
//! operands travel packed two per f32 word: element `2i` of a row-major matrix in the low 16
//! bits of word `i`, element `2i + 1` in the high 16 bits (the bit pattern, not a value;
//! [`pack_half`] builds such a buffer from f32 values). C is an ordinary f32 buffer.
//!
//! **In the ops**: `ops::matmul` with bf16/f16 operands runs it where it `covers` the
//! case (every `trans_a` / `trans_b`: 16-byte aligned blocks, K a multiple of 8 unless both
//! operands are K-major, M (N) a multiple of 8 for a K-major A (B)), all batch blocks in one
//! launch ([`Batch`]); other half-precision products widen on the device. The tests below run it
//! on the PTX simulator, `bella profile` models it at 4096³, and `bella doctor` checks it on
//! cuda and ptx-sim ([`check`]).

use super::driver::{Driver, Param};
use super::modules::{grid_1d, resident_ctas, u32_of, MATMUL};
use super::{ptr_at, PtxBackend};
use crate::backend::MatmulArgs;
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::{Strided, Tensor};
use half::{bf16, f16};

/// The 16-bit float format of A and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfType {
    /// bfloat16 (8 exponent bits, 7 mantissa bits)
    Bf16,
    /// IEEE binary16 (5 exponent bits, 10 mantissa bits)
    F16,
}

impl HalfType {
    /// The format of a 16-bit `dtype`; f32 is an error naming `kernel` (the f32 kernels take
    /// those operands).
    pub(crate) fn of(kernel: &str, dtype: DType) -> Result<HalfType> {
        match dtype {
            DType::BF16 => Ok(HalfType::Bf16),
            DType::F16 => Ok(HalfType::F16),
            DType::F32 => Err(BellaError::invalid(format!(
                "{kernel}: f32 operands (the f32 kernels take them)"
            ))),
        }
    }

    /// The kernel entry of kernels/matmul.ptx for this format.
    pub fn kernel(self) -> &'static str {
        match self {
            HalfType::Bf16 => "gemm_mma_bf16",
            HalfType::F16 => "gemm_mma_f16",
        }
    }

    /// `x` rounded to this format (to nearest, ties to even), as bits.
    pub fn bits(self, x: f32) -> u16 {
        match self {
            HalfType::Bf16 => bf16::from_f32(x).to_bits(),
            HalfType::F16 => f16::from_f32(x).to_bits(),
        }
    }

    /// The value of the bits `b` of this format.
    pub fn value(self, b: u16) -> f32 {
        match self {
            HalfType::Bf16 => bf16::from_bits(b).to_f32(),
            HalfType::F16 => f16::from_bits(b).to_f32(),
        }
    }
}

/// `xs` rounded to `dtype` and packed two per f32 word (see the module notes); an odd
/// length gets a zero in the last high half.
pub fn pack_half(dtype: HalfType, xs: &[f32]) -> Vec<f32> {
    xs.chunks(2)
        .map(|p| {
            let lo = dtype.bits(p[0]) as u32;
            let hi = p.get(1).map_or(0, |&x| dtype.bits(x)) as u32;
            f32::from_bits(lo | hi << 16)
        })
        .collect()
}

/// How A and B are stored (`p_flags` bits 2 and 3). The default is both K-contiguous,
/// `C = A · Bᵀ` with A `[m, k]`, B `[n, k]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layouts {
    /// A stored `[k, m]` (K-major: `op(A)(i, q) = A[q, i]`; `m` a multiple of 8); false:
    /// `[m, k]`
    pub a_kmajor: bool,
    /// B stored `[k, n]` (K-major: `C = op(A) · B`; `n` a multiple of 8); false: `[n, k]`
    pub b_kmajor: bool,
}

/// One launch: A `[m, k]` (or `[k, m]`) and B `[n, k]` (or `[k, n]`) packed (`a_offset`,
/// `b_offset` in f32 words, a multiple of 4: rows start 16-byte aligned), C `[m, n]` f32 at
/// `c_offset` floats.
pub struct MmaGemm<'a, B> {
    /// the format of A and B (selects the kernel)
    pub dtype: HalfType,
    /// rows of A and C
    pub m: usize,
    /// rows of B, columns of C
    pub n: usize,
    /// the inner dimension: at least 8 and a multiple of 8 (16-byte `cp.async` rows) when an
    /// operand is K-contiguous, any `k ≥ 1` when both are K-major
    pub k: usize,
    /// A `[m, k]` (`[k, m]` with `layouts.a_kmajor`), packed
    pub a: &'a B,
    /// f32 words before A's first element (a multiple of 4)
    pub a_offset: usize,
    /// B `[n, k]` (`[k, n]` with `layouts.b_kmajor`), packed
    pub b: &'a B,
    /// f32 words before B's first element (a multiple of 4)
    pub b_offset: usize,
    /// C `[m, n]`, f32
    pub c: &'a B,
    /// floats before C's first element
    pub c_offset: usize,
    /// the product's scale
    pub alpha: f32,
    /// `Some(beta)`: add `beta · C` (C is read); `None`: overwrite C (C is not read).
    pub beta: Option<f32>,
    /// C's layout: `None`, row-major `[m, n]`; `Some(blk)`, blocked `[n / blk, m, blk]`
    /// (element `(row, col)` at word `((col / blk) · m + row) · blk + col % blk`: the column
    /// blocks of width `blk` stored one after another, each row-major `[m, blk]`). `1 ≤ blk`,
    /// `n % blk == 0`, `blk < 2²⁴` (it travels in bits 8..31 of the kernel's flags). beta reads
    /// the same layout.
    pub c_block: Option<usize>,
    /// how A and B are stored
    pub layouts: Layouts,
    /// several products in one launch ([`Batch::ONE`]: one)
    pub batch: Batch,
}

/// `count` products in one launch (`p_batch`, `p_a_bs`, `p_b_bs`, `p_c_bs`): product `t`'s A,
/// B and C at `t · a`, `t · b` 16-bit elements (multiples of 8: 16-byte aligned blocks) and
/// `t · c` floats after the launch's offsets; its tiles join one list, so small products
/// fill the SMs together. The C blocks must not overlap (`c` at least C's size, unless
/// `count` is 1); a stride may be 0 for a shared operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// products, ≥ 1
    pub count: usize,
    /// 16-bit elements from one A block to the next
    pub a: usize,
    /// 16-bit elements from one B block to the next
    pub b: usize,
    /// floats from one C block to the next
    pub c: usize,
}

impl Batch {
    /// One product.
    pub const ONE: Batch = Batch {
        count: 1,
        a: 0,
        b: 0,
        c: 0,
    };
}

/// Output tile of one CTA (square).
pub const TILE: usize = 128;
/// Registers per thread, the larger of ptxas' sm_80 (124) and sm_90 (128) reports.
pub const REGS: u32 = 128;
/// Static shared memory per CTA: 3 stages × (A + B) × 128 rows × 64 bytes.
pub const SMEM: u32 = 49152;

/// CTAs resident per SM on both sm_80 and sm_90 (2: registers), the grid's CTAs per SM.
pub fn blocks_per_sm() -> u32 {
    resident_ctas(REGS, SMEM)
}

/// Launch `g` on `be` (the `matmul` module).
pub fn gemm_mma<D: Driver>(be: &PtxBackend<D>, g: &MmaGemm<'_, D::Buf>) -> Result<()> {
    launch_in(be, MATMUL, g)
}

/// Launch `g` with the kernel of `module` (tests load altered copies under other names).
pub(crate) fn launch_in<D: Driver>(
    be: &PtxBackend<D>,
    module: &str,
    g: &MmaGemm<'_, D::Buf>,
) -> Result<()> {
    let name = g.dtype.kernel();
    check(be.driver(), g)?;
    let tiles = g.m.div_ceil(TILE) * g.n.div_ceil(TILE) * g.batch.count;
    u32_of(name, "tile count", tiles)?;
    let params = vec![
        ("p_c", ptr_at(g.c, g.c_offset)),
        ("p_a", ptr_at(g.a, g.a_offset)),
        ("p_b", ptr_at(g.b, g.b_offset)),
        ("p_m", Param::U32(u32_of(name, "m", g.m)?)),
        ("p_n", Param::U32(u32_of(name, "n", g.n)?)),
        ("p_k", Param::U32(u32_of(name, "k", g.k)?)),
        ("p_alpha", Param::F32(g.alpha)),
        ("p_beta", Param::F32(g.beta.unwrap_or(0.0))),
        ("p_flags", Param::U32(flags(g))),
        ("p_batch", Param::U32(u32_of(name, "batch", g.batch.count)?)),
        (
            "p_a_bs",
            Param::U32(u32_of(name, "A batch stride", g.batch.a)?),
        ),
        (
            "p_b_bs",
            Param::U32(u32_of(name, "B batch stride", g.batch.b)?),
        ),
        (
            "p_c_bs",
            Param::U32(u32_of(name, "C batch stride", g.batch.c)?),
        ),
    ];
    let grid = grid_1d(be.props(), tiles, blocks_per_sm());
    be.launch_named(module, name, grid, params)
}

/// The kernel's `p_flags`: bit 0 beta, bit 1 blocked C, bit 2 A K-major, bit 3 B K-major
/// (bits 4..7 free), bits 8..31 the block width (`check` bounds it below 2²⁴).
pub(crate) fn flags<B>(g: &MmaGemm<'_, B>) -> u32 {
    let low = u32::from(g.beta.is_some())
        | u32::from(g.layouts.a_kmajor) << 2
        | u32::from(g.layouts.b_kmajor) << 3;
    match g.c_block {
        None => low,
        Some(blk) => low | 2 | (blk as u32) << 8,
    }
}

/// The kernel's preconditions, as errors naming it.
fn check<D: Driver>(d: &D, g: &MmaGemm<'_, D::Buf>) -> Result<()> {
    let name = g.dtype.kernel();
    let bad = |msg: String| Err(BellaError::invalid(format!("{name}: {msg}")));
    if g.m == 0 || g.n == 0 {
        return bad(format!("empty output {} x {}", g.m, g.n));
    }
    let Layouts { a_kmajor, b_kmajor } = g.layouts;
    if a_kmajor && b_kmajor {
        if g.k == 0 {
            return bad("k = 0: empty inner dimension".into());
        }
    } else if g.k < 8 || g.k % 8 != 0 {
        return bad(format!(
            "k = {} must be a positive multiple of 8 with a K-contiguous operand (its rows are \
             copied in 16-byte cp.async chunks)",
            g.k
        ));
    }
    for (kmajor, what, rows, dim) in [(a_kmajor, "A", "m", g.m), (b_kmajor, "B", "n", g.n)] {
        if kmajor && (dim % 8 != 0 || dim >= 1 << 30) {
            return bad(format!(
                "{what} stored [k, {rows}] (K-major) needs {rows} = {dim} a multiple of 8 below \
                 2^30 (its k rows are copied in 16-byte cp.async chunks)"
            ));
        }
    }
    if g.a_offset % 4 != 0 || g.b_offset % 4 != 0 {
        return bad(format!(
            "operand offsets {} and {} words must be multiples of 4 (16-byte aligned rows)",
            g.a_offset, g.b_offset
        ));
    }
    if let Some(blk) = g.c_block {
        if blk == 0 || blk >= 1 << 24 || g.n % blk != 0 {
            return bad(format!(
                "blocked C: block width {blk} must be in 1..2^24 and divide n = {}",
                g.n
            ));
        }
    }
    let bt = g.batch;
    if bt.count == 0 {
        return bad("a batch of 0 products".into());
    }
    if bt.a % 8 != 0 || bt.b % 8 != 0 {
        return bad(format!(
            "batch strides {} and {} elements of A and B must be multiples of 8 (16-byte \
             aligned blocks)",
            bt.a, bt.b
        ));
    }
    if bt.count > 1 && bt.c < g.m * g.n {
        return bad(format!(
            "batch: C blocks {} floats apart overlap (C is {} x {})",
            bt.c, g.m, g.n
        ));
    }
    // every element index (halves of A and B, floats of C) must fit the kernel's u32 math
    u32_of(name, "m·k", g.m * g.k)?;
    u32_of(name, "n·k", g.n * g.k)?;
    u32_of(name, "m·n", g.m * g.n)?;
    // either layout holds m·k (n·k) halves; the last batch block the furthest
    let last = bt.count - 1;
    for (what, buf, offset, words) in [
        ("A", g.a, g.a_offset, (last * bt.a + g.m * g.k).div_ceil(2)),
        ("B", g.b, g.b_offset, (last * bt.b + g.n * g.k).div_ceil(2)),
        ("C", g.c, g.c_offset, last * bt.c + g.m * g.n),
    ] {
        let len = d.buf_len(buf);
        if offset + words > len {
            return bad(format!(
                "{what} needs {words} words at offset {offset}, the buffer has {len}"
            ));
        }
    }
    Ok(())
}

/// The kernel's operand layouts for a `matmul`: `a` stored `[inner, m]` (`trans_a`) is a
/// K-major A, `b` stored `[inner, n]` (not `trans_b`) a K-major B.
pub(crate) fn layouts_of(args: &MatmulArgs) -> Layouts {
    Layouts {
        a_kmajor: args.trans_a,
        b_kmajor: !args.trans_b,
    }
}

/// Whether the tensor-core kernel computes this bf16/f16 `matmul`, any `trans_a` / `trans_b`:
/// every operand block starts 16-byte aligned (element offset and stride multiples of 8), a
/// K-major operand's m (n) is a multiple of 8, and K is a positive multiple of 8 unless both
/// operands are K-major (then any K ≥ 1).
pub(crate) fn covers(args: &MatmulArgs) -> bool {
    let aligned = |v: &Strided| v.offset.is_multiple_of(8) && v.stride.is_multiple_of(8);
    let l = layouts_of(args);
    let k_ok = if l.a_kmajor && l.b_kmajor {
        args.inner >= 1
    } else {
        args.inner >= 8 && args.inner.is_multiple_of(8)
    };
    k_ok && (!l.a_kmajor || args.m.is_multiple_of(8))
        && (!l.b_kmajor || args.n.is_multiple_of(8))
        && (!l.a_kmajor || args.m < 1 << 30)
        && (!l.b_kmajor || args.n < 1 << 30)
        && aligned(&args.a)
        && aligned(&args.b)
}

/// `matmul` of bf16/f16 operands on tensor cores, one batched `gemm_mma_*` launch
/// (the caller checked [`covers`] and the op's checks passed).
pub(crate) fn matmul<D: Driver>(
    be: &PtxBackend<D>,
    args: &MatmulArgs,
    out: &mut Tensor,
) -> Result<()> {
    let dtype = HalfType::of("gemm_mma", args.a.tensor.dtype())?;
    let a = be.buf(args.a.tensor)?;
    let b = be.buf(args.b.tensor)?;
    let c = be.buf_mut(out)?;
    // every batch block in one launch (the op's checks keep the output blocks apart)
    gemm_mma(
        be,
        &MmaGemm {
            dtype,
            m: args.m,
            n: args.n,
            k: args.inner,
            a,
            a_offset: args.a.offset / 2,
            b,
            b_offset: args.b.offset / 2,
            c,
            c_offset: args.out.offset,
            alpha: args.alpha,
            beta: None,
            c_block: None,
            layouts: layouts_of(args),
            batch: Batch {
                count: args.batch,
                a: args.a.stride,
                b: args.b.stride,
                c: args.out.stride,
            },
        },
    )
}

pub mod check;
#[cfg(all(test, feature = "ptx-sim"))]
mod tests;
