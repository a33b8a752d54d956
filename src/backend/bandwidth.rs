//! The median-heuristic bandwidth of `rbf_kernel`: host math over the downloaded distances,
//! shared by every backend (and re-exported as `ops::median_bandwidth`). It lives here, below
//! the op layer, so that the backends do not reach up into `ops`.

/// The median-heuristic bandwidth, shared by every backend (it runs on the host over the
/// downloaded `[K, K]` distances): median of `{d_ij : i<j}` over `ln(K+1)`; 1 when that is
/// 0 or not finite (or there are no pairs, K = 1).
///
/// `sqdist` is the row-major `[k, k]` matrix of [`pairwise_sqdist`](crate::ops::pairwise_sqdist);
/// only its upper triangle is read. Panics if it holds fewer than `k * k` values.
///
/// ```
/// // One pair at squared distance 4: h = 4 / ln 3.
/// let h = bella::ops::median_bandwidth(&[0.0, 4.0, 4.0, 0.0], 2);
/// assert!((h - 4.0 / 3f32.ln()).abs() < 1e-6);
/// assert_eq!(bella::ops::median_bandwidth(&[0.0], 1), 1.0);
/// ```
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
