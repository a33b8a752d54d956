//! Host side of `shaders/softmax.wgsl`.

use super::kernels::{Kernel, Params, Step};
use super::{bind, storage, tensor, WgpuBackend};
use crate::backend::{Backend, EnsembleStats};
use crate::error::Result;
use crate::tensor::Tensor;

pub fn xent(
    be: &WgpuBackend,
    logits: &Tensor,
    labels: &[u32],
    k: usize,
    m: usize,
    c: usize,
) -> Result<(Tensor, Tensor)> {
    let op = "softmax_xent";
    let z = storage(op, logits)?;
    // Labels travel as their u32 bits in an f32 buffer.
    let lab = be.upload(&[labels.len()], bytemuck::cast_slice::<u32, f32>(labels))?;
    let lab = storage(op, &lab)?;
    let dlogits = be.alloc(k * m * c)?;
    let row_loss = be.alloc(k * m)?;
    let loss = be.alloc(k)?;
    let params = || {
        Params::named()
            .set_u("k", k)
            .set_u("m", m)
            .set_u("c", c)
            .set_f("inv_m", 1.0 / m as f32)
    };
    let steps = [
        Step {
            kernel: Kernel::SoftmaxXentRows,
            params: params(),
            bindings: vec![bind(z), bind(lab), bind(&dlogits), bind(&row_loss)],
            groups: (k * m) as u64,
        },
        Step {
            kernel: Kernel::RowMean,
            params: params(),
            bindings: vec![bind(&row_loss), bind(&loss)],
            groups: k as u64,
        },
    ];
    be.run(op, &steps)?;
    drop(steps);
    Ok((tensor(&[k], loss)?, tensor(&[k, m, c], dlogits)?))
}

pub fn ensemble_stats(
    be: &WgpuBackend,
    logits: &Tensor,
    k: usize,
    m: usize,
    c: usize,
) -> Result<EnsembleStats> {
    let op = "ensemble_stats";
    let z = storage(op, logits)?;
    let probs = be.alloc(m * c)?;
    let entropy = be.alloc(m)?;
    let expected = be.alloc(m)?;
    let mutual = be.alloc(m)?;
    let step = Step {
        kernel: Kernel::EnsembleStats,
        params: Params::named()
            .set_u("k", k)
            .set_u("m", m)
            .set_u("c", c)
            .set_f("inv_k", 1.0 / k as f32),
        bindings: vec![
            bind(z),
            bind(&probs),
            bind(&entropy),
            bind(&expected),
            bind(&mutual),
        ],
        groups: m as u64,
    };
    be.run(op, &[step])?;
    Ok(EnsembleStats {
        probs: tensor(&[m, c], probs)?,
        entropy: tensor(&[m], entropy)?,
        expected_entropy: tensor(&[m], expected)?,
        mutual_info: tensor(&[m], mutual)?,
    })
}
