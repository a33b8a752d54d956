//! The results of one `bella bench` run: JSON for machines, a table for people.

use super::baselines::Comparison;
use super::machine::Machine;
use super::measure::Stats;
use super::roofline::Ceilings;
use crate::error::{BellaError, Result};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct BackendReport {
    pub name: String,
    pub device: String,
    pub ceilings: Option<Ceilings>,
    /// Why this backend was not measured, when it was not.
    pub skipped: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpResult {
    pub op: String,
    pub backend: String,
    pub shape: String,
    /// `wall` (host clock between device synchronisations) or `gpu` (device timestamps).
    pub clock: String,
    #[serde(flatten)]
    pub stats: Stats,
    pub flops: f64,
    pub bytes: f64,
    pub gflops: f64,
    pub gbs: f64,
    pub bound: String,
    pub roofline_pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bella_version: String,
    pub date: String,
    pub command: String,
    pub quick: bool,
    pub machine: Machine,
    pub backends: Vec<BackendReport>,
    pub results: Vec<OpResult>,
    pub comparisons: Vec<Comparison>,
    /// Things measured not at all or not as asked (absent backends, the cuBLAS anchor).
    pub notes: Vec<String>,
}

impl Report {
    pub fn write_json(&self, path: &str) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BellaError::io(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| BellaError::io(format!("{path}: {e}")))
    }
}

pub fn backend_header(b: &BackendReport) -> String {
    match (&b.ceilings, &b.skipped) {
        (_, Some(why)) => format!("{}: not measured — {why}", b.name),
        (Some(c), None) => format!(
            "{}: {}\n  ceilings: copy {:.1} GB/s ({}), GEMM {:.1} GFLOP/s ({})",
            b.name, b.device, c.copy_gbs, c.copy_how, c.gemm_gflops, c.gemm_shape
        ),
        (None, None) => format!("{}: {}", b.name, b.device),
    }
}

pub fn row_header() -> String {
    format!(
        "  {:<15} {:<36} {:>5} {:>4} {:>10} {:>7} {:>9} {:>8} {:>9}",
        "op", "shape", "clock", "runs", "median ms", "±MAD%", "GFLOP/s", "GB/s", "roofline"
    )
}

pub fn row(r: &OpResult) -> String {
    format!(
        "  {:<15} {:<36} {:>5} {:>4} {:>10.3} {:>6.1}% {:>9.1} {:>8.1} {:>5.0}% {}",
        r.op,
        r.shape,
        r.clock,
        r.stats.runs,
        r.stats.median_s * 1e3,
        r.stats.mad_pct,
        r.gflops,
        r.gbs,
        r.roofline_pct,
        &r.bound[..3]
    )
}

pub fn comparison_table(cs: &[Comparison]) -> String {
    let mut s = format!(
        "{:<44} {:<7} {:<38} {:>9} {:>11} {:>7} {:>8}\n",
        "comparison (ratio = baseline / ours)",
        "backend",
        "shape",
        "ours ms",
        "baseline ms",
        "ratio",
        "target"
    );
    for c in cs {
        let target = match (c.target, c.met()) {
            (Some(t), Some(true)) => format!("≥{t} ok"),
            (Some(t), _) => format!("≥{t} MISS"),
            _ => "-".into(),
        };
        s += &format!(
            "{:<44} {:<7} {:<38} {:>9.3} {:>11.3} {:>7.2} {:>8}\n",
            c.name, c.backend, c.shape, c.ours_ms, c.baseline_ms, c.ratio, target
        );
    }
    s
}
