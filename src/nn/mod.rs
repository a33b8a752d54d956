//! Layers over the ops: a frozen MLP loaded from safetensors ([`load`]), K LoRA particles on
//! it whose adapters live in one `[K, D]` arena ([`lora`]), and K trainable dense copies of
//! the whole MLP for the full-ensemble baseline ([`dense`]). Both particle kinds implement
//! [`Particles`], so the trainers do not care which one they drive.

pub mod dense;
pub mod load;
pub mod lora;
pub mod model;
pub mod peft;

pub use crate::autograd::Activation;
pub use dense::DenseParticles;
pub use load::{load_model, save_model};
pub use lora::{BInit, LoraParticles};
pub use model::{FrozenMlp, HostLinear, MlpSpec};

use crate::autograd::{Tape, Var};
use crate::error::Result;
use crate::ops::named::HostTensor;
use crate::tensor::Tensor;

/// K particles whose trainable parameters are the rows of one `[K, D]` arena.
pub trait Particles {
    /// Particles K (the arena's rows).
    fn k(&self) -> usize;
    /// Parameters per particle (the arena's row length).
    fn d(&self) -> usize;
    /// Logits `[K, M, C]` for `x` (`[M, I]` shared or `[K, M, I]`).
    fn forward(&self, tape: &mut Tape, x: Var, params: &Tensor) -> Result<Var>;
    /// The arena (host copy, `K·D` values) as named tensors, one set per particle.
    fn to_named(&self, arena: &[f32]) -> Vec<(String, HostTensor)>;
    /// The inverse of [`Particles::to_named`]; errors name what is missing or mis-shaped.
    fn arena_from_named(&self, named: &crate::ops::named::Named) -> Result<Vec<f32>>;
    /// All trainable values, `K · D`.
    fn trainable_params(&self) -> usize {
        self.k() * self.d()
    }
    /// The LoRA particles behind this model, if it is one (PEFT export needs their layout).
    fn as_lora(&self) -> Option<&LoraParticles> {
        None
    }
}
