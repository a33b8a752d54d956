//! CPU reference for `softmax_xent` and `ensemble_stats` (DESIGN.md ops 9 and 10).

use rayon::prelude::*;

/// Numerically stable log-sum-exp of one row (f64 accumulation).
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = row.iter().map(|&z| (z as f64 - max).exp()).sum();
    max + sum.ln()
}

/// `loss [k]` (mean over rows of −log softmax at the label) and `dlogits = (softmax − onehot)/M`.
pub fn xent(logits: &[f32], labels: &[u32], k: usize, m: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
    let mut dlogits = vec![0.0f32; k * m * c];
    let mut row_loss = vec![0.0f64; k * m];
    dlogits
        .par_chunks_mut(c)
        .zip(row_loss.par_iter_mut())
        .enumerate()
        .for_each(|(row, (d, loss))| {
            let z = &logits[row * c..(row + 1) * c];
            let label = labels[row % m] as usize;
            let lse = log_sum_exp(z);
            *loss = lse - z[label] as f64;
            for (j, dj) in d.iter_mut().enumerate() {
                let p = (z[j] as f64 - lse).exp();
                let onehot = if j == label { 1.0 } else { 0.0 };
                *dj = ((p - onehot) / m as f64) as f32;
            }
        });
    let loss = row_loss
        .chunks(m)
        .map(|r| (r.iter().sum::<f64>() / m as f64) as f32)
        .collect();
    (loss, dlogits)
}

pub struct Stats {
    pub probs: Vec<f32>,
    pub entropy: Vec<f32>,
    pub expected_entropy: Vec<f32>,
    pub mutual_info: Vec<f32>,
}

/// `−Σ p ln p`, with `0 ln 0 = 0`.
fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&q| q > 0.0)
        .map(|&q| q * q.ln())
        .sum::<f64>()
}

pub fn ensemble_stats(logits: &[f32], k: usize, m: usize, c: usize) -> Stats {
    let rows: Vec<(Vec<f64>, f64, f64)> = (0..m)
        .into_par_iter()
        .map(|i| {
            let mut mean = vec![0.0f64; c];
            let mut expected = 0.0f64;
            let mut p = vec![0.0f64; c];
            for kk in 0..k {
                let z = &logits[(kk * m + i) * c..(kk * m + i + 1) * c];
                let lse = log_sum_exp(z);
                for j in 0..c {
                    p[j] = (z[j] as f64 - lse).exp();
                    mean[j] += p[j] / k as f64;
                }
                expected += entropy(&p) / k as f64;
            }
            let h = entropy(&mean);
            (mean, h, expected)
        })
        .collect();
    let mut s = Stats {
        probs: Vec::with_capacity(m * c),
        entropy: Vec::with_capacity(m),
        expected_entropy: Vec::with_capacity(m),
        mutual_info: Vec::with_capacity(m),
    };
    for (mean, h, e) in rows {
        s.probs.extend(mean.iter().map(|&v| v as f32));
        s.entropy.push(h as f32);
        s.expected_entropy.push(e as f32);
        s.mutual_info.push((h - e) as f32);
    }
    s
}
