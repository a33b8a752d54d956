//! `svgd_direction` (DESIGN.md op 6); the contract is on [`svgd_direction`].

use super::pairwise_sqdist::particles;
use super::{expect_device, expect_shape};
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

const OP: &str = "svgd_direction";

/// `svgd_direction` (DESIGN.md op 6): the Stein variational direction of every particle.
///
/// In `theta [K, D]`, `score [K, D]` (∇ log posterior of each particle), `kernel [K, K]` and
/// `bandwidth` `h` (both as returned by [`rbf_kernel`](super::rbf_kernel)); out `phi [K, D]`:
/// `φ_i = (1/K) Σ_j [ k_ji · score_j + (2/h) · k_ji · (θ_i − θ_j) ]`.
/// The second term pushes particles apart (sign matters: flipped, they collapse). Particles
/// move along `+φ` (an optimizer minimizing takes `−φ` as its gradient).
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `theta` is not a non-empty `[K, D]`,
/// `score` is not `[K, D]` or `kernel` not `[K, K]`; [`BellaError::Invalid`] if `bandwidth`
/// is not positive and finite or a tensor is on another backend;
/// [`BellaError::Device`](crate::BellaError::Device) if the output does not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
///
/// # Example
///
/// Two 1-D particles at 0 and 2 with zero score: `d_01 = 4`, the median heuristic gives
/// `h = 4 / ln 3`, so `k_01 = exp(−ln 3) = 1/3`, and
/// `φ_0 = ½ · ⅓ · (2/h) · (0 − 2) = −ln 3 / 6`, `φ_1 = +ln 3 / 6`: the particles are pushed
/// apart.
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::{ops, Backend};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let close = |a: f32, b: f32| (a - b).abs() < 1e-5;
/// let theta = be.upload(&[2, 1], &[0.0, 2.0])?;
/// let score = be.zeros(&[2, 1])?;
///
/// let d = ops::pairwise_sqdist(&be, &theta)?;
/// assert_eq!(be.download(&d)?, vec![0.0, 4.0, 4.0, 0.0]);
///
/// let (kernel, h) = ops::rbf_kernel(&be, &theta, None)?;
/// assert!(close(h, 4.0 / 3f32.ln()));
/// let k = be.download(&kernel)?;
/// assert!(close(k[0], 1.0) && close(k[1], 1.0 / 3.0));
///
/// let phi = be.download(&ops::svgd_direction(&be, &theta, &score, &kernel, h)?)?;
/// let push = 3f32.ln() / 6.0;
/// assert!(close(phi[0], -push) && close(phi[1], push));
/// # Ok(())
/// # }
/// ```
pub fn svgd_direction(
    be: &dyn Backend,
    theta: &Tensor,
    score: &Tensor,
    kernel: &Tensor,
    bandwidth: f32,
) -> Result<Tensor> {
    let (k, d) = particles(OP, be, theta)?;
    expect_shape(OP, "score", score, &[k, d])?;
    expect_shape(OP, "kernel", kernel, &[k, k])?;
    expect_device(OP, be, &[("score", score), ("kernel", kernel)])?;
    if !(bandwidth > 0.0 && bandwidth.is_finite()) {
        return Err(BellaError::invalid(format!(
            "{OP}: bandwidth must be positive and finite, got {bandwidth}"
        )));
    }
    be.svgd_direction(theta, score, kernel, k, d, bandwidth)
}
