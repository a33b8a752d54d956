//! `pairwise_sqdist` (DESIGN.md op 4): `theta [K, D]` → `sqdist [K, K]`,
//! `d_ij = ‖θ_i − θ_j‖²`, accumulated from differences (never `‖θ_i‖² + ‖θ_j‖² − 2θ_i·θ_j`).

use super::{expect_device, expect_nonempty, expect_rank};
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::Tensor;

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
