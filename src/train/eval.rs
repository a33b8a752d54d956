//! Evaluation of trained particles on a run's splits: all particles' logits on the device
//! (in chunks of rows), `ensemble_stats` for the predictive distribution, entropy, expected
//! entropy and mutual information, then the metrics on the host.

use super::metrics::{self, Bin, Calibration};
use super::split::Split;
use super::task_data::TaskData;
use crate::autograd::Tape;
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::nn::Particles;
use crate::tensor::Tensor;

/// Rows per forward pass of [`predict`] (bounds the device memory of activations).
pub const PREDICT_CHUNK_ROWS: usize = 4096;

/// Predictions for N rows by K particles over C classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Particles.
    pub k: usize,
    /// Classes.
    pub classes: usize,
    /// `[K, N, C]`: every particle's logits.
    pub logits: Vec<f32>,
    /// `[N, C]`: the mean over particles of the softmax.
    pub probs: Vec<f32>,
    /// `[N]`: entropy of `probs` (total predictive uncertainty).
    pub entropy: Vec<f32>,
    /// `[N]`: mean of the particles' own entropies (aleatoric part).
    pub expected_entropy: Vec<f32>,
    /// `[N]`: `entropy − expected_entropy` (disagreement between particles; 0 for K = 1).
    pub mutual_info: Vec<f32>,
}

impl Prediction {
    /// Rows.
    pub fn len(&self) -> usize {
        self.entropy.len()
    }
    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.entropy.is_empty()
    }
}

/// Every particle's predictions on the rows of `split` (labels, if any, are not used).
pub fn predict(
    be: &dyn Backend,
    model: &dyn Particles,
    arena: &Tensor,
    split: &Split,
) -> Result<Prediction> {
    predict_with(be, model, arena, split, true)
}

/// [`predict`]; without `logits` the per-particle logits stay on the device (`logits` is
/// left empty): the metrics need only the ensemble's statistics.
fn predict_with(
    be: &dyn Backend,
    model: &dyn Particles,
    arena: &Tensor,
    split: &Split,
    logits: bool,
) -> Result<Prediction> {
    let (k, n, f) = (model.k(), split.len(), split.features);
    if n == 0 {
        return Err(BellaError::invalid("no rows to predict"));
    }
    let mut chunks = Vec::new();
    for start in (0..n).step_by(PREDICT_CHUNK_ROWS) {
        let rows = PREDICT_CHUNK_ROWS.min(n - start);
        let mut tape = Tape::new(be);
        let xs = &split.x[start * f..(start + rows) * f];
        let x = tape.input(be.upload(&[rows, f], xs)?, false);
        let logits_var = model.forward(&mut tape, x, arena)?;
        let stats = crate::ops::ensemble_stats(be, tape.value(logits_var))?;
        let particle_logits = if logits {
            be.download(tape.value(logits_var))?
        } else {
            Vec::new()
        };
        chunks.push((
            rows,
            particle_logits,
            be.download(&stats.probs)?,
            be.download(&stats.entropy)?,
            be.download(&stats.expected_entropy)?,
            be.download(&stats.mutual_info)?,
        ));
    }
    let c = chunks[0].2.len() / chunks[0].0;
    let mut p = Prediction {
        k,
        classes: c,
        logits: if logits {
            vec![0.0; k * n * c]
        } else {
            Vec::new()
        },
        probs: Vec::with_capacity(n * c),
        entropy: Vec::with_capacity(n),
        expected_entropy: Vec::with_capacity(n),
        mutual_info: Vec::with_capacity(n),
    };
    let mut start = 0;
    for (rows, chunk_logits, probs, h, eh, mi) in chunks {
        for kk in (0..k).filter(|_| logits) {
            let dst = (kk * n + start) * c;
            p.logits[dst..dst + rows * c]
                .copy_from_slice(&chunk_logits[kk * rows * c..(kk + 1) * rows * c]);
        }
        p.probs.extend(probs);
        p.entropy.extend(h);
        p.expected_entropy.extend(eh);
        p.mutual_info.extend(mi);
        start += rows;
    }
    Ok(p)
}

/// The metrics of one run's particles on the splits its data has.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// On the training split.
    pub train: Calibration,
    /// On the test split, when there is one.
    pub in_dist: Option<Calibration>,
    /// On the shifted split, when there is one.
    pub shifted: Option<Calibration>,
    /// OOD inputs against the test split (else the training split), by predictive entropy.
    pub ood_auroc_entropy: Option<f64>,
    /// The same by mutual information; only for K > 1 (one particle has no disagreement).
    pub ood_auroc_mi: Option<f64>,
    /// Reliability bins of the test split (else the training split) and the shifted split.
    pub in_dist_bins: Vec<Bin>,
    /// (The shifted split's; empty without one.)
    pub shifted_bins: Vec<Bin>,
}

/// Predict with every particle on every split `task` has and compute the metrics of
/// [`Evaluation`]. Errors if a prediction is not finite (a diverged model).
pub fn evaluate(
    be: &dyn Backend,
    model: &dyn Particles,
    arena: &Tensor,
    task: &TaskData,
) -> Result<Evaluation> {
    let c = task.classes;
    let calib = |split: &Split, what: &'static str| -> Result<(Prediction, Calibration)> {
        let p = predict_with(be, model, arena, split, false)?;
        let cal = metrics::calibration(&p.probs, &split.y, c).map_err(on(what))?;
        Ok((p, cal))
    };
    let (train_p, train) = calib(&task.train, "train")?;
    let test = task
        .test
        .as_ref()
        .map(|s| calib(s, "in-distribution"))
        .transpose()?;
    let shifted = task
        .shifted
        .as_ref()
        .map(|s| calib(s, "shifted"))
        .transpose()?;
    let (id_split, id_pred) = match (&task.test, &test) {
        (Some(s), Some((p, _))) => (s, p),
        _ => (&task.train, &train_p),
    };
    let (mut auroc_h, mut auroc_mi) = (None, None);
    if let Some(ood) = &task.ood {
        let o = predict_with(be, model, arena, ood, false)?;
        auroc_h =
            Some(metrics::auroc(&id_pred.entropy, &o.entropy).map_err(on("predictive entropy"))?);
        if model.k() > 1 {
            auroc_mi = Some(
                metrics::auroc(&id_pred.mutual_info, &o.mutual_info)
                    .map_err(on("mutual information"))?,
            );
        }
    }
    let bins =
        |p: &Prediction, s: &Split, what| metrics::reliability(&p.probs, &s.y, c).map_err(on(what));
    Ok(Evaluation {
        in_dist_bins: bins(id_pred, id_split, "in-distribution")?,
        shifted_bins: match (&task.shifted, &shifted) {
            (Some(s), Some((p, _))) => bins(p, s, "shifted")?,
            _ => Vec::new(),
        },
        train,
        in_dist: test.map(|(_, c)| c),
        shifted: shifted.map(|(_, c)| c),
        ood_auroc_entropy: auroc_h,
        ood_auroc_mi: auroc_mi,
    })
}

/// Names the split (or statistic) a metric's error came from.
fn on(what: &'static str) -> impl Fn(BellaError) -> BellaError {
    move |e| match e {
        BellaError::NonFinite(m) => {
            BellaError::NonFinite(format!("evaluation on {what} predictions: {m}"))
        }
        BellaError::Invalid(m) => BellaError::Invalid(format!("evaluation on {what}: {m}")),
        e => e,
    }
}
