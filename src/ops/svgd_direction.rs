//! `svgd_direction` (DESIGN.md op 6): `theta [K, D]`, `score [K, D]` (∇ log posterior),
//! `kernel [K, K]`, `bandwidth h` → `phi [K, D]`,
//! `φ_i = (1/K) Σ_j [ k_ji · score_j + (2/h) · k_ji · (θ_i − θ_j) ]`.
//! The second term pushes particles apart. Particles move along `+φ`.

use super::pairwise_sqdist::particles;
use super::{expect_device, expect_shape};
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

const OP: &str = "svgd_direction";

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
