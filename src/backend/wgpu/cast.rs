//! Host side of `shaders/cast.wgsl`: f32 to and from the 16-bit floats bf16 and f16, on
//! 32-bit-word storages laid out as `crate::dtype` says (two halves per word, element `2i`
//! low). Rounding is `DType::round_bits` bit for bit, widening `DType::widen_bits`.

use super::kernels::{Kernel, Params, Step};
use super::pool::WgpuStorage;
use super::{bind, WgpuBackend};
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::Storage;
use crate::tensor::Tensor;

const THREADS: usize = 256;

/// The entry point that casts `from` to `to`, if there is one.
fn kernel(from: DType, to: DType) -> Option<Kernel> {
    Some(match (from, to) {
        (DType::F32, DType::BF16) => Kernel::CastF32ToBf16,
        (DType::F32, DType::F16) => Kernel::CastF32ToF16,
        (DType::BF16, DType::F32) => Kernel::CastBf16ToF32,
        (DType::F16, DType::F32) => Kernel::CastF16ToF32,
        _ => return None,
    })
}

/// `dst = cast(src)` over `n` elements between f32 and a 16-bit dtype (one of from/to is
/// F32, the other BF16 or F16). dst/src are 32-bit-word storages sized by DType::words.
///
/// `n = 0` dispatches nothing. An unsupported pair, storages shorter than
/// `from.words(n)` / `to.words(n)`, or `n` past `u32::MAX` are `BellaError::Invalid`.
pub(crate) fn cast_storage(
    be: &WgpuBackend,
    from: DType,
    to: DType,
    dst: &WgpuStorage,
    src: &WgpuStorage,
    n: usize,
) -> Result<()> {
    cast_in_groups(be, from, to, dst, src, n, None)
}

/// [`cast_storage`] on `groups` workgroups when given (tests: the kernels' grid-stride loop
/// covers every word from any count), else on one invocation per packed word.
fn cast_in_groups(
    be: &WgpuBackend,
    from: DType,
    to: DType,
    dst: &WgpuStorage,
    src: &WgpuStorage,
    n: usize,
    groups: Option<u64>,
) -> Result<()> {
    let kernel = kernel(from, to).ok_or_else(|| {
        BellaError::invalid(format!(
            "cast: no kernel from {from} to {to} (one side must be f32, the other bf16 or f16)"
        ))
    })?;
    if n == 0 {
        return Ok(());
    }
    if n > u32::MAX as usize {
        return Err(BellaError::invalid(format!(
            "cast: {n} elements are past the kernels' u32 count"
        )));
    }
    for (what, dt, s) in [("src", from, src), ("dst", to, dst)] {
        if s.len() < dt.words(n) {
            return Err(BellaError::invalid(format!(
                "cast: {what} holds {} words, {n} {dt} elements need {}",
                s.len(),
                dt.words(n)
            )));
        }
    }
    let words = DType::BF16.words(n);
    let step = Step {
        kernel,
        params: Params::named().set_u("n", n),
        bindings: vec![bind(src), bind(dst)],
        groups: groups.unwrap_or(words.div_ceil(THREADS) as u64),
    };
    be.run("cast", &[step])
}

/// [`Backend::cast_unchecked`](crate::Backend::cast_unchecked) on wgpu: `x` converted to `to`
/// in a new tensor (one of the two dtypes f32, the other 16-bit).
pub(crate) fn cast(be: &WgpuBackend, x: &Tensor, to: DType) -> Result<Tensor> {
    let n = x.numel();
    let out = be.alloc(to.words(n))?;
    cast_storage(be, x.dtype(), to, &out, super::storage("cast", x)?, n)?;
    Tensor::from_storage_as(x.shape(), to, crate::BackendKind::Wgpu, Box::new(out))
}

#[cfg(test)]
mod tests;
