//! CPU reference for `adamw_step` (DESIGN.md op 7), as PyTorch's AdamW.

use crate::backend::AdamW;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// Bias corrections `1 − β1ᵗ`, `1 − β2ᵗ`, computed in f64 on the host (shared by backends).
pub fn bias_corrections(hp: &AdamW) -> (f32, f32) {
    let t = hp.step as i32;
    (
        (1.0 - (hp.beta1 as f64).powi(t)) as f32,
        (1.0 - (hp.beta2 as f64).powi(t)) as f32,
    )
}

pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamW) {
    let (bc1, bc2) = bias_corrections(hp);
    let decay = 1.0 - hp.lr * hp.weight_decay;
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let gi = g[i];
                m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * gi;
                v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * gi * gi;
                let m_hat = m[i] / bc1;
                let v_hat = v[i] / bc2;
                p[i] = p[i] * decay - hp.lr * m_hat / (v_hat.sqrt() + hp.eps);
            }
        });
}
