//! `cast` (a utility beside DESIGN.md's ops); the contract is on [`cast`].

use super::expect_device;
use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// `cast`: `x` converted to `to`, same shape. f32 → bf16/f16 rounds to nearest, ties to even
/// (subnormals kept, overflow to infinity, NaN to the canonical `0x7fff`); bf16/f16 → f32 is
/// exact; bf16 ↔ f16 goes through f32; a tensor already of `to` is returned as is (shared
/// storage). Every backend gives the same bits ([`crate::dtype`] has the rule; the PTX and
/// WGSL `cast` kernels implement it on the device).
///
/// This is how training makes the half-precision copies of f32 master parameters, and how a
/// caller widens a bf16/f16 tensor for an op that takes f32 only.
///
/// # Errors
/// [`BellaError::Invalid`](crate::BellaError::Invalid) if `x` is on another backend;
/// [`BellaError::Device`](crate::BellaError::Device) if the output does not fit the budget.
///
/// # Example
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::{ops, Backend, DType};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// // 1 + 2^-8 is halfway between the bf16 neighbours 1 and 1 + 2^-7: the even one wins.
/// let x = be.upload(&[3], &[1.0 + 1.0 / 256.0, -2.5, 1.0 + 3.0 / 256.0])?;
/// let h = ops::cast(&be, &x, DType::BF16)?;
/// assert_eq!(h.dtype(), DType::BF16);
/// assert_eq!(be.download(&h)?, vec![1.0, -2.5, 1.0 + 4.0 / 256.0]);
/// // 65520 and above round to infinity in f16.
/// let big = ops::cast(&be, &be.upload(&[2], &[65504.0, 65520.0])?, DType::F16)?;
/// assert_eq!(be.download(&big)?, vec![65504.0, f32::INFINITY]);
/// # Ok(())
/// # }
/// ```
pub fn cast(be: &dyn Backend, x: &Tensor, to: DType) -> Result<Tensor> {
    expect_device("cast", be, &[("x", x)])?;
    be.cast(x, to)
}
