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

/// PyTorch `gelu(x, approximate="tanh")`.
pub fn gelu(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

/// `dy · d/dx gelu(x)`: `0.5(1+t) + 0.5x(1−t²)·√(2/π)(1+3c x²)` with `t = tanh(u)`.
pub fn gelu_grad(x: f32, dy: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    let t = u.tanh();
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
    dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
}
