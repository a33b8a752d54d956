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

/// The median-heuristic bandwidth, shared by every backend (it runs on the host over the
/// downloaded `[K, K]` distances): median of `{d_ij : i<j}` over `ln(K+1)`; 1 when that is
/// 0 or not finite (or there are no pairs, K = 1).
pub fn median_bandwidth(sqdist: &[f32], k: usize) -> f32 {
    let mut v: Vec<f32> = (0..k)
        .flat_map(|i| (i + 1..k).map(move |j| sqdist[i * k + j]))
        .collect();
    if v.is_empty() {
        return 1.0;
    }
    v.sort_by(f32::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    };
    let h = (med / ((k + 1) as f64).ln()) as f32;
    if h > 0.0 && h.is_finite() {
        h
    } else {
        1.0
    }
}
