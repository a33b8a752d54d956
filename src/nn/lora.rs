//! K LoRA particles on a frozen MLP: every linear layer l gets `A_k [r, I_l]` and
//! `B_k [O_l, r]` per particle, all in one `[K, D]` arena (particle k's row holds each
//! layer's A then B, layer by layer), and `y = x W0ᵀ + b + (α/r) · x Aᵀ Bᵀ`.
//!
//! Initialisation: `A_k` uniform in `±1/√I` (PEFT's Kaiming-uniform with `a = √5`), drawn
//! from particle k's own seed, so particles differ from the start. `B` is zero (PEFT's
//! choice: every particle starts as the base) or, with [`BInit::Small`], Gaussian with
//! standard deviation [`SMALL_B_STD`], which also spreads the particles' functions.

use super::model::{FrozenMlp, HostLinear};
use super::Particles;
use crate::autograd::{Arena, FrozenRef, LoraSlots, Tape, Var};
use crate::error::{BellaError, Result};
use crate::ops::named::{HostTensor, Named};
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Standard deviation of `B` under `--b-init small`.
pub const SMALL_B_STD: f32 = 0.02;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// How the LoRA `B` factors start (`A` starts random, as PEFT's Kaiming-uniform).
pub enum BInit {
    /// `B = 0`, as PEFT: every particle starts exactly at the base model.
    Zero,
    /// `B ~ N(0, σ²)` with σ = [`SMALL_B_STD`], so the particles start apart.
    Small,
}

impl BInit {
    /// The `--b-init` spelling: `zero` or `small`.
    pub fn name(self) -> &'static str {
        match self {
            BInit::Zero => "zero",
            BInit::Small => "small",
        }
    }
    /// Parse `zero` or `small`; anything else is [`BellaError::Invalid`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "zero" => Ok(BInit::Zero),
            "small" => Ok(BInit::Small),
            _ => Err(BellaError::invalid(format!(
                "--b-init must be `zero` or `small`, got `{s}`"
            ))),
        }
    }
}

/// A generator for particle `k` of a run seeded with `seed`; `stream` separates uses.
pub fn particle_rng(seed: u64, stream: u64, k: usize) -> Rng {
    Rng::new(
        seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)
            ^ (k as u64 + 1).wrapping_mul(0x9FB2_1C65_1E98_DF25),
    )
}

/// K LoRA particles on one frozen base: every adapted layer's `A [r, I]` then `B [O, r]`,
/// per particle one `[K, D]` arena row.
pub struct LoraParticles {
    /// The frozen MLP, shared.
    pub base: Arc<FrozenMlp>,
    /// Particles K.
    pub k: usize,
    /// Adapter rank r (the same on every adapted layer).
    pub rank: usize,
    /// LoRA alpha: the scale is `alpha / rank`.
    pub alpha: f32,
    /// `α / r`.
    pub scale: f32,
    /// Per layer of the base: where its adapters sit in the arena, `None` for a layer that
    /// stays frozen (not among the target modules).
    pub slots: Vec<Option<LoraSlots>>,
    d: usize,
}

/// One particle's adapters on one layer, as views of an arena row.
pub struct LayerAdapter<'a> {
    /// The layer (its name, `in_features`, `out_features`).
    pub layer: &'a HostLinear,
    /// `A [r, I]`, row-major.
    pub a: &'a [f32],
    /// `B [O, r]`, row-major.
    pub b: &'a [f32],
}

impl LoraParticles {
    /// K particles with rank-`rank` adapters on every layer of `base`.
    pub fn new(base: Arc<FrozenMlp>, k: usize, rank: usize, alpha: f32) -> Result<Self> {
        Self::with_targets(base, k, rank, alpha, &[])
    }

    /// K particles with adapters on the layers named in `targets` (the base file's module
    /// names, e.g. `0`, `layers.2`); empty: every layer. An unknown name is an error that
    /// lists the layers there are.
    pub fn with_targets(
        base: Arc<FrozenMlp>,
        k: usize,
        rank: usize,
        alpha: f32,
        targets: &[String],
    ) -> Result<Self> {
        if k == 0 || rank == 0 {
            return Err(BellaError::invalid(format!(
                "need particles ≥ 1 and rank ≥ 1 (got {k}, {rank})"
            )));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(BellaError::invalid(format!(
                "LoRA alpha must be positive and finite, got {alpha}"
            )));
        }
        let layers = &base.spec.layers;
        if let Some(t) = targets
            .iter()
            .find(|t| !layers.iter().any(|l| &l.name == *t))
        {
            let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
            return Err(BellaError::invalid(format!(
                "target module `{t}` is not a layer of the model (its layers: {})",
                names.join(", ")
            )));
        }
        let mut slots = Vec::new();
        let mut d = 0;
        for l in layers {
            if !targets.is_empty() && !targets.contains(&l.name) {
                slots.push(None);
                continue;
            }
            let a_offset = d;
            d += rank * l.in_features;
            let b_offset = d;
            d += l.out_features * rank;
            slots.push(Some(LoraSlots {
                a_offset,
                b_offset,
                rank,
            }));
        }
        Ok(LoraParticles {
            base,
            k,
            rank,
            alpha,
            scale: alpha / rank as f32,
            slots,
            d,
        })
    }

    /// The names of the adapted layers, in layer order.
    pub fn targets(&self) -> Vec<String> {
        self.adapted().map(|(l, _)| l.name.clone()).collect()
    }

    /// The adapted layers and their slots, in layer order.
    fn adapted(&self) -> impl Iterator<Item = (&HostLinear, LoraSlots)> {
        self.base
            .spec
            .layers
            .iter()
            .zip(&self.slots)
            .filter_map(|(l, s)| s.map(|s| (l, s)))
    }

    /// Particle `k`'s adapters in `arena` (host, `K·D` values), layer by layer.
    pub fn particle_adapters<'a>(&'a self, arena: &'a [f32], k: usize) -> Vec<LayerAdapter<'a>> {
        let row = &arena[k * self.d..(k + 1) * self.d];
        self.adapted()
            .map(|(l, s)| LayerAdapter {
                layer: l,
                a: &row[s.a_offset..s.a_offset + self.rank * l.in_features],
                b: &row[s.b_offset..s.b_offset + l.out_features * self.rank],
            })
            .collect()
    }

    /// The initial arena (host, `K·D` values).
    pub fn init(&self, seed: u64, b_init: BInit) -> Vec<f32> {
        let mut arena = vec![0.0; self.k * self.d];
        for (k, row) in arena.chunks_mut(self.d).enumerate() {
            let mut rng = particle_rng(seed, 1, k);
            for (l, s) in self.adapted() {
                let bound = 1.0 / (l.in_features as f32).sqrt();
                let a = &mut row[s.a_offset..s.a_offset + self.rank * l.in_features];
                a.iter_mut()
                    .for_each(|v| *v = rng.uniform() * 2.0 * bound - bound);
                if b_init == BInit::Small {
                    let b = &mut row[s.b_offset..s.b_offset + l.out_features * self.rank];
                    b.iter_mut().for_each(|v| *v = SMALL_B_STD * rng.normal());
                }
            }
        }
        arena
    }
}

impl Particles for LoraParticles {
    fn k(&self) -> usize {
        self.k
    }
    fn d(&self) -> usize {
        self.d
    }
    fn forward(&self, tape: &mut Tape, x: Var, params: &Tensor) -> Result<Var> {
        let arena = Arena {
            params,
            k: self.k,
            d: self.d,
        };
        let n = self.slots.len();
        let mut h = x;
        for (l, slots) in self.slots.iter().enumerate() {
            let weight = self.base.weight_in(tape.backend(), l, tape.dtype())?;
            let base = FrozenRef {
                weight: &weight,
                bias: self.base.biases[l].as_ref(),
            };
            h = match slots {
                Some(slots) => tape.lora(h, base, arena, *slots, self.scale)?,
                None => tape.frozen(h, base)?,
            };
            if l + 1 < n {
                h = tape.activation(h, self.base.spec.activation)?;
            }
        }
        Ok(h)
    }
    /// PEFT-style names: `particles.{k}.{layer}.lora_A.weight` `[r, I]` and
    /// `particles.{k}.{layer}.lora_B.weight` `[O, r]`.
    fn to_named(&self, arena: &[f32]) -> Vec<(String, HostTensor)> {
        let mut out = Vec::new();
        for (k, row) in arena.chunks(self.d).enumerate() {
            for (l, s) in self.adapted() {
                let (ri, or) = (self.rank * l.in_features, l.out_features * self.rank);
                out.push((
                    format!("particles.{k}.{}.lora_A.weight", l.name),
                    HostTensor::float(
                        &[self.rank, l.in_features],
                        row[s.a_offset..s.a_offset + ri].to_vec(),
                    ),
                ));
                out.push((
                    format!("particles.{k}.{}.lora_B.weight", l.name),
                    HostTensor::float(
                        &[l.out_features, self.rank],
                        row[s.b_offset..s.b_offset + or].to_vec(),
                    ),
                ));
            }
        }
        out
    }
    fn as_lora(&self) -> Option<&LoraParticles> {
        Some(self)
    }
    fn arena_from_named(&self, named: &Named) -> Result<Vec<f32>> {
        let mut arena = vec![0.0; self.k * self.d];
        for (k, row) in arena.chunks_mut(self.d).enumerate() {
            for (l, s) in self.adapted() {
                let a = format!("particles.{k}.{}.lora_A.weight", l.name);
                let b = format!("particles.{k}.{}.lora_B.weight", l.name);
                let ri = self.rank * l.in_features;
                let or = l.out_features * self.rank;
                row[s.a_offset..s.a_offset + ri].copy_from_slice(&take(
                    named,
                    &a,
                    &[self.rank, l.in_features],
                )?);
                row[s.b_offset..s.b_offset + or].copy_from_slice(&take(
                    named,
                    &b,
                    &[l.out_features, self.rank],
                )?);
            }
        }
        Ok(arena)
    }
}

/// A named float tensor of the expected shape.
pub(crate) fn take(named: &Named, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = named
        .get(name)
        .ok_or_else(|| BellaError::io(format!("missing tensor `{name}`")))?;
    if t.shape != shape {
        return Err(BellaError::io(format!(
            "tensor `{name}` has shape {:?}, expected {shape:?}",
            t.shape
        )));
    }
    Ok(t.to_f32())
}
