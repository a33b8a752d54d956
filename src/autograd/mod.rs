//! A small tape autograd over the ops. A [`Tape`] records one forward pass (values stay on
//! the device of its backend); [`Tape::backward`] walks it in reverse, calling the backward
//! ops (`lora_backward`, `matmul`, the activations' backward, the `dlogits` of
//! `softmax_xent`). Trainable parameters are not tape variables: they live in one `[K, D]`
//! arena, and each layer's backward rule writes its gradient blocks straight into the
//! matching slots of a `[K, D]` gradient arena, so the optimizer and SVGD run once over it.
//!
//! A tape lives for one step: backward consumes it, which drops its references to the
//! parameter arena before the optimizer updates that arena in place.

mod rules;

pub(crate) use rules::frozen_forward;

use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::tensor::Tensor;

/// A value recorded on a tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

/// Where one LoRA layer's adapters sit in the `[K, D]` arena: particle k's `A_k [r, I]`
/// starts at `a_offset + k·D`, its `B_k [O, r]` at `b_offset + k·D`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraSlots {
    /// Element offset of particle 0's `A [r, I]` within its arena row.
    pub a_offset: usize,
    /// Element offset of particle 0's `B [O, r]` within its arena row.
    pub b_offset: usize,
    /// The adapter rank r.
    pub rank: usize,
}

/// Where one dense layer's weight `[O, I]` and optional bias `[O]` sit in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseSlots {
    /// Element offset of the weight `[O, I]` within each arena row.
    pub w_offset: usize,
    /// Element offset of the bias `[O]`, if the layer has one.
    pub b_offset: Option<usize>,
    /// Inputs I of the layer.
    pub in_features: usize,
    /// Outputs O of the layer.
    pub out_features: usize,
}

/// The `[K, D]` parameter arena and its sizes.
#[derive(Clone, Copy, Debug)]
pub struct Arena<'a> {
    /// The `[K, D]` parameter tensor (one contiguous row per particle).
    pub params: &'a Tensor,
    /// Particles K.
    pub k: usize,
    /// Parameters per particle D (the row stride).
    pub d: usize,
}

/// A frozen linear layer (`weight [O, I]`, optional `bias [O]`) adapted by LoRA.
#[derive(Clone, Copy, Debug)]
pub struct FrozenRef<'a> {
    /// `W0 [O, I]`.
    pub weight: &'a Tensor,
    /// `[O]`, if the layer has one.
    pub bias: Option<&'a Tensor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// The elementwise activation between layers.
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// GELU, tanh form (PyTorch `approximate="tanh"`).
    Gelu,
}

enum Rule {
    Leaf,
    Lora {
        x: Var,
        /// `x`'s value as the product took it (the tape's dtype).
        x_in: Tensor,
        weight: Tensor,
        params: Tensor,
        slots: LoraSlots,
        k: usize,
        d: usize,
        scale: f32,
        h: Tensor,
    },
    Dense {
        x: Var,
        params: Tensor,
        slots: DenseSlots,
        k: usize,
        d: usize,
    },
    Act {
        x: Var,
        kind: Activation,
    },
    Frozen {
        x: Var,
        weight: Tensor,
    },
}

struct Node {
    value: Tensor,
    rule: Rule,
    /// Whether a gradient must flow into this value (it depends on parameters or on an
    /// input that asked for its gradient).
    needs_grad: bool,
}

/// The terminal of a tape: the mean cross-entropy per particle and `∂(Σ_k loss_k)/∂logits`.
pub struct Loss {
    logits: Var,
    dlogits: Tensor,
    /// `[K]` (shared labels) or `[1]` (the mean over particles, per-particle labels).
    pub value: Tensor,
    k: usize,
}

impl Loss {
    /// The mean over particles of the loss (one small download).
    pub fn mean(&self, be: &dyn Backend) -> Result<f32> {
        let v = be.download(&self.value)?;
        Ok(v.iter().sum::<f32>() / v.len() as f32)
    }

    /// The objective backward differentiates, `Σ_k loss_k` (for gradient checks).
    pub fn total(&self, be: &dyn Backend) -> Result<f32> {
        Ok(self.mean(be)? * self.k as f32)
    }
}

/// Gradients of the tape's variables (only those that needed one).
pub struct Grads(Vec<Option<Tensor>>);

impl Grads {
    /// The gradient of `v`, or `None` if it needed none (it did not depend on a parameter
    /// or on an input that asked for its gradient).
    pub fn get(&self, v: Var) -> Option<&Tensor> {
        self.0.get(v.0).and_then(|g| g.as_ref())
    }
}

/// One forward pass of a network on one backend, recorded for [`Tape::backward`].
/// Build values with [`Tape::input`], [`Tape::lora`], [`Tape::dense`], [`Tape::frozen`],
/// [`Tape::activation`]; end with [`Tape::softmax_xent`].
pub struct Tape<'be> {
    be: &'be dyn Backend,
    nodes: Vec<Node>,
    dtype: DType,
    /// 16-bit copies of parameter arenas made by this tape (source, copy), one per arena.
    half_params: Vec<(Tensor, Tensor)>,
}

impl<'be> Tape<'be> {
    /// An empty tape whose ops run on `be`, in f32.
    pub fn new(be: &'be dyn Backend) -> Self {
        Self::with_dtype(be, DType::F32)
    }

    /// An empty tape whose frozen-weight products (LoRA layers and frozen layers) take
    /// `dtype` operands, as PyTorch's autocast does: the layer input, `W0` and the adapters
    /// are converted (`ops::cast`; the f32 parameter arena stays the master copy, converted
    /// once per tape), the products accumulate in f32 and every output, gradient and the
    /// optimizer stay f32. A LoRA layer's backward takes the same 16-bit operands and, as
    /// autocast's backward, the upstream gradient and `h` in that type too (the contract of
    /// `ops::lora_backward` with 16-bit `dy`: `g = dy B` rounded once, a shared x's dy sum
    /// rounded once); a frozen layer's backward takes the f32 upstream gradient. Dense (fully
    /// trained) layers stay f32.
    pub fn with_dtype(be: &'be dyn Backend, dtype: DType) -> Self {
        Tape {
            be,
            nodes: Vec::new(),
            dtype,
            half_params: Vec::new(),
        }
    }

    /// The dtype of the frozen-weight products ([`Tape::with_dtype`]).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `t` in the tape's product dtype.
    fn in_dtype(&self, t: &Tensor) -> Result<Tensor> {
        crate::ops::cast(self.be, t, self.dtype)
    }

    /// The arena's parameters in the tape's product dtype, converted once per tape.
    fn params_in_dtype(&mut self, params: &Tensor) -> Result<Tensor> {
        if params.dtype() == self.dtype {
            return Ok(params.clone());
        }
        if let Some((_, c)) = self
            .half_params
            .iter()
            .find(|(s, _)| s.same_storage(params))
        {
            return Ok(c.clone());
        }
        let c = self.in_dtype(params)?;
        self.half_params.push((params.clone(), c.clone()));
        Ok(c)
    }

    /// The backend the tape's ops run on.
    pub fn backend(&self) -> &'be dyn Backend {
        self.be
    }

    /// The recorded value of `v`, which must come from this tape.
    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    fn push(&mut self, value: Tensor, rule: Rule, needs_grad: bool) -> Var {
        self.nodes.push(Node {
            value,
            rule,
            needs_grad,
        });
        Var(self.nodes.len() - 1)
    }

    /// An input. `requires_grad` asks backward for its gradient (gradient checks).
    pub fn input(&mut self, t: Tensor, requires_grad: bool) -> Var {
        self.push(t, Rule::Leaf, requires_grad)
    }

    /// `y_k = x_k W0ᵀ + bias + s · (x_k A_kᵀ) B_kᵀ` for every particle; `x` is `[M, I]`
    /// (shared) or `[K, M, I]`, `y` is `[K, M, O]`.
    pub fn lora(
        &mut self,
        x: Var,
        base: FrozenRef,
        arena: Arena,
        slots: LoraSlots,
        scale: f32,
    ) -> Result<Var> {
        let x_in = self.in_dtype(self.value(x))?;
        let weight = self.in_dtype(base.weight)?;
        let params = self.params_in_dtype(arena.params)?;
        let base = FrozenRef {
            weight: &weight,
            bias: base.bias,
        };
        let arena = Arena {
            params: &params,
            ..arena
        };
        let out = rules::lora_forward(self.be, &x_in, base, arena, slots, scale)?;
        let rule = Rule::Lora {
            x,
            x_in,
            weight: weight.clone(),
            params: params.clone(),
            slots,
            k: arena.k,
            d: arena.d,
            scale,
            // kept in the product dtype: the backward's products all take 16-bit operands
            h: self.in_dtype(&out.h)?,
        };
        Ok(self.push(out.y, rule, true))
    }

    /// A trainable dense layer per particle: `y_k = x_k W_kᵀ + 1 b_kᵀ`, weights in the arena.
    pub fn dense(&mut self, x: Var, arena: Arena, slots: DenseSlots) -> Result<Var> {
        let y = rules::dense_forward(self.be, self.value(x), arena, slots)?;
        let rule = Rule::Dense {
            x,
            params: arena.params.clone(),
            slots,
            k: arena.k,
            d: arena.d,
        };
        Ok(self.push(y, rule, true))
    }

    /// A frozen linear layer without adapters: `y = x W0ᵀ + bias` over the last axis, `x`
    /// `[M, I]` or `[K, M, I]` (the output keeps the leading axes). No parameter gradient.
    pub fn frozen(&mut self, x: Var, base: FrozenRef) -> Result<Var> {
        let x_in = self.in_dtype(self.value(x))?;
        let weight = self.in_dtype(base.weight)?;
        let frozen = FrozenRef {
            weight: &weight,
            bias: base.bias,
        };
        let y = rules::frozen_forward(self.be, &x_in, frozen)?;
        let needs = self.nodes[x.0].needs_grad;
        let rule = Rule::Frozen { x, weight };
        Ok(self.push(y, rule, needs))
    }

    /// `relu` or `gelu` of `x`, elementwise.
    pub fn activation(&mut self, x: Var, kind: Activation) -> Result<Var> {
        let xv = self.value(x);
        let y = match kind {
            Activation::Relu => crate::ops::relu_forward(self.be, xv)?,
            Activation::Gelu => crate::ops::gelu_forward(self.be, xv)?,
        };
        let needs = self.nodes[x.0].needs_grad;
        Ok(self.push(y, Rule::Act { x, kind }, needs))
    }

    /// Mean softmax cross-entropy of `logits [K, M, C]`. `labels` has M entries (shared by
    /// all particles) or K·M (particle k's labels at `k·M..`, for per-particle batches).
    /// The objective whose gradient backward computes is `Σ_k loss_k`.
    pub fn softmax_xent(&self, logits: Var, labels: &[u32]) -> Result<Loss> {
        let lv = self.value(logits);
        let k = lv.shape().first().copied().unwrap_or(1);
        let (value, dlogits) = rules::xent(self.be, lv, labels)?;
        Ok(Loss {
            logits,
            dlogits,
            value,
            k,
        })
    }

    /// Reverse pass. Parameter gradients go into `grad` (the `[K, D]` gradient arena; each
    /// layer overwrites its own slots); gradients of inputs that asked for one are returned.
    pub fn backward(self, loss: Loss, grad: &mut Tensor) -> Result<Grads> {
        let be = self.be;
        let n = self.nodes.len();
        let mut grads: Vec<Option<Tensor>> = vec![None; n];
        grads[loss.logits.0] = Some(loss.dlogits);
        for idx in (0..n).rev() {
            let node = &self.nodes[idx];
            let Some(dy) = grads[idx].clone() else {
                continue;
            };
            let (x, dx) = match &node.rule {
                Rule::Leaf => continue,
                Rule::Lora {
                    x,
                    x_in,
                    weight,
                    params,
                    slots,
                    k,
                    d,
                    scale,
                    h,
                } => {
                    let arena = Arena {
                        params,
                        k: *k,
                        d: *d,
                    };
                    let need_dx = self.nodes[x.0].needs_grad;
                    let dx = rules::lora_backward(
                        be, &dy, x_in, weight, arena, *slots, *scale, h, need_dx, grad,
                    )?;
                    (*x, dx)
                }
                Rule::Dense {
                    x,
                    params,
                    slots,
                    k,
                    d,
                } => {
                    let arena = Arena {
                        params,
                        k: *k,
                        d: *d,
                    };
                    let need_dx = self.nodes[x.0].needs_grad;
                    let xv = &self.nodes[x.0].value;
                    let dx = rules::dense_backward(be, &dy, xv, arena, *slots, need_dx, grad)?;
                    (*x, dx)
                }
                Rule::Act { x, kind } => {
                    if !self.nodes[x.0].needs_grad {
                        continue;
                    }
                    let xv = &self.nodes[x.0].value;
                    let dx = match kind {
                        Activation::Relu => crate::ops::relu_backward(be, xv, &dy)?,
                        Activation::Gelu => crate::ops::gelu_backward(be, xv, &dy)?,
                    };
                    (*x, Some(dx))
                }
                Rule::Frozen { x, weight } => {
                    if !self.nodes[x.0].needs_grad {
                        continue;
                    }
                    // dy is f32: the product takes the 16-bit weight's exact values.
                    let w = crate::ops::cast(be, weight, DType::F32)?;
                    (*x, Some(rules::frozen_backward(be, &dy, &w)?))
                }
            };
            if let Some(dx) = dx {
                let slot = &mut grads[x.0];
                *slot = Some(match slot.take() {
                    None => dx,
                    Some(prev) => crate::ops::axpby(be, 1.0, &prev, 1.0, &dx)?,
                });
            }
            // Free what is no longer needed as soon as possible.
            grads[idx] = None;
        }
        // Keep only the gradients of inputs that asked for them.
        for (i, node) in self.nodes.iter().enumerate() {
            if !matches!(node.rule, Rule::Leaf) || !node.needs_grad {
                grads[i] = None;
            }
        }
        Ok(Grads(grads))
    }
}

/// Check that a host value is finite, naming where it came from.
pub fn expect_finite(what: &str, v: f32) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(BellaError::NonFinite(format!("{what} is {v}")))
    }
}
