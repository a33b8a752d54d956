//! `lora_forward` (DESIGN.md op 1).
//!
//! In `x` (`[M, I]` shared, or `[K, M, I]`), `weight [O, I]`, optional `bias [O]`, adapters
//! `A_k [r, I]`, `B_k [O, r]`, `scale s`. Out `y [K, M, O]`, `h [K, M, r]`:
//! `h_k = x_k A_kᵀ`, `y_k = x_k Wᵀ + bias + s · h_k B_kᵀ`.
//! With a shared `x` the base product `x Wᵀ` is computed once for all K particles.

use super::{expect_device, expect_finite, expect_nonempty, expect_rank, expect_shape};
use crate::backend::{Backend, LoraDims, LoraForwardArgs};
use crate::error::{BellaError, Result};
use crate::tensor::{Strided, Tensor};

const OP: &str = "lora_forward";

/// K adapters `(A_k, B_k)` of rank r: blocks of `[r, I]` and `[O, r]` inside one or two
/// tensors (the `[K, D]` parameter arena in training; `[K,r,I]`/`[K,O,r]` tensors for `bella op`).
#[derive(Clone, Copy, Debug)]
pub struct Adapter<'a> {
    pub a: Strided<'a>,
    pub b: Strided<'a>,
    pub k: usize,
    pub r: usize,
}

impl<'a> Adapter<'a> {
    /// From `lora_a [K, r, I]` and `lora_b [K, O, r]` tensors.
    pub fn from_tensors(op: &str, lora_a: &'a Tensor, lora_b: &'a Tensor) -> Result<Self> {
        let sa = expect_rank(op, "lora_a", lora_a, 3)?;
        let sb = expect_rank(op, "lora_b", lora_b, 3)?;
        let (k, r, i) = (sa[0], sa[1], sa[2]);
        let o = sb[1];
        expect_shape(op, "lora_b", lora_b, &[k, o, r])?;
        Ok(Adapter {
            a: Strided::contiguous(lora_a, r * i, false),
            b: Strided::contiguous(lora_b, o * r, false),
            k,
            r,
        })
    }

    /// Check the adapter against a layer of `o × i` and return nothing or a clear error.
    pub(crate) fn check(&self, op: &str, o: usize, i: usize) -> Result<()> {
        if self.k == 0 || self.r == 0 {
            return Err(BellaError::invalid(format!(
                "{op}: need K ≥ 1 particles and rank r ≥ 1 (got K={}, r={})",
                self.k, self.r
            )));
        }
        if !self.a.fits(self.k, self.r * i) {
            return Err(BellaError::invalid(format!(
                "{op}: lora_a blocks of [{}, {i}] for K={} do not fit in a tensor of shape {:?}",
                self.r,
                self.k,
                self.a.tensor.shape()
            )));
        }
        if !self.b.fits(self.k, o * self.r) {
            return Err(BellaError::invalid(format!(
                "{op}: lora_b blocks of [{o}, {}] for K={} do not fit in a tensor of shape {:?}",
                self.r,
                self.k,
                self.b.tensor.shape()
            )));
        }
        Ok(())
    }
}

/// Layer sizes from `x`, `weight` and the adapter, checked against each other.
pub(crate) fn layer_dims(op: &str, x: &Tensor, weight: &Tensor, ad: &Adapter) -> Result<LoraDims> {
    let w = expect_rank(op, "weight", weight, 2)?;
    let (o, i) = (w[0], w[1]);
    expect_nonempty(op, "weight", weight)?;
    let (m, x_shared) = match x.rank() {
        2 => {
            expect_shape(op, "x", x, &[x.shape()[0], i])?;
            (x.shape()[0], true)
        }
        3 => {
            expect_shape(op, "x", x, &[ad.k, x.shape()[1], i])?;
            (x.shape()[1], false)
        }
        _ => {
            return Err(BellaError::shape(
                op,
                "x",
                format!("[M, {i}] or [{}, M, {i}]", ad.k),
                x.shape(),
            ))
        }
    };
    expect_nonempty(op, "x", x)?;
    ad.check(op, o, i)?;
    Ok(LoraDims {
        k: ad.k,
        m,
        i,
        o,
        r: ad.r,
        x_shared,
    })
}

#[derive(Debug)]
pub struct LoraForwardOut {
    pub y: Tensor,
    pub h: Tensor,
}

pub fn lora_forward(
    be: &dyn Backend,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    adapter: &Adapter,
    scale: f32,
) -> Result<LoraForwardOut> {
    let dims = layer_dims(OP, x, weight, adapter)?;
    if let Some(b) = bias {
        expect_shape(OP, "bias", b, &[dims.o])?;
        expect_device(OP, be, &[("bias", b)])?;
    }
    expect_finite(OP, "scale", scale)?;
    expect_device(
        OP,
        be,
        &[
            ("x", x),
            ("weight", weight),
            ("lora_a", adapter.a.tensor),
            ("lora_b", adapter.b.tensor),
        ],
    )?;
    let (y, h) = be.lora_forward(&LoraForwardArgs {
        dims,
        x,
        weight,
        bias,
        a: adapter.a,
        b: adapter.b,
        scale,
    })?;
    Ok(LoraForwardOut { y, h })
}
