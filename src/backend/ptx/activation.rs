//! Elementwise kernels: activations, `axpby`, `sum_blocks` and its 16-bit forms,
//! `gather_blocks` (kernels/activation.ptx). Each thread owns groups of 4 elements (the
//! 16-bit sums and the gather: one 32-bit word).

use super::driver::{Driver, Param};
use super::modules::{grid_1d, u32_of, ACTIVATION, BLOCK};
use super::{ptr, ptr_at, PtxBackend};
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

/// Grid for `n` elements in groups of 4 per thread (also AdamW's, `optim.rs`).
pub(super) fn grid<D: Driver>(be: &PtxBackend<D>, n: usize) -> super::driver::LaunchConfig {
    grid_1d(be.props(), n.div_ceil(4).div_ceil(BLOCK as usize), 16)
}

/// `out = Σ_k src[k·len .. (k+1)·len]` for `k` ≥ 1 blocks of one buffer, in block order,
/// in one launch of `sum_blocks` (src read once; was `k − 1` launches of `axpby`, which
/// gave the same bits and read and wrote `out` each time).
pub(crate) fn sum_blocks<D: Driver>(
    be: &PtxBackend<D>,
    src: &D::Buf,
    k: usize,
    len: usize,
    out: &D::Buf,
) -> Result<()> {
    if len == 0 || k == 0 {
        return Ok(());
    }
    u32_of("sum_blocks", "K*len", k * len)?;
    let params = vec![
        ("p_out", ptr(out)),
        ("p_src", ptr(src)),
        ("p_k", Param::U32(u32_of("sum_blocks", "K", k)?)),
        ("p_len", Param::U32(u32_of("sum_blocks", "len", len)?)),
    ];
    be.launch_named(ACTIVATION, "sum_blocks", grid(be, len), params)
}

/// `out = rnd(Σ_k src block k)` for `k ≥ 1` blocks of `len` 16-bit `dtype` elements (`len`
/// even: each block whole words) in one launch of `sum_blocks_bf16` / `sum_blocks_f16`: the
/// sum in f32 in block order, one rounding (src read once, no f32 copy). `module`: where
/// the entry is loaded from (tests load altered copies).
pub(crate) fn sum_blocks_half_in<D: Driver>(
    be: &PtxBackend<D>,
    module: &str,
    dtype: DType,
    src: &D::Buf,
    (k, len): (usize, usize),
    out: &D::Buf,
) -> Result<()> {
    let kernel = match dtype {
        DType::BF16 => "sum_blocks_bf16",
        DType::F16 => "sum_blocks_f16",
        DType::F32 => return Err(BellaError::invalid("sum_blocks_half: an f32 dtype")),
    };
    if !len.is_multiple_of(2) {
        return Err(BellaError::invalid(format!(
            "{kernel}: blocks of {len} elements are not whole 32-bit words"
        )));
    }
    if len == 0 || k == 0 {
        return Ok(());
    }
    let words = len / 2;
    u32_of(kernel, "K*words", k * words)?;
    let params = vec![
        ("p_out", ptr(out)),
        ("p_src", ptr(src)),
        ("p_k", Param::U32(u32_of(kernel, "K", k)?)),
        ("p_words", Param::U32(u32_of(kernel, "words", words)?)),
    ];
    let grid = grid_1d(be.props(), words.div_ceil(BLOCK as usize), 16);
    be.launch_named(module, kernel, grid, params)
}

/// [`sum_blocks_half_in`] from kernels/activation.ptx.
pub(crate) fn sum_blocks_half<D: Driver>(
    be: &PtxBackend<D>,
    dtype: DType,
    src: &D::Buf,
    (k, len): (usize, usize),
    out: &D::Buf,
) -> Result<()> {
    sum_blocks_half_in(be, ACTIVATION, dtype, src, (k, len), out)
}

/// `out[b·len + e] = src[src_offset + b·stride + e]` for `b < k`, `e < len`, in 32-bit words
/// (the bits copied, so any dtype: two 16-bit elements a word), in one launch of
/// `gather_blocks`: the `k` blocks of a strided view (`stride` 0: one block repeated) stacked
/// into the contiguous `out`. `module`: where the entry is loaded from (tests load altered
/// copies). Errors (nothing launched) when a block or `out` would pass its buffer's end or a
/// size passes the kernels' u32 limit.
pub(crate) fn gather_blocks_in<D: Driver>(
    be: &PtxBackend<D>,
    module: &str,
    (src, src_offset): (&D::Buf, usize),
    (k, len, stride): (usize, usize, usize),
    out: &D::Buf,
) -> Result<()> {
    const KERNEL: &str = "gather_blocks";
    if len == 0 || k == 0 {
        return Ok(());
    }
    let total = k
        .checked_mul(len)
        .ok_or_else(|| BellaError::invalid(format!("{KERNEL}: K*len overflows")))?;
    u32_of(KERNEL, "K*len", total)?;
    let last = (k - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(src_offset))
        .and_then(|v| v.checked_add(len))
        .ok_or_else(|| BellaError::invalid(format!("{KERNEL}: the last block's end overflows")))?;
    let (src_len, out_len) = (be.driver().buf_len(src), be.driver().buf_len(out));
    if last > src_len || total > out_len {
        return Err(BellaError::invalid(format!(
            "{KERNEL}: {k} blocks of {len} words, {stride} apart from word {src_offset}, need \
             {last} source words and {total} output words; the buffers have {src_len} and \
             {out_len}"
        )));
    }
    let params = vec![
        ("p_out", ptr(out)),
        ("p_src", ptr_at(src, src_offset)),
        ("p_k", Param::U32(u32_of(KERNEL, "K", k)?)),
        ("p_len", Param::U32(u32_of(KERNEL, "len", len)?)),
        ("p_stride", Param::U32(u32_of(KERNEL, "stride", stride)?)),
    ];
    let grid = grid_1d(be.props(), total.div_ceil(BLOCK as usize), 16);
    be.launch_named(module, KERNEL, grid, params)
}

/// [`gather_blocks_in`] from kernels/activation.ptx.
pub(crate) fn gather_blocks<D: Driver>(
    be: &PtxBackend<D>,
    src: (&D::Buf, usize),
    (k, len, stride): (usize, usize, usize),
    out: &D::Buf,
) -> Result<()> {
    gather_blocks_in(be, ACTIVATION, src, (k, len, stride), out)
}

/// `y = f(x)` for `relu_forward`, `gelu_forward`.
pub fn unary<D: Driver>(be: &PtxBackend<D>, kernel: &str, x: &Tensor) -> Result<Tensor> {
    let n = x.numel();
    let y = be.storage(n)?;
    if n > 0 {
        be.launch_named(
            ACTIVATION,
            kernel,
            grid(be, n),
            vec![
                ("p_y", ptr(&y.buf)),
                ("p_x", ptr(be.buf(x)?)),
                ("p_n", Param::U32(u32_of(kernel, "n", n)?)),
            ],
        )?;
    }
    be.tensor(x.shape(), y)
}

/// `dx = f'(x) · dy` for `relu_backward`, `gelu_backward`.
pub fn binary<D: Driver>(
    be: &PtxBackend<D>,
    kernel: &str,
    x: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let n = x.numel();
    let dx = be.storage(n)?;
    if n > 0 {
        be.launch_named(
            ACTIVATION,
            kernel,
            grid(be, n),
            vec![
                ("p_dx", ptr(&dx.buf)),
                ("p_x", ptr(be.buf(x)?)),
                ("p_dy", ptr(be.buf(dy)?)),
                ("p_n", Param::U32(u32_of(kernel, "n", n)?)),
            ],
        )?;
    }
    be.tensor(x.shape(), dx)
}

pub fn axpby<D: Driver>(
    be: &PtxBackend<D>,
    alpha: f32,
    x: &Tensor,
    beta: f32,
    y: &Tensor,
) -> Result<Tensor> {
    let n = x.numel();
    let out = be.storage(n)?;
    if n > 0 {
        be.launch_named(
            ACTIVATION,
            "axpby",
            grid(be, n),
            vec![
                ("p_out", ptr(&out.buf)),
                ("p_x", ptr(be.buf(x)?)),
                ("p_y", ptr(be.buf(y)?)),
                ("p_alpha", Param::F32(alpha)),
                ("p_beta", Param::F32(beta)),
                ("p_n", Param::U32(u32_of("axpby", "n", n)?)),
            ],
        )?;
    }
    be.tensor(x.shape(), out)
}

#[cfg(all(test, feature = "ptx-sim"))]
mod tests;
