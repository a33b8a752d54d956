//! CPU reference for `adamw_step` (DESIGN.md op 7), as PyTorch's AdamW.

use super::simd::{self, Isa};
use crate::backend::AdamW;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// One pass over the four streams, in parallel chunks: memory-bound (7 f32 moved per
/// element) once the divisions and the square root run on wide vectors.
pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamW) {
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| adamw_chunk(p, g, m, v, hp));
}

/// AVX-512 or AVX2 where the CPU has them (the same operations, unfused, so the same
/// results), else SSE2.
fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamW) {
    #[cfg(target_arch = "x86_64")]
    match simd::isa() {
        // SAFETY: `isa` reports only what this CPU has.
        Isa::Avx512 => return unsafe { adamw_chunk_avx512(p, g, m, v, hp) },
        Isa::Avx2 => return unsafe { adamw_chunk_avx2(p, g, m, v, hp) },
        Isa::Portable => {}
    }
    adamw_chunk_portable(p, g, m, v, hp)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn adamw_chunk_avx512(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamW) {
    adamw_chunk_portable(p, g, m, v, hp)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adamw_chunk_avx2(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamW) {
    adamw_chunk_portable(p, g, m, v, hp)
}

/// Zipped iterators (no indexing), so there are no bounds checks and the loop vectorises.
#[inline(always)]
fn adamw_chunk_portable(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamW) {
    let (bc1, bc2) = hp.bias_corrections();
    let decay = 1.0 - hp.lr * hp.weight_decay;
    let (b1, b2, lr, eps) = (hp.beta1, hp.beta2, hp.lr, hp.eps);
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let m_hat = *m / bc1;
        let v_hat = *v / bc2;
        *p = *p * decay - lr * m_hat / (v_hat.sqrt() + eps);
    }
}
