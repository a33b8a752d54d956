//! Metrics on predictive probabilities (host side, after evaluation, never in the training
//! loop): accuracy, NLL, ECE (15 equal-width bins of top-label confidence), Brier score
//! (squared error summed over classes, mean over samples) and OOD AUROC.
//!
//! Inputs come from a model that may have diverged, so every metric checks them first: a
//! NaN or infinite probability or score is a [`BellaError::NonFinite`] naming where it is
//! (never a hang, never a number that looks plausible), and empty inputs, mismatched
//! lengths or a label ≥ C are [`BellaError::Invalid`].

use crate::error::{BellaError, Result};
use serde::{Deserialize, Serialize};

/// Bins of the expected calibration error.
pub const ECE_BINS: usize = 15;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
/// Calibration metrics of predictive probabilities on one split (means over samples).
pub struct Calibration {
    /// Fraction of samples whose top class is the label.
    pub accuracy: f64,
    /// Mean negative log-likelihood of the label (nats).
    pub nll: f64,
    /// Expected calibration error over [`ECE_BINS`] equal-width confidence bins.
    pub ece: f64,
    /// Brier score: squared error against the one-hot label, summed over classes.
    pub brier: f64,
}

/// One reliability bin: how many samples, their mean confidence and accuracy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bin {
    /// Samples whose top-label confidence falls in the bin.
    pub count: usize,
    /// Their mean top-label confidence.
    pub confidence: f64,
    /// Their accuracy.
    pub accuracy: f64,
}

/// `probs` `[M, C]` row-major against `labels` `[M]`: sizes agree, labels are classes,
/// every probability is finite.
fn check_probs(metric: &str, probs: &[f32], labels: &[u32], c: usize) -> Result<()> {
    let m = labels.len();
    if m == 0 || c == 0 {
        return Err(BellaError::invalid(format!(
            "{metric}: needs at least one sample and one class (got {m} samples, {c} classes)"
        )));
    }
    if probs.len() != m * c {
        return Err(BellaError::invalid(format!(
            "{metric}: {} probabilities for {m} samples of {c} classes",
            probs.len()
        )));
    }
    if let Some((i, y)) = labels.iter().enumerate().find(|(_, &y)| y as usize >= c) {
        return Err(BellaError::invalid(format!(
            "{metric}: label {y} of sample {i} is not one of the {c} classes"
        )));
    }
    if let Some((i, p)) = probs.iter().enumerate().find(|(_, p)| !p.is_finite()) {
        return Err(BellaError::NonFinite(format!(
            "{metric}: the probability of class {} for sample {} is {p}",
            i % c,
            i / c
        )));
    }
    Ok(())
}

/// `probs` is `[M, C]` row-major.
pub fn calibration(probs: &[f32], labels: &[u32], c: usize) -> Result<Calibration> {
    check_probs("calibration", probs, labels, c)?;
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
    let bins = reliability(probs, labels, c)?;
    let ece = bins
        .iter()
        .map(|b| b.count as f64 / m as f64 * (b.accuracy - b.confidence).abs())
        .sum();
    Ok(Calibration {
        accuracy: correct as f64 / m as f64,
        nll: nll / m as f64,
        ece,
        brier: brier / m as f64,
    })
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
pub fn reliability(probs: &[f32], labels: &[u32], c: usize) -> Result<Vec<Bin>> {
    check_probs("reliability", probs, labels, c)?;
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
    Ok(bins)
}

/// Area under the ROC curve for telling `positive` (OOD) from `negative` (in-distribution)
/// scores, higher meaning "more likely OOD": the Mann–Whitney statistic, ties counting ½.
/// Both sets must be non-empty and finite (a NaN has no rank).
pub fn auroc(negative: &[f32], positive: &[f32]) -> Result<f64> {
    for (set, scores) in [("in-distribution", negative), ("OOD", positive)] {
        if scores.is_empty() {
            return Err(BellaError::invalid(format!(
                "auroc: the {set} score set is empty"
            )));
        }
        if let Some((i, s)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err(BellaError::NonFinite(format!(
                "auroc: {set} score {i} is {s}"
            )));
        }
    }
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
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_extremes_and_ties() {
        assert_eq!(auroc(&[0.1, 0.2], &[0.3, 0.4]).unwrap(), 1.0);
        assert_eq!(auroc(&[0.3, 0.4], &[0.1, 0.2]).unwrap(), 0.0);
        assert_eq!(auroc(&[0.5, 0.5], &[0.5]).unwrap(), 0.5);
    }

    #[test]
    fn calibration_by_hand() {
        // Two samples, C = 2: one right at 0.9, one wrong at 0.6.
        let probs = [0.9, 0.1, 0.6, 0.4];
        let c = calibration(&probs, &[0, 1], 2).unwrap();
        assert!((c.accuracy - 0.5).abs() < 1e-12);
        let nll = -(0.9f64.ln() + 0.4f64.ln()) / 2.0;
        assert!((c.nll - nll).abs() < 1e-6);
        let brier = ((0.1f64.powi(2) * 2.0) + (0.6f64.powi(2) * 2.0)) / 2.0;
        assert!((c.brier - brier).abs() < 1e-6);
        // Bins: 0.9 → bin 13 (acc 1), 0.6 → bin 8 (acc 0): ECE = ½·0.1 + ½·0.6.
        assert!((c.ece - 0.35).abs() < 1e-6, "{}", c.ece);
    }

    const BAD: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

    fn non_finite<T: std::fmt::Debug>(r: Result<T>, needle: &str) {
        match r {
            Err(BellaError::NonFinite(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected a NonFinite error, got {other:?}"),
        }
    }

    /// A NaN or ±Inf anywhere in a score set (alone, among ties, at either end) is refused;
    /// before, a NaN never left its tie group and `auroc` looped forever.
    #[test]
    fn auroc_refuses_non_finite_scores() {
        for bad in BAD {
            non_finite(auroc(&[0.1, bad, 0.3], &[0.4]), "in-distribution score 1");
            non_finite(auroc(&[0.1], &[bad]), "OOD score 0");
            non_finite(auroc(&[bad, bad], &[bad]), "score 0");
            non_finite(auroc(&[0.5, 0.5], &[0.5, bad]), "OOD score 1");
        }
        assert!(matches!(auroc(&[], &[0.1]), Err(BellaError::Invalid(_))));
        assert!(matches!(auroc(&[0.1], &[]), Err(BellaError::Invalid(_))));
    }

    /// NaN/Inf probabilities are an error, not an NLL of −ln 1e-12 = 27.6 or a silent bin.
    #[test]
    fn calibration_and_reliability_refuse_non_finite_probabilities() {
        for bad in BAD {
            // In the labelled class (where NLL looks), in another class, in the top class.
            for (probs, at) in [
                ([0.9, 0.1, bad, 0.4], "class 0 for sample 1"),
                ([0.9, bad, 0.6, 0.4], "class 1 for sample 0"),
                ([bad, 0.1, 0.6, 0.4], "class 0 for sample 0"),
            ] {
                non_finite(calibration(&probs, &[0, 0], 2), at);
                non_finite(reliability(&probs, &[0, 0], 2), at);
            }
        }
    }

    #[test]
    fn calibration_refuses_inconsistent_inputs() {
        let invalid = |r: Result<Calibration>| assert!(matches!(r, Err(BellaError::Invalid(_))));
        invalid(calibration(&[], &[], 2));
        invalid(calibration(&[0.5, 0.5, 1.0], &[0, 1], 2));
        invalid(calibration(&[0.5, 0.5], &[2], 2));
        assert!(matches!(
            reliability(&[0.5, 0.5], &[0, 0], 2),
            Err(BellaError::Invalid(_))
        ));
    }
}
