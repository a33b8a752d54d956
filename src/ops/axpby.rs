//! `axpby`, a utility beside DESIGN.md's ops: `out = alpha · x + beta · y`, elementwise,
//! same shapes. Training uses it for SVGD scores and broadcast biases.

use super::{expect_device, expect_finite, expect_nonempty, expect_shape};
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::Tensor;

pub fn axpby(be: &dyn Backend, alpha: f32, x: &Tensor, beta: f32, y: &Tensor) -> Result<Tensor> {
    expect_nonempty("axpby", "x", x)?;
    expect_shape("axpby", "y", y, x.shape())?;
    expect_device("axpby", be, &[("x", x), ("y", y)])?;
    expect_finite("axpby", "alpha", alpha)?;
    expect_finite("axpby", "beta", beta)?;
    be.axpby(alpha, x, beta, y)
}
