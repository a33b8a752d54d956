//! `adamw_step` (DESIGN.md op 7) in float64, as PyTorch's `torch.optim.AdamW`.

/// AdamW hyper-parameters of one step, in float64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to `√v̂` in the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// The step number t, from 1.
    pub step: u32,
}

/// One AdamW step on every element; returns the new `(param, m, v)`:
/// `m = β1 m + (1−β1) g`, `v = β2 v + (1−β2) g²`, `m̂ = m/(1−β1ᵗ)`, `v̂ = v/(1−β2ᵗ)`,
/// `param = param·(1 − lr·wd) − lr · m̂ / (√v̂ + eps)`.
pub fn adamw_step(
    param: &[f64],
    grad: &[f64],
    m: &[f64],
    v: &[f64],
    hp: &AdamWHyper,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let t = hp.step as i32;
    let bias1 = 1.0 - hp.beta1.powi(t);
    let bias2 = 1.0 - hp.beta2.powi(t);
    let n = param.len();
    let (mut p_out, mut m_out, mut v_out) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for e in 0..n {
        let g = grad[e];
        let m_new = hp.beta1 * m[e] + (1.0 - hp.beta1) * g;
        let v_new = hp.beta2 * v[e] + (1.0 - hp.beta2) * g * g;
        let m_hat = m_new / bias1;
        let v_hat = v_new / bias2;
        p_out[e] =
            param[e] * (1.0 - hp.lr * hp.weight_decay) - hp.lr * m_hat / (v_hat.sqrt() + hp.eps);
        m_out[e] = m_new;
        v_out[e] = v_new;
    }
    (p_out, m_out, v_out)
}
