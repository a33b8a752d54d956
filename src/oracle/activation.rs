//! The activations (DESIGN.md op 8) in float64, element by element. GELU is the tanh form,
//! as PyTorch's `gelu(x, approximate="tanh")`.

/// `√(2/π)`, the constant of the tanh form.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of the tanh form.
const CUBIC: f64 = 0.044715;

/// `relu(x) = max(x, 0)`.
pub fn relu_forward(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()
}

/// `dx = dy · 1[x > 0]`.
pub fn relu_backward(x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| if v > 0.0 { g } else { 0.0 })
        .collect()
}

/// `gelu(x) = 0.5 x (1 + tanh(u))` with `u = √(2/π) (x + 0.044715 x³)`.
pub fn gelu(x: f64) -> f64 {
    let u = SQRT_2_OVER_PI * (x + CUBIC * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

/// `gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 − tanh² u) · √(2/π) (1 + 3 · 0.044715 x²)`.
pub fn gelu_derivative(x: f64) -> f64 {
    let u = SQRT_2_OVER_PI * (x + CUBIC * x * x * x);
    let t = u.tanh();
    let du_dx = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x * x);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx
}

/// [`gelu`] of every element.
pub fn gelu_forward(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| gelu(v)).collect()
}

/// `dx = dy · gelu'(x)` ([`gelu_derivative`]).
pub fn gelu_backward(x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| g * gelu_derivative(v))
        .collect()
}
