//! `ensemble_stats` (DESIGN.md op 10): `logits [K, M, C]` → `probs [M, C]` (mean over
//! particles of the softmax), `entropy [M]` (of `probs`), `expected_entropy [M]` (mean of the
//! particles' entropies), `mutual_info [M] = entropy − expected_entropy`.

use super::{expect_device, expect_nonempty, expect_rank};
use crate::backend::{Backend, EnsembleStats};
use crate::error::Result;
use crate::tensor::Tensor;

pub fn ensemble_stats(be: &dyn Backend, logits: &Tensor) -> Result<EnsembleStats> {
    let s = expect_rank("ensemble_stats", "logits", logits, 3)?;
    expect_nonempty("ensemble_stats", "logits", logits)?;
    expect_device("ensemble_stats", be, &[("logits", logits)])?;
    be.ensemble_stats(logits, s[0], s[1], s[2])
}
