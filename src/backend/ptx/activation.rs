//! Elementwise kernels: activations, `axpby` and `sum_blocks` (kernels/activation.ptx).
//! Each thread owns groups of 4 elements.

use super::driver::{Driver, Param};
use super::modules::{grid_1d, u32_of, ACTIVATION, BLOCK};
use super::{ptr, PtxBackend};
use crate::error::Result;
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
