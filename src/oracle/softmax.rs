//! `softmax_xent` and `ensemble_stats` (DESIGN.md ops 9 and 10) in float64. `logits` is
//! `[K, M, C]`: row `(k, m)` holds particle k's C logits for example m.

/// `softmax(z)_c = exp(z_c − max z) / Σ_j exp(z_j − max z)` (shifting by the max keeps
/// large logits finite and does not change the value).
pub fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = z.iter().map(|&v| (v - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|&e| e / sum).collect()
}

/// `ln Σ_j exp(z_j)`, computed as `max z + ln Σ_j exp(z_j − max z)`.
fn log_sum_exp(z: &[f64]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + z.iter().map(|&v| (v - max).exp()).sum::<f64>().ln()
}

/// The entropy `−Σ_c p_c ln p_c` of a distribution, with `0 ln 0 = 0`.
pub fn entropy(p: &[f64]) -> f64 {
    let mut h = 0.0;
    for &pc in p {
        if pc > 0.0 {
            h -= pc * pc.ln();
        }
    }
    h
}

/// Returns `loss [K]`, `loss_k = (1/M) Σ_m −ln softmax(z_km)[label_m]`, and
/// `dlogits [K, M, C] = (softmax(z_km) − onehot(label_m)) / M`.
/// `−ln softmax(z)[l]` is computed as `logsumexp(z) − z_l`.
pub fn softmax_xent(
    logits: &[f64],
    labels: &[usize],
    k: usize,
    m: usize,
    c: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut loss = vec![0.0; k];
    let mut dlogits = vec![0.0; k * m * c];
    for kk in 0..k {
        for mm in 0..m {
            let row = (kk * m + mm) * c;
            let z = &logits[row..row + c];
            let label = labels[mm];
            loss[kk] += (log_sum_exp(z) - z[label]) / m as f64;
            let p = softmax(z);
            for j in 0..c {
                let onehot = if j == label { 1.0 } else { 0.0 };
                dlogits[row + j] = (p[j] - onehot) / m as f64;
            }
        }
    }
    (loss, dlogits)
}

/// The outputs of [`ensemble_stats`].
#[derive(Clone, Debug, PartialEq)]
pub struct EnsembleStats {
    /// `[M, C]`: the mean over particles of the softmax.
    pub probs: Vec<f64>,
    /// `[M]`: the entropy of `probs`.
    pub entropy: Vec<f64>,
    /// `[M]`: the mean over particles of each particle's entropy.
    pub expected_entropy: Vec<f64>,
    /// `[M]`: `entropy − expected_entropy`.
    pub mutual_info: Vec<f64>,
}

/// For each example m: `probs_m = (1/K) Σ_k softmax(z_km)`, `entropy_m = H(probs_m)`,
/// `expected_entropy_m = (1/K) Σ_k H(softmax(z_km))`,
/// `mutual_info_m = entropy_m − expected_entropy_m` (H as in [`entropy`]).
pub fn ensemble_stats(logits: &[f64], k: usize, m: usize, c: usize) -> EnsembleStats {
    let mut s = EnsembleStats {
        probs: vec![0.0; m * c],
        entropy: vec![0.0; m],
        expected_entropy: vec![0.0; m],
        mutual_info: vec![0.0; m],
    };
    for mm in 0..m {
        let mut mean = vec![0.0; c];
        let mut expected = 0.0;
        for kk in 0..k {
            let row = (kk * m + mm) * c;
            let p = softmax(&logits[row..row + c]);
            for j in 0..c {
                mean[j] += p[j] / k as f64;
            }
            expected += entropy(&p) / k as f64;
        }
        s.entropy[mm] = entropy(&mean);
        s.expected_entropy[mm] = expected;
        s.mutual_info[mm] = s.entropy[mm] - expected;
        s.probs[mm * c..(mm + 1) * c].copy_from_slice(&mean);
    }
    s
}
