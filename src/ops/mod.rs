//! The ops of DESIGN.md, the library's entry point: one function per op, whose doc is the
//! op's contract (shapes, what is computed, errors) with a worked example on the CPU
//! backend. Each checks its arguments and dispatches to a [`Backend`], so backends only ever
//! see valid input; bad input is a [`BellaError`], never a panic. Every tensor must live on
//! the backend passed in (make them with [`Backend::upload`] / [`Backend::zeros`]).
//!
//! The `*_into` forms ([`lora_backward_into`], [`matmul_into`]) take strided views and write
//! into an existing tensor (the `[K, D]` arenas of training); [`named`] runs an op on named
//! host tensors (`bella op`, `bella doctor`).

mod activation;
mod adamw_step;
mod axpby;
mod cast;
mod ensemble_stats;
mod lora_backward;
mod lora_forward;
mod matmul;
pub mod named;
mod pairwise_sqdist;
mod rbf_kernel;
mod softmax_xent;
mod svgd_direction;
mod svgd_step;

pub use crate::backend::median_bandwidth;
pub use activation::{gelu_backward, gelu_forward, relu_backward, relu_forward};
pub use adamw_step::adamw_step;
pub use axpby::axpby;
pub use cast::cast;
pub use ensemble_stats::ensemble_stats;
pub use lora_backward::{lora_backward, lora_backward_into, LoraGrads};
pub use lora_forward::{lora_forward, Adapter, LoraForwardOut};
pub use matmul::{matmul, matmul_into, MatmulOperand};
pub use pairwise_sqdist::pairwise_sqdist;
pub use rbf_kernel::rbf_kernel;
pub use softmax_xent::softmax_xent;
pub use svgd_direction::svgd_direction;
pub use svgd_step::svgd_step;

use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

/// Every op name, in DESIGN.md order (with `svgd_step`, direction and AdamW as one op,
/// after them), then the utility `axpby` (what `bella op` and `bella doctor` accept).
pub const OP_NAMES: [&str; 15] = [
    "lora_forward",
    "lora_backward",
    "matmul",
    "pairwise_sqdist",
    "rbf_kernel",
    "svgd_direction",
    "adamw_step",
    "svgd_step",
    "relu_forward",
    "relu_backward",
    "gelu_forward",
    "gelu_backward",
    "softmax_xent",
    "ensemble_stats",
    "axpby",
];

/// `t` must have exactly this shape.
pub(crate) fn expect_shape(op: &str, name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape() != want {
        return Err(BellaError::shape(op, name, format!("{want:?}"), t.shape()));
    }
    Ok(())
}

/// `t` must have this rank; returns its shape.
pub(crate) fn expect_rank<'a>(
    op: &str,
    name: &str,
    t: &'a Tensor,
    rank: usize,
) -> Result<&'a [usize]> {
    if t.rank() != rank {
        return Err(BellaError::shape(
            op,
            name,
            format!("a {rank}-D tensor"),
            t.shape(),
        ));
    }
    Ok(t.shape())
}

/// Sizes must be non-zero: empty tensors have no meaning for these ops.
pub(crate) fn expect_nonempty(op: &str, name: &str, t: &Tensor) -> Result<()> {
    if t.numel() == 0 {
        return Err(BellaError::shape(op, name, "a non-empty tensor", t.shape()));
    }
    Ok(())
}

/// Every tensor must live on the backend that runs the op.
pub(crate) fn expect_device(op: &str, be: &dyn Backend, ts: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in ts {
        if t.device() != be.kind() {
            return Err(BellaError::invalid(format!(
                "{op}: tensor `{name}` is on {}, the op runs on {}",
                t.device(),
                be.kind()
            )));
        }
    }
    Ok(())
}

/// Scalars must be finite.
pub(crate) fn expect_finite(op: &str, name: &str, v: f32) -> Result<()> {
    if !v.is_finite() {
        return Err(BellaError::invalid(format!(
            "{op}: `{name}` must be finite, got {v}"
        )));
    }
    Ok(())
}
