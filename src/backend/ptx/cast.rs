//! Casts between f32 and the 16-bit floats (kernels/cast.ptx), by the storage and rounding
//! rules of `crate::dtype`: one work unit = one packed 32-bit word (two elements).

use super::driver::{Driver, Param};
use super::modules::{grid_1d, u32_of, BLOCK, CAST};
use super::{ptr, PtxBackend};
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;
use crate::Backend;

/// The `kernels/cast.ptx` entry for `from` → `to`: one of them f32, the other bf16 or f16.
pub(crate) fn kernel(from: DType, to: DType) -> Result<&'static str> {
    match (from, to) {
        (DType::F32, DType::BF16) => Ok("cast_f32_to_bf16"),
        (DType::F32, DType::F16) => Ok("cast_f32_to_f16"),
        (DType::BF16, DType::F32) => Ok("cast_bf16_to_f32"),
        (DType::F16, DType::F32) => Ok("cast_f16_to_f32"),
        _ if from == to => Err(BellaError::invalid(format!(
            "cast: {from} to {to} is not a conversion (copy the buffer instead)"
        ))),
        _ => Err(BellaError::invalid(format!(
            "cast: {from} to {to} is not supported by the PTX kernels (one side must be \
             f32, the other bf16 or f16)"
        ))),
    }
}

/// `dst = cast(src)` over `n` elements between f32 and a 16-bit dtype (one of from/to is F32, the other BF16 or F16).
///
/// The f32 side is `n` words, the 16-bit side `ceil(n / 2)` packed words (element `2i` in
/// the low half of word `i`; an odd `n` leaves the last high half 0). Narrowing rounds to
/// nearest even with NaN → `0x7fff`; widening is exact. `n = 0` launches nothing.
pub(crate) fn cast_buf<D: Driver>(
    be: &PtxBackend<D>,
    from: DType,
    to: DType,
    dst: &D::Buf,
    src: &D::Buf,
    n: usize,
) -> Result<()> {
    launch_in(be, CAST, from, to, dst, src, n, None)
}

/// [`cast_buf`] with the kernel of `module` (tests load altered copies under other names)
/// and optionally a fixed grid of `ctas` CTAs instead of the host's pick.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_in<D: Driver>(
    be: &PtxBackend<D>,
    module: &str,
    from: DType,
    to: DType,
    dst: &D::Buf,
    src: &D::Buf,
    n: usize,
    ctas: Option<u32>,
) -> Result<()> {
    let name = kernel(from, to)?;
    if n == 0 {
        return Ok(());
    }
    let units = n.div_ceil(2);
    let mut grid = grid_1d(be.props(), units.div_ceil(BLOCK as usize), 16);
    if let Some(g) = ctas {
        grid.grid[0] = g.max(1);
    }
    let params = vec![
        ("p_dst", ptr(dst)),
        ("p_src", ptr(src)),
        ("p_n", Param::U32(u32_of(name, "n", n)?)),
    ];
    be.launch_named(module, name, grid, params)
}

/// [`Backend::cast_unchecked`](crate::Backend::cast_unchecked) on PTX: `x` converted to `to`
/// in a new tensor (one of the two dtypes f32, the other 16-bit).
pub(crate) fn cast<D: Driver>(be: &PtxBackend<D>, x: &Tensor, to: DType) -> Result<Tensor> {
    let n = x.numel();
    let out = be.storage(to.words(n))?;
    cast_buf(be, x.dtype(), to, &out.buf, be.buf(x)?, n)?;
    Tensor::from_storage_as(x.shape(), to, be.kind(), Box::new(out))
}

#[cfg(all(test, feature = "ptx-sim"))]
mod tests;
