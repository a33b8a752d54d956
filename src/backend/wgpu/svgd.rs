//! Host side of `shaders/svgd.wgsl`. The RBF bandwidth's median heuristic runs here on the
//! host, over the K×K distances downloaded from the device (K is small).

use super::kernels::{Kernel, Params, Step};
use super::{bind, storage, tensor, WgpuBackend};
use crate::error::Result;
use crate::tensor::Tensor;

const THREADS: usize = 256;

fn sqdist_step<'a>(
    theta: &'a super::WgpuStorage,
    out: &'a super::WgpuStorage,
    k: usize,
    d: usize,
) -> Step<'a> {
    Step {
        kernel: Kernel::PairwiseSqdist,
        params: Params::default().u(k).u(d),
        bindings: vec![bind(theta), bind(out)],
        groups: (k * k) as u64,
    }
}

pub fn pairwise_sqdist(be: &WgpuBackend, theta: &Tensor, k: usize, d: usize) -> Result<Tensor> {
    let op = "pairwise_sqdist";
    let th = storage(op, theta)?;
    let out = be.alloc(k * k)?;
    be.run(op, &[sqdist_step(th, &out, k, d)])?;
    tensor(&[k, k], out)
}

pub fn rbf_kernel(
    be: &WgpuBackend,
    theta: &Tensor,
    k: usize,
    d: usize,
    bandwidth: Option<f32>,
) -> Result<(Tensor, f32)> {
    let op = "rbf_kernel";
    let th = storage(op, theta)?;
    let sq = be.alloc(k * k)?;
    let kern = be.alloc(k * k)?;
    let mut steps = vec![sqdist_step(th, &sq, k, d)];
    let h = match bandwidth {
        Some(h) => h,
        None => {
            be.run(op, &steps)?;
            steps.clear();
            crate::ops::median_bandwidth(&be.read(&sq)?, k)
        }
    };
    steps.push(Step {
        kernel: Kernel::RbfFromSqdist,
        params: Params::default().u(k * k).f(h),
        bindings: vec![bind(&sq), bind(&kern)],
        groups: (k * k).div_ceil(THREADS) as u64,
    });
    be.run(op, &steps)?;
    drop(steps);
    Ok((tensor(&[k, k], kern)?, h))
}

pub fn direction(
    be: &WgpuBackend,
    theta: &Tensor,
    score: &Tensor,
    kernel: &Tensor,
    k: usize,
    d: usize,
    bandwidth: f32,
) -> Result<Tensor> {
    let op = "svgd_direction";
    let th = storage(op, theta)?;
    let sc = storage(op, score)?;
    let kn = storage(op, kernel)?;
    let phi = be.alloc(k * d)?;
    let step = Step {
        kernel: Kernel::SvgdDirection,
        params: Params::default()
            .u(k)
            .u(d)
            .f(1.0 / k as f32)
            .f(2.0 / bandwidth),
        bindings: vec![bind(th), bind(sc), bind(kn), bind(&phi)],
        groups: (k * d).div_ceil(THREADS) as u64,
    };
    be.run(op, &[step])?;
    tensor(&[k, d], phi)
}
