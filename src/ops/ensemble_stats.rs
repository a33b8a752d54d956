//! `ensemble_stats` (DESIGN.md op 10); the contract is on [`ensemble_stats`].

use super::{expect_device, expect_nonempty, expect_rank};
use crate::backend::{Backend, EnsembleStats};
use crate::error::Result;
use crate::tensor::Tensor;

/// `ensemble_stats` (DESIGN.md op 10): the ensemble's predictive distribution and its
/// uncertainty, from every particle's logits.
///
/// In `logits [K, M, C]`; out (fields of [`EnsembleStats`]) `probs [M, C]` (mean over
/// particles of the softmax), `entropy [M]` (of `probs`), `expected_entropy [M]` (mean of the
/// particles' entropies), `mutual_info [M]` (`entropy − expected_entropy`, the particles'
/// disagreement). Entropies are in nats.
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `logits` is not a non-empty 3-D tensor;
/// [`BellaError::Invalid`](crate::BellaError::Invalid) if it is on another backend;
/// [`BellaError::Device`](crate::BellaError::Device) if the outputs do not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
///
/// # Example
///
/// Two particles that disagree on one row: softmaxes `[¾, ¼]` and `[¼, ¾]`. Their mean is
/// `[½, ½]` (entropy `ln 2`), each particle's entropy is `H = −(¾ ln ¾ + ¼ ln ¼)`, and the
/// mutual information is `ln 2 − H ≈ 0.1308`.
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::{ops, Backend};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
/// let l3 = 3f32.ln();
/// let logits = be.upload(&[2, 1, 2], &[l3, 0.0, 0.0, l3])?;
/// let st = ops::ensemble_stats(&be, &logits)?;
///
/// let probs = be.download(&st.probs)?;
/// assert!(close(probs[0], 0.5) && close(probs[1], 0.5));
/// let h = -(0.75f32 * 0.75f32.ln() + 0.25 * 0.25f32.ln());
/// assert!(close(be.download(&st.entropy)?[0], 2f32.ln()));
/// assert!(close(be.download(&st.expected_entropy)?[0], h));
/// assert!(close(be.download(&st.mutual_info)?[0], 2f32.ln() - h));
/// # Ok(())
/// # }
/// ```
pub fn ensemble_stats(be: &dyn Backend, logits: &Tensor) -> Result<EnsembleStats> {
    let s = expect_rank("ensemble_stats", "logits", logits, 3)?;
    expect_nonempty("ensemble_stats", "logits", logits)?;
    expect_device("ensemble_stats", be, &[("logits", logits)])?;
    be.ensemble_stats(logits, s[0], s[1], s[2])
}
