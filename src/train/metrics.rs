//! Metrics on predictive probabilities (host side, after evaluation, never in the training
//! loop): accuracy, NLL, ECE (15 equal-width bins of top-label confidence), Brier score
//! (squared error summed over classes, mean over samples) and OOD AUROC.

use serde::{Deserialize, Serialize};

pub const ECE_BINS: usize = 15;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub accuracy: f64,
    pub nll: f64,
    pub ece: f64,
    pub brier: f64,
}

/// One reliability bin: how many samples, their mean confidence and accuracy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bin {
    pub count: usize,
    pub confidence: f64,
    pub accuracy: f64,
}

/// `probs` is `[M, C]` row-major.
pub fn calibration(probs: &[f32], labels: &[u32], c: usize) -> Calibration {
    let m = labels.len();
    let (mut correct, mut nll, mut brier) = (0usize, 0.0f64, 0.0f64);
    for (row, &y) in probs.chunks(c).zip(labels) {
        let top = argmax(row);
        correct += (top == y as usize) as usize;
        nll -= (row[y as usize] as f64).max(1e-12).ln();
        brier += row
            .iter()
            .enumerate()
            .map(|(j, &p)| (p as f64 - (j == y as usize) as u8 as f64).powi(2))
            .sum::<f64>();
    }
    let bins = reliability(probs, labels, c);
    let ece = bins
        .iter()
        .map(|b| b.count as f64 / m as f64 * (b.accuracy - b.confidence).abs())
        .sum();
    Calibration {
        accuracy: correct as f64 / m as f64,
        nll: nll / m as f64,
        ece,
        brier: brier / m as f64,
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &p) in row.iter().enumerate() {
        if p > row[best] {
            best = j;
        }
    }
    best
}

/// The [`ECE_BINS`] bins of `(i/B, (i+1)/B]` (the first also takes 0).
pub fn reliability(probs: &[f32], labels: &[u32], c: usize) -> Vec<Bin> {
    let mut bins = vec![Bin::default(); ECE_BINS];
    for (row, &y) in probs.chunks(c).zip(labels) {
        let top = argmax(row);
        let conf = row[top] as f64;
        let b = ((conf * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
        bins[b].count += 1;
        bins[b].confidence += conf;
        bins[b].accuracy += (top == y as usize) as u8 as f64;
    }
    for b in &mut bins {
        if b.count > 0 {
            b.confidence /= b.count as f64;
            b.accuracy /= b.count as f64;
        }
    }
    bins
}

/// Area under the ROC curve for telling `positive` (OOD) from `negative` (in-distribution)
/// scores, higher meaning "more likely OOD": the Mann–Whitney statistic, ties counting ½.
pub fn auroc(negative: &[f32], positive: &[f32]) -> f64 {
    let mut all: Vec<(f32, bool)> = negative
        .iter()
        .map(|&s| (s, false))
        .chain(positive.iter().map(|&s| (s, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks over ties, then the rank sum of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg * all[i..j].iter().filter(|e| e.1).count() as f64;
        i = j;
    }
    let (p, n) = (positive.len() as f64, negative.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_extremes_and_ties() {
        assert_eq!(auroc(&[0.1, 0.2], &[0.3, 0.4]), 1.0);
        assert_eq!(auroc(&[0.3, 0.4], &[0.1, 0.2]), 0.0);
        assert_eq!(auroc(&[0.5, 0.5], &[0.5]), 0.5);
    }

    #[test]
    fn calibration_by_hand() {
        // Two samples, C = 2: one right at 0.9, one wrong at 0.6.
        let probs = [0.9, 0.1, 0.6, 0.4];
        let c = calibration(&probs, &[0, 1], 2);
        assert!((c.accuracy - 0.5).abs() < 1e-12);
        let nll = -(0.9f64.ln() + 0.4f64.ln()) / 2.0;
        assert!((c.nll - nll).abs() < 1e-6);
        let brier = ((0.1f64.powi(2) * 2.0) + (0.6f64.powi(2) * 2.0)) / 2.0;
        assert!((c.brier - brier).abs() < 1e-6);
        // Bins: 0.9 → bin 13 (acc 1), 0.6 → bin 8 (acc 0): ECE = ½·0.1 + ½·0.6.
        assert!((c.ece - 0.35).abs() < 1e-6, "{}", c.ece);
    }
}
