//! Evaluation of trained particles on the task's splits: one forward of all particles on the
//! device, `ensemble_stats` for the predictive distribution, entropy and mutual information,
//! then the metrics on the host.

use super::data::{DigitsTask, Split, CLASSES};
use super::metrics::{self, Bin, Calibration};
use crate::autograd::Tape;
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::nn::Particles;
use crate::tensor::Tensor;

/// Predictive probabilities `[M, C]`, entropy `[M]` and mutual information `[M]`.
pub struct Prediction {
    pub probs: Vec<f32>,
    pub entropy: Vec<f32>,
    pub mutual_info: Vec<f32>,
}

pub fn predict(
    be: &dyn Backend,
    model: &dyn Particles,
    arena: &Tensor,
    split: &Split,
) -> Result<Prediction> {
    let mut tape = Tape::new(be);
    let x = tape.input(be.upload(&[split.len(), split.features], &split.x)?, false);
    let logits = model.forward(&mut tape, x, arena)?;
    let stats = crate::ops::ensemble_stats(be, tape.value(logits))?;
    Ok(Prediction {
        probs: be.download(&stats.probs)?,
        entropy: be.download(&stats.entropy)?,
        mutual_info: be.download(&stats.mutual_info)?,
    })
}

#[derive(Clone, Debug)]
pub struct Evaluation {
    pub in_dist: Calibration,
    pub shifted: Calibration,
    pub ood_auroc_entropy: f64,
    /// Only for K > 1 (one particle has no disagreement to measure).
    pub ood_auroc_mi: Option<f64>,
    pub in_dist_bins: Vec<Bin>,
    pub shifted_bins: Vec<Bin>,
}

pub fn evaluate(
    be: &dyn Backend,
    model: &dyn Particles,
    arena: &Tensor,
    task: &DigitsTask,
) -> Result<Evaluation> {
    let ind = predict(be, model, arena, &task.in_dist)?;
    let sh = predict(be, model, arena, &task.shifted)?;
    let ood = predict(be, model, arena, &task.ood)?;
    let (ind_y, sh_y) = (&task.in_dist.y, &task.shifted.y);
    Ok(Evaluation {
        in_dist: metrics::calibration(&ind.probs, ind_y, CLASSES).map_err(on("in-distribution"))?,
        shifted: metrics::calibration(&sh.probs, sh_y, CLASSES).map_err(on("shifted"))?,
        ood_auroc_entropy: metrics::auroc(&ind.entropy, &ood.entropy)
            .map_err(on("predictive entropy"))?,
        ood_auroc_mi: (model.k() > 1)
            .then(|| metrics::auroc(&ind.mutual_info, &ood.mutual_info))
            .transpose()
            .map_err(on("mutual information"))?,
        in_dist_bins: metrics::reliability(&ind.probs, ind_y, CLASSES)
            .map_err(on("in-distribution"))?,
        shifted_bins: metrics::reliability(&sh.probs, sh_y, CLASSES).map_err(on("shifted"))?,
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
