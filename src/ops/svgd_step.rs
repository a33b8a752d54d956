//! `svgd_step`: `svgd_direction` and `adamw_step` as one op; the contract is on
//! [`svgd_step`].

use super::adamw_step::check_hyper;
use super::pairwise_sqdist::particles;
use super::{expect_device, expect_finite, expect_shape};
use crate::backend::{AdamW, Backend};
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

const OP: &str = "svgd_step";

/// `svgd_step`: one SVGD update of every particle — [`svgd_direction`](super::svgd_direction)
/// and [`adamw_step`](super::adamw_step) as one op, in place on `theta`, `m`, `v`.
///
/// In `theta`, `score`, `m`, `v` `[K, D]`, `kernel [K, K]` and `bandwidth` `h` (as for
/// `svgd_direction`), `grad_scale` and the AdamW hyper-parameters `hp`. The result is that of
/// `φ = svgd_direction(θ, score, kernel, h)`, then `adamw_step(θ, g, m, v, hp)` with the
/// gradient `g = grad_scale · φ` (rounded to f32 once). Training passes `grad_scale = −1/N`:
/// AdamW descends, the particles move along `+φ` (see `train::svgd_update`).
///
/// Why an op of its own: fused, `φ` never reaches memory. The PTX backend (K ≤ 64) computes
/// it in registers and applies AdamW at once: θ, score, m, v read and θ, m, v written once,
/// 7 K·D floats against 10 K·D for the two ops. Backends without a fused kernel run the two.
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `theta` is not a non-empty `[K, D]`,
/// `score`, `m` or `v` is not `[K, D]` or `kernel` not `[K, K]`; [`BellaError::Invalid`] if
/// `bandwidth` is not positive and finite, `grad_scale` or a hyper-parameter is not finite,
/// `step` is 0, a beta is outside `[0, 1)`, `theta`, `score`, `m`, `v` are not distinct
/// tensors, or a tensor is on another backend. On error nothing is modified.
///
/// # Example
///
/// The fused op against the two ops it stands for:
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::backend::AdamW;
/// use bella::{ops, Backend};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let theta = be.upload(&[2, 3], &[0.0, 1.0, 2.0, 2.0, 0.5, -1.0])?;
/// let score = be.upload(&[2, 3], &[0.3, -0.2, 0.1, 0.0, 0.4, -0.5])?;
/// let (kernel, h) = ops::rbf_kernel(&be, &theta, None)?;
/// let hp = AdamW { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1 };
///
/// let (mut t1, mut m1, mut v1) = (theta.clone(), be.zeros(&[2, 3])?, be.zeros(&[2, 3])?);
/// ops::svgd_step(&be, &mut t1, &score, &kernel, h, -0.5, &mut m1, &mut v1, &hp)?;
///
/// let phi = ops::svgd_direction(&be, &theta, &score, &kernel, h)?;
/// let g = ops::axpby(&be, -0.5, &phi, 0.0, &phi)?;
/// let (mut t2, mut m2, mut v2) = (theta.clone(), be.zeros(&[2, 3])?, be.zeros(&[2, 3])?);
/// ops::adamw_step(&be, &mut t2, &g, &mut m2, &mut v2, &hp)?;
///
/// assert_eq!(be.download(&t1)?, be.download(&t2)?);
/// assert_eq!(be.download(&v1)?, be.download(&v2)?);
/// assert_ne!(be.download(&t1)?, be.download(&theta)?);
/// # Ok(())
/// # }
/// ```
#[allow(clippy::too_many_arguments)]
pub fn svgd_step(
    be: &dyn Backend,
    theta: &mut Tensor,
    score: &Tensor,
    kernel: &Tensor,
    bandwidth: f32,
    grad_scale: f32,
    m: &mut Tensor,
    v: &mut Tensor,
    hp: &AdamW,
) -> Result<()> {
    let (k, d) = particles(OP, be, theta)?;
    for (name, t) in [("score", score), ("m", &*m), ("v", &*v)] {
        expect_shape(OP, name, t, &[k, d])?;
    }
    expect_shape(OP, "kernel", kernel, &[k, k])?;
    expect_device(
        OP,
        be,
        &[("score", score), ("kernel", kernel), ("m", m), ("v", v)],
    )?;
    if !(bandwidth > 0.0 && bandwidth.is_finite()) {
        return Err(BellaError::invalid(format!(
            "{OP}: bandwidth must be positive and finite, got {bandwidth}"
        )));
    }
    expect_finite(OP, "grad_scale", grad_scale)?;
    check_hyper(OP, hp)?;
    let ts: [&Tensor; 4] = [theta, score, m, v];
    for (a, x) in ts.iter().enumerate() {
        if ts[a + 1..].iter().any(|y| x.same_storage(y)) {
            return Err(BellaError::invalid(format!(
                "{OP}: theta, score, m and v must be distinct tensors"
            )));
        }
    }
    be.svgd_step(
        theta,
        score,
        kernel,
        (k, d),
        bandwidth,
        grad_scale,
        m,
        v,
        hp,
    )
}
