//! CPU reference for `pairwise_sqdist`, `rbf_kernel` and `svgd_direction` (DESIGN.md 4–6).

use super::gemm;
use rayon::prelude::*;

/// `d_ij = ‖θ_i − θ_j‖²`, accumulating squared differences in f64 (no `‖θ‖²` expansion,
/// which cancels badly for nearby particles).
pub fn pairwise_sqdist(theta: &[f32], k: usize, d: usize) -> Vec<f32> {
    let pairs: Vec<(usize, usize)> = (0..k)
        .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
        .collect();
    let vals: Vec<f32> = pairs
        .par_iter()
        .map(|&(i, j)| {
            let (a, b) = (&theta[i * d..(i + 1) * d], &theta[j * d..(j + 1) * d]);
            a.iter()
                .zip(b)
                .map(|(&x, &y)| {
                    let t = x as f64 - y as f64;
                    t * t
                })
                .sum::<f64>() as f32
        })
        .collect();
    let mut out = vec![0.0f32; k * k];
    for (&(i, j), &v) in pairs.iter().zip(&vals) {
        out[i * k + j] = v;
        out[j * k + i] = v;
    }
    out
}

/// The median-heuristic bandwidth: median of `{d_ij : i<j}` over `ln(K+1)`; 1 when that is
/// 0 or not finite (or there are no pairs, K = 1).
pub fn median_bandwidth(sqdist: &[f32], k: usize) -> f32 {
    let mut v: Vec<f32> = (0..k)
        .flat_map(|i| (i + 1..k).map(move |j| sqdist[i * k + j]))
        .collect();
    if v.is_empty() {
        return 1.0;
    }
    v.sort_by(f32::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    };
    let h = (med / ((k + 1) as f64).ln()) as f32;
    if h > 0.0 && h.is_finite() {
        h
    } else {
        1.0
    }
}

pub fn rbf_from_sqdist(sqdist: &[f32], k: usize, bandwidth: Option<f32>) -> (Vec<f32>, f32) {
    let h = bandwidth.unwrap_or_else(|| median_bandwidth(sqdist, k));
    let kern = sqdist.iter().map(|&d| (-d / h).exp()).collect();
    (kern, h)
}

/// `φ_i = (1/K) Σ_j k_ji (score_j + (2/h)(θ_i − θ_j))`, computed as two GEMMs with `Kᵀ`
/// plus a row scaling: `φ = (1/K) Kᵀ S − (2/(hK)) Kᵀ Θ + (2/(hK)) diag(Σ_j k_ji) Θ`.
/// Columns of the `[K, D]` matrices are split across threads.
pub fn direction(theta: &[f32], score: &[f32], kern: &[f32], k: usize, d: usize, h: f32) -> Vec<f32> {
    let mut phi = vec![0.0f32; k * d];
    let inv_k = 1.0 / k as f32;
    let rep = 2.0 / (h * k as f32);
    let col_sum: Vec<f32> = (0..k).map(|i| (0..k).map(|j| kern[j * k + i]).sum()).collect();
    // Transposed kernel: kt[i][j] = k_ji.
    let kt: Vec<f32> = (0..k * k).map(|t| kern[(t % k) * k + t / k]).collect();
    const COLS: usize = 4096;
    let chunks = d.div_ceil(COLS);
    let parts: Vec<(usize, Vec<f32>)> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let c0 = c * COLS;
            let w = COLS.min(d - c0);
            let gather = |src: &[f32]| -> Vec<f32> {
                (0..k).flat_map(|i| src[i * d + c0..i * d + c0 + w].iter().copied()).collect()
            };
            let (s, t) = (gather(score), gather(theta));
            let mut out = vec![0.0f32; k * w];
            gemm(k, w, k, inv_k, &kt, false, &s, false, 0.0, &mut out);
            gemm(k, w, k, -rep, &kt, false, &t, false, 1.0, &mut out);
            for i in 0..k {
                let f = rep * col_sum[i];
                for (o, &tv) in out[i * w..(i + 1) * w].iter_mut().zip(&t[i * w..(i + 1) * w]) {
                    *o += f * tv;
                }
            }
            (c0, out)
        })
        .collect();
    for (c0, out) in parts {
        let w = out.len() / k.max(1);
        for i in 0..k {
            phi[i * d + c0..i * d + c0 + w].copy_from_slice(&out[i * w..(i + 1) * w]);
        }
    }
    phi
}
