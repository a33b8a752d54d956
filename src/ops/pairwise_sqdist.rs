//! `pairwise_sqdist` (DESIGN.md op 4); the contract is on [`pairwise_sqdist`].

use super::{expect_device, expect_nonempty, expect_rank};
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::Tensor;

/// `pairwise_sqdist` (DESIGN.md op 4): squared distances between all pairs of particles.
///
/// In `theta [K, D]` (one particle per row); out `sqdist [K, K]`, `d_ij = ‖θ_i − θ_j‖²`,
/// accumulated from differences (never `‖θ_i‖² + ‖θ_j‖² − 2θ_i·θ_j`, which cancels badly).
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `theta` is not a non-empty 2-D tensor;
/// [`BellaError::Invalid`](crate::BellaError::Invalid) if it is on another backend;
/// [`BellaError::Device`](crate::BellaError::Device) if the output does not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
///
/// # Example
///
/// (The whole SVGD step is in [`svgd_direction`](super::svgd_direction)'s example.)
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::{ops, Backend};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let theta = be.upload(&[2, 2], &[0.0, 0.0, 3.0, 4.0])?;
/// let d = ops::pairwise_sqdist(&be, &theta)?;
/// assert_eq!(be.download(&d)?, vec![0.0, 25.0, 25.0, 0.0]);
/// # Ok(())
/// # }
/// ```
pub fn pairwise_sqdist(be: &dyn Backend, theta: &Tensor) -> Result<Tensor> {
    let (k, d) = particles("pairwise_sqdist", be, theta)?;
    be.pairwise_sqdist(theta, k, d)
}

/// `theta` must be a non-empty `[K, D]` on this backend; returns `(K, D)`.
pub(crate) fn particles(op: &str, be: &dyn Backend, theta: &Tensor) -> Result<(usize, usize)> {
    let s = expect_rank(op, "theta", theta, 2)?;
    expect_nonempty(op, "theta", theta)?;
    expect_device(op, be, &[("theta", theta)])?;
    Ok((s[0], s[1]))
}
