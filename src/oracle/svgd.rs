//! The SVGD family in float64: `pairwise_sqdist`, `rbf_kernel` (with the median heuristic)
//! and `svgd_direction` (DESIGN.md ops 4–6). `theta` is `[K, D]`, row i is particle i.

/// `d_ij = ‖θ_i − θ_j‖² = Σ_p (θ_i[p] − θ_j[p])²`, a `[K, K]` matrix.
pub fn pairwise_sqdist(theta: &[f64], k: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..k {
            let mut sum = 0.0;
            for p in 0..d {
                let diff = theta[i * d + p] - theta[j * d + p];
                sum += diff * diff;
            }
            out[i * k + j] = sum;
        }
    }
    out
}

/// The median of `values`: the middle one for an odd count, the mean of the two middle
/// ones for an even count; `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The median-heuristic bandwidth of a `[K, K]` distance matrix:
/// `h = median{d_ij : i < j} / ln(K + 1)`, and `h = 1` if that is 0 or not finite
/// (K = 1 has no pairs: `h = 1`).
pub fn median_bandwidth(sqdist: &[f64], k: usize) -> f64 {
    let mut pairs = Vec::new();
    for i in 0..k {
        for j in i + 1..k {
            pairs.push(sqdist[i * k + j]);
        }
    }
    let h = match median(&pairs) {
        Some(med) => med / ((k + 1) as f64).ln(),
        None => 1.0,
    };
    if h == 0.0 || !h.is_finite() {
        1.0
    } else {
        h
    }
}

/// `k_ij = exp(−d_ij / h)` with `h` the given bandwidth or, when `None`, the median
/// heuristic ([`median_bandwidth`]). Returns the `[K, K]` kernel and `h`.
pub fn rbf_kernel(theta: &[f64], k: usize, d: usize, bandwidth: Option<f64>) -> (Vec<f64>, f64) {
    let sqdist = pairwise_sqdist(theta, k, d);
    let h = bandwidth.unwrap_or_else(|| median_bandwidth(&sqdist, k));
    let kernel = sqdist.iter().map(|&dij| (-dij / h).exp()).collect();
    (kernel, h)
}

/// The SVGD direction, `[K, D]`:
/// `φ_i = (1/K) Σ_j [ k_ji · score_j + (2/h) · k_ji · (θ_i − θ_j) ]`.
/// The first term pulls particles along the kernel-weighted scores, the second pushes
/// them apart.
pub fn svgd_direction(
    theta: &[f64],
    score: &[f64],
    kernel: &[f64],
    k: usize,
    d: usize,
    h: f64,
) -> Vec<f64> {
    let mut phi = vec![0.0; k * d];
    for i in 0..k {
        for p in 0..d {
            let mut sum = 0.0;
            for j in 0..k {
                let k_ji = kernel[j * k + i];
                let drive = k_ji * score[j * d + p];
                let repulse = (2.0 / h) * k_ji * (theta[i * d + p] - theta[j * d + p]);
                sum += drive + repulse;
            }
            phi[i * d + p] = sum / k as f64;
        }
    }
    phi
}
