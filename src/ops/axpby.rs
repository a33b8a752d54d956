//! `axpby`, a utility beside DESIGN.md's ops; the contract is on [`axpby`].

use super::{expect_device, expect_finite, expect_nonempty, expect_shape};
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::Tensor;

/// `axpby`, a utility beside DESIGN.md's ops: `out = alpha · x + beta · y`, elementwise;
/// `x`, `y` and `out` have one shape. Training uses it for SVGD scores and broadcast biases.
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `x` is empty or `y` has another shape;
/// [`BellaError::Invalid`](crate::BellaError::Invalid) if `alpha` or `beta` is not finite or
/// a tensor is on another backend.
///
/// # Example
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::{ops, Backend};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let x = be.upload(&[2], &[1.0, 2.0])?;
/// let y = be.upload(&[2], &[10.0, 20.0])?;
/// let out = ops::axpby(&be, 2.0, &x, 3.0, &y)?;
/// assert_eq!(be.download(&out)?, vec![32.0, 64.0]);
/// # Ok(())
/// # }
/// ```
pub fn axpby(be: &dyn Backend, alpha: f32, x: &Tensor, beta: f32, y: &Tensor) -> Result<Tensor> {
    expect_nonempty("axpby", "x", x)?;
    expect_shape("axpby", "y", y, x.shape())?;
    expect_device("axpby", be, &[("x", x), ("y", y)])?;
    expect_finite("axpby", "alpha", alpha)?;
    expect_finite("axpby", "beta", beta)?;
    be.axpby(alpha, x, beta, y)
}
