//! `gemm_tiled` (kernels/matmul.ptx): the `matmul` op, and the GEMMs `lora_backward` and
//! the r > 64 path of `lora_forward` are built from.

use super::driver::{Driver, Param};
use super::modules::{grid_1d, u32_of, MATMUL};
use super::{ptr_at, PtxBackend};
use crate::backend::MatmulArgs;
use crate::error::Result;
use crate::tensor::Tensor;

/// A matrix operand: a buffer, the element offset of block 0, the block stride (0 =
/// shared by every block), and the strides of its two logical dimensions.
pub(crate) struct Operand<'a, B> {
    pub buf: &'a B,
    pub offset: usize,
    pub block_stride: usize,
    /// Stride of the first logical index (row of op(A); k of op(B)).
    pub s0: usize,
    /// Stride of the second logical index (k of op(A); column of op(B)).
    pub s1: usize,
}

/// `C_b = alpha · Σ_{q<nred} opA_{b·nred+q} opB_{b·nred+q} (+ beta·C_b) (+ bias)` for
/// `b < batch`; `C_b` is `[m, n]` with row stride `c_row` at `c_offset + b·c_block`.
pub(crate) struct Gemm<'a, B> {
    pub m: usize,
    pub n: usize,
    pub inner: usize,
    pub batch: usize,
    pub nred: usize,
    pub a: Operand<'a, B>,
    pub b: Operand<'a, B>,
    pub c: &'a B,
    pub c_offset: usize,
    pub c_block: usize,
    pub c_row: usize,
    pub alpha: f32,
    /// `Some(beta)`: add `beta · C` (C is read); `None`: overwrite C.
    pub beta: Option<f32>,
    pub bias: Option<&'a B>,
}

const TILE: usize = 64;

impl<'a, B> Gemm<'a, B> {
    pub fn launch<D: Driver<Buf = B>>(&self, be: &PtxBackend<D>) -> Result<()> {
        if self.m == 0 || self.n == 0 || self.batch == 0 {
            return Ok(());
        }
        let k = "gemm_tiled";
        let tiles = self.m.div_ceil(TILE) * self.n.div_ceil(TILE) * self.batch;
        u32_of(k, "tile count", tiles)?;
        let flags = u32::from(self.beta.is_some()) | (u32::from(self.bias.is_some()) << 1);
        let params = [
            ptr_at(self.c, self.c_offset),
            ptr_at(self.a.buf, self.a.offset),
            ptr_at(self.b.buf, self.b.offset),
            // the bias pointer is never read without flag bit 1; any valid buffer will do
            ptr_at(self.bias.unwrap_or(self.c), 0),
            Param::U32(u32_of(k, "m", self.m)?),
            Param::U32(u32_of(k, "n", self.n)?),
            Param::U32(u32_of(k, "inner", self.inner)?),
            Param::U32(u32_of(k, "batch", self.batch)?),
            Param::U32(u32_of(k, "nred", self.nred)?),
            Param::U32(u32_of(k, "a block stride", self.a.block_stride)?),
            Param::U32(u32_of(k, "a row stride", self.a.s0)?),
            Param::U32(u32_of(k, "a k stride", self.a.s1)?),
            Param::U32(u32_of(k, "b block stride", self.b.block_stride)?),
            Param::U32(u32_of(k, "b k stride", self.b.s0)?),
            Param::U32(u32_of(k, "b column stride", self.b.s1)?),
            Param::U32(u32_of(k, "c block stride", self.c_block)?),
            Param::U32(u32_of(k, "c row stride", self.c_row)?),
            Param::F32(self.alpha),
            Param::F32(self.beta.unwrap_or(0.0)),
            Param::U32(flags),
        ];
        // Tiles are heavy (a full sweep of `inner`): one CTA per tile up to a few per SM.
        be.launch(MATMUL, k, grid_1d(be.props(), tiles, 8), &params)
    }
}

/// Row/k strides of a stored `[rows, cols]` row-major matrix used as `op(X)` (`[r, c]`).
/// Not transposed: stored `[r, c]`, strides (c, 1). Transposed: stored `[c, r]`, (1, r).
pub(crate) fn op_strides(rows: usize, cols: usize, transposed: bool) -> (usize, usize) {
    if transposed {
        (1, rows)
    } else {
        (cols, 1)
    }
}

pub fn matmul<D: Driver>(be: &PtxBackend<D>, args: &MatmulArgs, out: &mut Tensor) -> Result<()> {
    let (a_buf, b_buf) = (be.buf(args.a.tensor)?, be.buf(args.b.tensor)?);
    let c = be.buf_mut(out)?;
    let (a0, a1) = op_strides(args.m, args.inner, args.trans_a);
    let (b0, b1) = op_strides(args.inner, args.n, args.trans_b);
    Gemm {
        m: args.m,
        n: args.n,
        inner: args.inner,
        batch: args.batch,
        nred: 1,
        a: Operand {
            buf: a_buf,
            offset: args.a.offset,
            block_stride: args.a.stride,
            s0: a0,
            s1: a1,
        },
        b: Operand {
            buf: b_buf,
            offset: args.b.offset,
            block_stride: args.b.stride,
            s0: b0,
            s1: b1,
        },
        c,
        c_offset: args.out.offset,
        c_block: args.out.stride,
        c_row: args.n,
        alpha: args.alpha,
        beta: None,
        bias: None,
    }
    .launch(be)
}
