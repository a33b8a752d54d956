//! Host side of `shaders/optim.wgsl`.

use super::kernels::{Kernel, Params, Step};
use super::{bind, storage, storage_mut, WgpuBackend};
use crate::backend::AdamW;
use crate::error::Result;
use crate::tensor::Tensor;

const THREADS: usize = 256;

/// `1 − βᵗ`, in f64 so that large t and β near 1 keep their digits.
fn bias_correction(beta: f32, step: u32) -> f32 {
    (1.0 - (beta as f64).powi(step.min(i32::MAX as u32) as i32)) as f32
}

pub fn adamw_step(
    be: &WgpuBackend,
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    hp: &AdamW,
) -> Result<()> {
    let op = "adamw_step";
    let n = param.numel();
    let g = storage(op, grad)?;
    let p = storage_mut(op, param)?;
    let ms = storage_mut(op, m)?;
    let vs = storage_mut(op, v)?;
    let params = Params::default()
        .u(n)
        .f(hp.lr)
        .f(hp.beta1)
        .f(hp.beta2)
        .f(hp.eps)
        .f(1.0 - hp.lr * hp.weight_decay)
        .f(bias_correction(hp.beta1, hp.step))
        .f(bias_correction(hp.beta2, hp.step));
    let step = Step {
        kernel: Kernel::AdamwStep,
        params,
        bindings: vec![bind(g), bind(p), bind(ms), bind(vs)],
        groups: n.div_ceil(THREADS) as u64,
    };
    be.run(op, &[step])
}
