//! `rbf_kernel` (DESIGN.md op 5): `theta [K, D]`, optional `bandwidth` → `kernel [K, K]`,
//! `bandwidth`. Median heuristic when none is given: `h = med{d_ij : i<j} / ln(K+1)` (mean of
//! the two middle values for an even count); `h = 1` if that is 0 or not finite.
//! `k_ij = exp(−d_ij / h)`; K = 1 gives `[[1]]`.

use super::pairwise_sqdist::particles;
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

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
