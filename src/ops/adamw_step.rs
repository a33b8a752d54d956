//! `adamw_step` (DESIGN.md op 7); the contract is on [`adamw_step`].

use super::{expect_device, expect_finite, expect_nonempty, expect_shape};
use crate::backend::{AdamW, Backend};
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

const OP: &str = "adamw_step";

/// `adamw_step` (DESIGN.md op 7): one step of PyTorch's AdamW, in place on `param`, `m`, `v`.
///
/// `param`, `grad` `g`, `m`, `v` have one shape (any; in training the whole `[K, D]`
/// parameter arena, so the step runs once for all particles); `hp` holds `lr`, `beta1`,
/// `beta2`, `eps`, `weight_decay` and the step count `t ≥ 1`:
/// `m = β1 m + (1−β1) g`, `v = β2 v + (1−β2) g²`, `m̂ = m/(1−β1ᵗ)`, `v̂ = v/(1−β2ᵗ)`,
/// `param = param·(1 − lr·wd) − lr · m̂ / (√v̂ + eps)`.
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `param` is empty or `grad`, `m`, `v`
/// differ from its shape; [`BellaError::Invalid`] if `step` is 0, a hyper-parameter is not
/// finite, a beta is outside `[0, 1)`, `param`, `m`, `v` are not distinct tensors, or a
/// tensor is on another backend. On error nothing is modified.
///
/// # Example
///
/// First step (`m = v = 0`) from `param = 1` with `g = 0.5`: `m̂ = 0.5`, `v̂ = 0.25`, so
/// `param = 1 · (1 − 0.1 · 0.01) − 0.1 · 0.5 / 0.5 = 0.899` (to `eps`).
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::backend::AdamW;
/// use bella::{ops, Backend};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let mut param = be.upload(&[1], &[1.0])?;
/// let grad = be.upload(&[1], &[0.5])?;
/// let (mut m, mut v) = (be.zeros(&[1])?, be.zeros(&[1])?);
/// let hp = AdamW { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, step: 1 };
///
/// ops::adamw_step(&be, &mut param, &grad, &mut m, &mut v, &hp)?;
/// assert!((be.download(&param)?[0] - 0.899).abs() < 1e-5);
/// assert!((be.download(&m)?[0] - 0.05).abs() < 1e-7); // (1 − β1) g
/// assert!((be.download(&v)?[0] / 0.00025 - 1.0).abs() < 1e-4); // (1 − β2) g²
///
/// let bad = AdamW { step: 0, ..hp };
/// assert!(ops::adamw_step(&be, &mut param, &grad, &mut m, &mut v, &bad).is_err());
/// # Ok(())
/// # }
/// ```
pub fn adamw_step(
    be: &dyn Backend,
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    hp: &AdamW,
) -> Result<()> {
    expect_nonempty(OP, "param", param)?;
    let shape = param.shape().to_vec();
    expect_shape(OP, "grad", grad, &shape)?;
    expect_shape(OP, "m", m, &shape)?;
    expect_shape(OP, "v", v, &shape)?;
    expect_device(
        OP,
        be,
        &[("param", param), ("grad", grad), ("m", m), ("v", v)],
    )?;
    check_hyper(OP, hp)?;
    // Copy-on-write makes aliasing safe, but a grad that *is* the param is surely a mistake.
    if param.same_storage(grad)
        || param.same_storage(m)
        || param.same_storage(v)
        || m.same_storage(v)
    {
        return Err(BellaError::invalid(format!(
            "{OP}: param, m and v must be distinct tensors"
        )));
    }
    be.adamw_step(param, grad, m, v, hp)
}

/// The AdamW hyper-parameters of `op` (`adamw_step`, `svgd_step`): `step ≥ 1`, every value
/// finite, betas in `[0, 1)`.
pub(crate) fn check_hyper(op: &str, hp: &AdamW) -> Result<()> {
    if hp.step < 1 {
        return Err(BellaError::invalid(format!(
            "{op}: step must be ≥ 1, got {}",
            hp.step
        )));
    }
    for (name, x) in [
        ("lr", hp.lr),
        ("beta1", hp.beta1),
        ("beta2", hp.beta2),
        ("eps", hp.eps),
        ("weight_decay", hp.weight_decay),
    ] {
        expect_finite(op, name, x)?;
    }
    if !(0.0..1.0).contains(&hp.beta1) || !(0.0..1.0).contains(&hp.beta2) {
        return Err(BellaError::invalid(format!(
            "{op}: betas must be in [0, 1), got {} and {}",
            hp.beta1, hp.beta2
        )));
    }
    Ok(())
}
