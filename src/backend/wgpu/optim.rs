//! Host side of `shaders/optim.wgsl`.

use super::kernels::{Kernel, Params, Step};
use super::{bind, storage, storage_mut, WgpuBackend};
use crate::backend::AdamW;
use crate::error::Result;
use crate::tensor::Tensor;

const THREADS: usize = 256;

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
    let (bc1, bc2) = hp.bias_corrections();
    let params = Params::named()
        .set_u("n", n)
        .set_f("lr", hp.lr)
        .set_f("beta1", hp.beta1)
        .set_f("beta2", hp.beta2)
        .set_f("eps", hp.eps)
        .set_f("decay", 1.0 - hp.lr * hp.weight_decay)
        .set_f("bias_correction1", bc1)
        .set_f("bias_correction2", bc2);
    let step = Step {
        kernel: Kernel::AdamwStep,
        params,
        bindings: vec![bind(g), bind(p), bind(ms), bind(vs)],
        groups: n.div_ceil(THREADS) as u64,
    };
    be.run(op, &[step])
}
