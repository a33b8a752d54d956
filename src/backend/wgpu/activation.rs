//! Host side of `shaders/activation.wgsl`: elementwise maps of one or two tensors.

use super::kernels::{Kernel, Params, Step};
use super::{bind, storage, tensor, WgpuBackend};
use crate::error::Result;
use crate::tensor::Tensor;

const THREADS: usize = 256;

pub fn unary(be: &WgpuBackend, kernel: Kernel, op: &str, x: &Tensor) -> Result<Tensor> {
    let n = x.numel();
    let xs = storage(op, x)?;
    let out = be.alloc(n)?;
    let step = Step {
        kernel,
        params: Params::named()
            .set_u("n", n)
            .set_f("alpha", 1.0)
            .set_f("beta", 1.0),
        bindings: vec![bind(xs), bind(&out)],
        groups: n.div_ceil(THREADS) as u64,
    };
    be.run(op, &[step])?;
    tensor(x.shape(), out)
}

pub fn binary(
    be: &WgpuBackend,
    kernel: Kernel,
    op: &str,
    x: &Tensor,
    y: &Tensor,
    alpha: f32,
    beta: f32,
) -> Result<Tensor> {
    let n = x.numel();
    let xs = storage(op, x)?;
    let ys = storage(op, y)?;
    let out = be.alloc(n)?;
    let step = Step {
        kernel,
        params: Params::named()
            .set_u("n", n)
            .set_f("alpha", alpha)
            .set_f("beta", beta),
        bindings: vec![bind(xs), bind(ys), bind(&out)],
        groups: n.div_ceil(THREADS) as u64,
    };
    be.run(op, &[step])?;
    tensor(x.shape(), out)
}
