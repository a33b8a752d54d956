//! CPU reference for the activations (DESIGN.md op 8) and the `axpby` utility.

use rayon::prelude::*;

/// √(2/π), the constant of the tanh form of GELU.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;
const CHUNK: usize = 1 << 14;

pub fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x)));
    out
}

pub fn zip(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
        .for_each(|(o, (x, y))| {
            o.iter_mut()
                .zip(x.iter().zip(y))
                .for_each(|(o, (&x, &y))| *o = f(x, y))
        });
    out
}

pub fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// `dy · 1[x > 0]` (the subgradient at 0 is 0, as PyTorch).
pub fn relu_grad(x: f32, dy: f32) -> f32 {
    if x > 0.0 {
        dy
    } else {
        0.0
    }
}

/// `1 + tanh(u) = 2 / (1 + e^(−2u))`: formed this way it keeps its relative precision for
/// u ≪ 0 (x below about −3), where `1 + tanh(u)` would cancel.
fn one_plus_tanh(u: f32) -> f32 {
    2.0 / (1.0 + (-2.0 * u).exp())
}

/// PyTorch `gelu(x, approximate="tanh")`: `0.5 x (1 + tanh(u))`, `u = √(2/π)(x + c x³)`.
pub fn gelu(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    0.5 * x * one_plus_tanh(u)
}

/// `dy · d/dx gelu(x)`: `0.5(1+t) + 0.5x(1−t²)·√(2/π)(1+3c x²)` with `t = tanh(u)`, and
/// `1 − t² = (2 − (1+t))(1+t)`.
pub fn gelu_grad(x: f32, dy: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    let s = one_plus_tanh(u);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
    dy * (0.5 * s + 0.5 * x * ((2.0 - s) * s) * du)
}
