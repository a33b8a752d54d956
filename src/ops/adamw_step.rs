//! `adamw_step` (DESIGN.md op 7), as PyTorch's AdamW, in place on `param`, `m`, `v`:
//! `m = β1 m + (1−β1) g`, `v = β2 v + (1−β2) g²`, `m̂ = m/(1−β1ᵗ)`, `v̂ = v/(1−β2ᵗ)`,
//! `param = param·(1 − lr·wd) − lr · m̂ / (√v̂ + eps)`. In training it runs once over the
//! whole `[K, D]` arena.

use super::{expect_device, expect_finite, expect_nonempty, expect_shape};
use crate::backend::{AdamW, Backend};
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

const OP: &str = "adamw_step";

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
    if hp.step < 1 {
        return Err(BellaError::invalid(format!(
            "{OP}: step must be ≥ 1, got {}",
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
        expect_finite(OP, name, x)?;
    }
    if !(0.0..1.0).contains(&hp.beta1) || !(0.0..1.0).contains(&hp.beta2) {
        return Err(BellaError::invalid(format!(
            "{OP}: betas must be in [0, 1), got {} and {}",
            hp.beta1, hp.beta2
        )));
    }
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
