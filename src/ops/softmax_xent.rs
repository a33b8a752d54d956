//! `softmax_xent` (DESIGN.md op 9); the contract is on [`softmax_xent`].

use super::{expect_device, expect_nonempty, expect_rank};
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

const OP: &str = "softmax_xent";

/// `softmax_xent` (DESIGN.md op 9): softmax cross-entropy of every particle's logits, and
/// its gradient.
///
/// In `logits [K, M, C]`, `labels` (M class indices, shared by all particles); returns
/// `(loss, dlogits)`: `loss [K]`, the mean over the M rows of `−log softmax(logits)[label]`
/// (natural log), and `dlogits [K, M, C] = (softmax − onehot) / M`. Stable for large logits.
///
/// # Errors
/// [`BellaError::Shape`] if `logits` is not a non-empty 3-D tensor or `labels` does not hold
/// M values; [`BellaError::Invalid`] if a label is ≥ C or `logits` is on another backend;
/// [`BellaError::Device`] if the outputs do not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
///
/// # Example
///
/// One particle, two rows: `[0, 0]` with label 1 (loss `ln 2`) and `[ln 3, 0]` with label 0
/// (softmax `[¾, ¼]`, loss `ln(4/3)`); the mean is `ln(8/3) / 2`, and
/// `dlogits = [[½, −½], [−¼, ¼]] / 2`.
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::{ops, Backend};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
/// let logits = be.upload(&[1, 2, 2], &[0.0, 0.0, 3f32.ln(), 0.0])?;
/// let (loss, dlogits) = ops::softmax_xent(&be, &logits, &[1, 0])?;
/// assert_eq!(loss.shape(), &[1]);
/// assert!(close(be.download(&loss)?[0], (8.0f32 / 3.0).ln() / 2.0));
/// let want = [0.25, -0.25, -0.125, 0.125];
/// let got = be.download(&dlogits)?;
/// assert!(got.iter().zip(want).all(|(&g, w)| close(g, w)));
///
/// // Large logits stay finite; a label ≥ C is an error.
/// let big = be.upload(&[1, 1, 2], &[1000.0, 0.0])?;
/// assert!(close(be.download(&ops::softmax_xent(&be, &big, &[0])?.0)?[0], 0.0));
/// assert!(ops::softmax_xent(&be, &logits, &[2, 0]).is_err());
/// # Ok(())
/// # }
/// ```
pub fn softmax_xent(be: &dyn Backend, logits: &Tensor, labels: &[u32]) -> Result<(Tensor, Tensor)> {
    let s = expect_rank(OP, "logits", logits, 3)?;
    expect_nonempty(OP, "logits", logits)?;
    expect_device(OP, be, &[("logits", logits)])?;
    let (k, m, c) = (s[0], s[1], s[2]);
    if labels.len() != m {
        return Err(BellaError::shape(
            OP,
            "labels",
            format!("[{m}]"),
            &[labels.len()],
        ));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= c) {
        return Err(BellaError::invalid(format!(
            "{OP}: label {l} at position {i} is out of range for C = {c} classes"
        )));
    }
    be.softmax_xent(logits, labels, k, m, c)
}
