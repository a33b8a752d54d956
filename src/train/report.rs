//! The report: JSON (per method: the training split's metrics, those of the test and shifted
//! splits and the OOD AUROCs where the data has them, `null` where not), and the table
//! printed for people.

use super::metrics::Calibration;
use crate::error::{BellaError, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Clone, Debug, Serialize, Deserialize)]
/// One method's results in a [`Report`].
pub struct MethodReport {
    /// The method's name ([`Method::name`](super::method::Method::name)).
    pub method: String,
    /// Trainable values, `K · D`.
    pub trainable_params: usize,
    /// Wall-clock training time.
    pub train_seconds: f64,
    /// On the training split.
    pub train: Calibration,
    /// On the test split (`null` without one).
    pub in_dist: Option<Calibration>,
    /// On the shifted split (`null` without one).
    pub shifted: Option<Calibration>,
    /// `null` without OOD inputs.
    pub ood_auroc_entropy: Option<f64>,
    /// `null` for one particle or without OOD inputs.
    pub ood_auroc_mi: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
/// The run's results: what `report.json` holds and the table prints.
pub struct Report {
    /// The task's name (the embedded task's, or the user's data file).
    pub task: String,
    /// The backend that trained ([`BackendKind::name`](crate::BackendKind::name)).
    pub backend: String,
    /// Particles K.
    pub particles: usize,
    /// LoRA rank r.
    pub rank: usize,
    /// Per method, in training order.
    pub methods: Vec<MethodReport>,
}

impl Report {
    /// Write the report as pretty-printed JSON to `path`; [`BellaError::Io`] if it cannot.
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BellaError::io(e.to_string()))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| BellaError::io(format!("cannot write {}: {e}", path.display())))
    }

    /// method × metric: the test split (the training split when there is none) and the
    /// shifted split side by side, then the OOD AUROCs; `-` where the data has no such split.
    pub fn table(&self) -> String {
        let digits = self.task == super::task_data::DIGITS_TASK;
        let has_test = self.methods.iter().any(|m| m.in_dist.is_some());
        let first = match (digits, has_test) {
            (true, _) => "in-distribution (target)",
            (false, true) => "test",
            (false, false) => "train (no test split)",
        };
        let second = if digits {
            "shifted (target+noise)"
        } else {
            "shifted"
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<15} {:>9} {:>7} | {:^27} | {:^27} | {:^11}",
            "", "", "", first, second, "OOD AUROC"
        );
        let _ = writeln!(
            s,
            "{:<15} {:>9} {:>7} | {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>6} | {:>5} {:>5}",
            "method",
            "params",
            "time s",
            "acc",
            "NLL",
            "ECE",
            "Brier",
            "acc",
            "NLL",
            "ECE",
            "Brier",
            "H",
            "MI"
        );
        for m in &self.methods {
            let c = |c: Option<&Calibration>| match c {
                Some(c) => format!(
                    "{:>6.3} {:>6.3} {:>6.3} {:>6.3}",
                    c.accuracy, c.nll, c.ece, c.brier
                ),
                None => format!("{:>6} {:>6} {:>6} {:>6}", "-", "-", "-", "-"),
            };
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
            let _ = writeln!(
                s,
                "{:<15} {:>9} {:>7.1} | {} | {} | {:>5} {:>5}",
                m.method,
                m.trainable_params,
                m.train_seconds,
                c(m.in_dist.as_ref().or(Some(&m.train).filter(|_| !has_test))),
                c(m.shifted.as_ref()),
                opt(m.ood_auroc_entropy),
                opt(m.ood_auroc_mi)
            );
        }
        s
    }
}
