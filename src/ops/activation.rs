//! Activations (DESIGN.md op 8); the contracts are on [`relu_forward`] and the others.

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

/// `relu_forward` (DESIGN.md op 8): `y = max(x, 0)`, elementwise; `y` has `x`'s shape.
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `x` is empty;
/// [`BellaError::Invalid`](crate::BellaError::Invalid) if a tensor is on another backend;
/// [`BellaError::Device`](crate::BellaError::Device) if the output does not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
///
/// # Example
///
/// The activation family by hand: `relu(−1) = 0`, `relu'(x) = 1[x > 0]`; `gelu(0) = 0`,
/// `gelu'(0) = ½`, `gelu(1) = ½ (1 + tanh(√(2/π) · 1.044715)) ≈ 0.841192`.
///
/// ```
/// use bella::backend::cpu::CpuBackend;
/// use bella::{ops, Backend};
///
/// # fn main() -> bella::Result<()> {
/// let be = CpuBackend::new();
/// let x = be.upload(&[3], &[-1.0, 0.0, 2.0])?;
/// let dy = be.upload(&[3], &[5.0, 5.0, 5.0])?;
/// assert_eq!(be.download(&ops::relu_forward(&be, &x)?)?, vec![0.0, 0.0, 2.0]);
/// assert_eq!(be.download(&ops::relu_backward(&be, &x, &dy)?)?, vec![0.0, 0.0, 5.0]);
///
/// let x = be.upload(&[2], &[0.0, 1.0])?;
/// let y = be.download(&ops::gelu_forward(&be, &x)?)?;
/// assert!(y[0].abs() < 1e-7 && (y[1] - 0.841192).abs() < 1e-5);
/// let dy = be.upload(&[2], &[2.0, 0.0])?;
/// let dx = be.download(&ops::gelu_backward(&be, &x, &dy)?)?;
/// assert!((dx[0] - 1.0).abs() < 1e-6 && dx[1] == 0.0); // dy · gelu'(x)
///
/// // An empty tensor is an error, not a panic.
/// assert!(ops::relu_forward(&be, &be.zeros(&[0])?).is_err());
/// # Ok(())
/// # }
/// ```
pub fn relu_forward(be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
    unary("relu_forward", be, x)?;
    be.relu_forward(x)
}

/// `relu_backward` (DESIGN.md op 8): `dx = dy · 1[x > 0]`, elementwise (0 at `x = 0`);
/// `x` and `dy` have one shape, which `dx` has too. Example on [`relu_forward`].
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `x` is empty or `dy` has another shape;
/// [`BellaError::Invalid`](crate::BellaError::Invalid) if a tensor is on another backend;
/// [`BellaError::Device`](crate::BellaError::Device) if the output does not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
pub fn relu_backward(be: &dyn Backend, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    binary("relu_backward", be, x, dy)?;
    be.relu_backward(x, dy)
}

/// `gelu_forward` (DESIGN.md op 8), tanh form as PyTorch `approximate="tanh"`:
/// `y = 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))`, elementwise; `y` has `x`'s shape.
/// Example on [`relu_forward`].
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `x` is empty;
/// [`BellaError::Invalid`](crate::BellaError::Invalid) if a tensor is on another backend;
/// [`BellaError::Device`](crate::BellaError::Device) if the output does not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
pub fn gelu_forward(be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
    unary("gelu_forward", be, x)?;
    be.gelu_forward(x)
}

/// `gelu_backward` (DESIGN.md op 8): `dx = dy · gelu'(x)`, elementwise, the derivative of
/// [`gelu_forward`]'s tanh form; `x` and `dy` have one shape, which `dx` has too.
/// Example on [`relu_forward`].
///
/// # Errors
/// [`BellaError::Shape`](crate::BellaError::Shape) if `x` is empty or `dy` has another shape;
/// [`BellaError::Invalid`](crate::BellaError::Invalid) if a tensor is on another backend;
/// [`BellaError::Device`](crate::BellaError::Device) if the output does not fit the backend's
/// [memory budget](crate::backend::MemoryBudget).
pub fn gelu_backward(be: &dyn Backend, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    binary("gelu_backward", be, x, dy)?;
    be.gelu_backward(x, dy)
}
