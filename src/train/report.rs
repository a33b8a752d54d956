//! The report: JSON in the schema of the training issue, and the table printed for people.

use super::metrics::Calibration;
use crate::error::{BellaError, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodReport {
    pub method: String,
    pub trainable_params: usize,
    pub train_seconds: f64,
    pub in_dist: Calibration,
    pub shifted: Calibration,
    pub ood_auroc_entropy: f64,
    /// `null` for one particle.
    pub ood_auroc_mi: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub task: String,
    pub backend: String,
    pub particles: usize,
    pub rank: usize,
    pub methods: Vec<MethodReport>,
}

impl Report {
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BellaError::io(e.to_string()))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| BellaError::io(format!("cannot write {}: {e}", path.display())))
    }

    /// method × metric, in-distribution and shifted side by side.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<15} {:>9} {:>7} | {:^27} | {:^27} | {:^11}",
            "", "", "", "in-distribution (target)", "shifted (target+noise)", "OOD AUROC"
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
            let c = |c: &Calibration| {
                format!(
                    "{:>6.3} {:>6.3} {:>6.3} {:>6.3}",
                    c.accuracy, c.nll, c.ece, c.brier
                )
            };
            let mi = m
                .ood_auroc_mi
                .map_or("-".to_string(), |v| format!("{v:.3}"));
            let _ = writeln!(
                s,
                "{:<15} {:>9} {:>7.1} | {} | {} | {:>5.3} {:>5}",
                m.method,
                m.trainable_params,
                m.train_seconds,
                c(&m.in_dist),
                c(&m.shifted),
                m.ood_auroc_entropy,
                mi
            );
        }
        s
    }
}
