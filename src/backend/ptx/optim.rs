//! `adamw_step` (kernels/optim.ptx): one AdamW step in place over the whole arena; each
//! thread owns groups of 4 elements (the grid of `activation.rs`).

use super::activation::grid;
use super::driver::{Driver, Param};
use super::modules::{u32_of, OPTIM};
use super::{ptr, PtxBackend};
use crate::backend::AdamW;
use crate::error::Result;
use crate::tensor::Tensor;

/// `adamw_step` on checked tensors: `param`, `m`, `v` updated in place with gradient `grad`.
pub fn adamw<D: Driver>(
    be: &PtxBackend<D>,
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    hp: &AdamW,
) -> Result<()> {
    let n = param.numel();
    if n == 0 {
        return Ok(());
    }
    let g = be.buf(grad)?;
    let p = be.buf_mut(param)?;
    let mb = be.buf_mut(m)?;
    let vb = be.buf_mut(v)?;
    let mut params = vec![
        ("p_param", ptr(p)),
        ("p_grad", ptr(g)),
        ("p_m", ptr(mb)),
        ("p_v", ptr(vb)),
        ("p_n", Param::U32(u32_of("adamw_step", "n", n)?)),
    ];
    params.extend(adamw_params(hp));
    be.launch_named(OPTIM, "adamw_step", grid(be, n), params)
}

/// The names of AdamW's scalar parameters in `adamw_step` and `svgd_direction`.
pub const ADAMW_PARAMS: [&str; 7] = [
    "p_lr", "p_beta1", "p_beta2", "p_eps", "p_decay", "p_bc1", "p_bc2",
];

/// AdamW's scalar parameters, named as `adamw_step` and the fused SVGD step take them:
/// `lr, beta1, beta2, eps, decay = 1 − lr·wd, bc1 = 1 − β1ᵗ, bc2 = 1 − β2ᵗ` (the
/// corrections in f64, as the CPU reference).
pub fn adamw_params<'a, B>(hp: &AdamW) -> [(&'static str, Param<'a, B>); 7] {
    let (bc1, bc2) = hp.bias_corrections();
    let decay = 1.0 - hp.lr * hp.weight_decay;
    let values = [hp.lr, hp.beta1, hp.beta2, hp.eps, decay, bc1, bc2];
    std::array::from_fn(|i| (ADAMW_PARAMS[i], Param::F32(values[i])))
}
