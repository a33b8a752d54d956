//! `softmax_xent` (DESIGN.md op 9): `logits [K, M, C]`, `labels [M]` → `loss [K]` (mean over M
//! of `−log softmax` at the label) and `dlogits [K, M, C] = (softmax − onehot) / M`. Stable for
//! large logits; a label ≥ C is an error.

use super::{expect_device, expect_nonempty, expect_rank};
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

const OP: &str = "softmax_xent";

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
