//! `rbf_kernel` (DESIGN.md op 5); the contract is on [`rbf_kernel`].

use super::pairwise_sqdist::particles;
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

/// `rbf_kernel` (DESIGN.md op 5): the RBF kernel matrix of the particles, for
/// [`svgd_direction`](super::svgd_direction).
///
/// In `theta [K, D]`, optional `bandwidth` `h`; out `kernel [K, K]` with
/// `k_ij = exp(−d_ij / h)` (`d_ij = ‖θ_i − θ_j‖²` as in
/// [`pairwise_sqdist`](super::pairwise_sqdist)), and the bandwidth used. With `None`, the
/// median heuristic: `med` = median of `{d_ij : i<j}` (mean of the two middle values for an
/// even count), `h = med / ln(K+1)`; if `h` is 0 or not finite, `h = 1` (see
/// [`median_bandwidth`](super::median_bandwidth)). K = 1 gives `[[1]]`.
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `theta` is not a non-empty 2-D tensor;
/// [`BellaError::Invalid`] if a given bandwidth is not positive and finite, or `theta` is on
/// another backend; [`BellaError::Device`](crate::BellaError::Device) if the output does not
/// fit the backend's [memory budget](crate::backend::MemoryBudget).
///
/// # Example
///
/// See [`svgd_direction`](super::svgd_direction)'s example, which checks the kernel and the
/// median bandwidth of two particles by hand.
pub fn rbf_kernel(
    be: &dyn Backend,
    theta: &Tensor,
    bandwidth: Option<f32>,
) -> Result<(Tensor, f32)> {
    let (k, d) = particles("rbf_kernel", be, theta)?;
    if let Some(h) = bandwidth {
        if !(h > 0.0 && h.is_finite()) {
            return Err(BellaError::invalid(format!(
                "rbf_kernel: bandwidth must be positive and finite, got {h}"
            )));
        }
    }
    be.rbf_kernel(theta, k, d, bandwidth)
}
