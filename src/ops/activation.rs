//! Activations (DESIGN.md op 8), elementwise on any shape:
//! `relu(x) = max(x, 0)`, `relu'` = `1[x > 0]`;
//! `gelu(x) = 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))` (PyTorch `approximate="tanh"`).
//! Backward ops take `x` and `dy` and return `dx = dy · f'(x)`.

use super::{expect_device, expect_nonempty, expect_shape};
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::Tensor;

fn unary(op: &str, be: &dyn Backend, x: &Tensor) -> Result<()> {
    expect_nonempty(op, "x", x)?;
    expect_device(op, be, &[("x", x)])
}

fn binary(op: &str, be: &dyn Backend, x: &Tensor, dy: &Tensor) -> Result<()> {
    unary(op, be, x)?;
    expect_shape(op, "dy", dy, x.shape())?;
    expect_device(op, be, &[("dy", dy)])
}

pub fn relu_forward(be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
    unary("relu_forward", be, x)?;
    be.relu_forward(x)
}

pub fn relu_backward(be: &dyn Backend, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    binary("relu_backward", be, x, dy)?;
    be.relu_backward(x, dy)
}

pub fn gelu_forward(be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
    unary("gelu_forward", be, x)?;
    be.gelu_forward(x)
}

pub fn gelu_backward(be: &dyn Backend, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    binary("gelu_backward", be, x, dy)?;
    be.gelu_backward(x, dy)
}
