//! K trainable copies of a whole MLP (every weight and bias), one `[K, D]` arena row per
//! particle: the full-ensemble baseline, and the pre-training of the base (K = 1).

use super::lora::{particle_rng, take};
use super::model::{HostLinear, MlpSpec};
use super::Particles;
use crate::autograd::{Activation, Arena, DenseSlots, Tape, Var};
use crate::error::Result;
use crate::ops::named::{HostTensor, Named};
use crate::tensor::Tensor;

/// K trainable copies of a whole MLP: every weight `[O, I]` then bias `[O]` of each
/// layer, per particle one `[K, D]` arena row.
pub struct DenseParticles {
    /// Particles K.
    pub k: usize,
    /// Layer names and sizes; the values in it are those of the starting point.
    pub spec: MlpSpec,
    /// Per layer, where its weight and bias sit in an arena row.
    pub slots: Vec<DenseSlots>,
    d: usize,
}

impl DenseParticles {
    /// K copies of `spec`'s architecture (every layer gets a bias).
    pub fn new(spec: MlpSpec, k: usize) -> Self {
        let mut slots = Vec::new();
        let mut d = 0;
        for l in &spec.layers {
            let w_offset = d;
            d += l.out_features * l.in_features;
            slots.push(DenseSlots {
                w_offset,
                b_offset: Some(d),
                in_features: l.in_features,
                out_features: l.out_features,
            });
            d += l.out_features;
        }
        DenseParticles { k, spec, slots, d }
    }

    /// An MLP of the given widths with PyTorch's default `nn.Linear` initialisation
    /// (uniform in `±1/√I` for weights and biases), layers named `layers.0`, `layers.2`, …
    /// as an `nn.Sequential` with activations in between would name them.
    pub fn random_spec(widths: &[usize], activation: Activation, seed: u64) -> MlpSpec {
        let mut rng = particle_rng(seed, 2, 0);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(l, w)| {
                let (i, o) = (w[0], w[1]);
                let bound = 1.0 / (i as f32).sqrt();
                HostLinear {
                    name: format!("layers.{}", 2 * l),
                    out_features: o,
                    in_features: i,
                    weight: rng.uniform_vec(o * i, -bound, bound),
                    bias: Some(rng.uniform_vec(o, -bound, bound)),
                }
            })
            .collect();
        MlpSpec { layers, activation }
    }

    /// Every particle starts at `spec`'s values (a missing bias starts at zero).
    pub fn init(&self) -> Vec<f32> {
        let mut row = vec![0.0; self.d];
        for (l, s) in self.spec.layers.iter().zip(&self.slots) {
            row[s.w_offset..s.w_offset + l.weight.len()].copy_from_slice(&l.weight);
            if let (Some(b), Some(off)) = (&l.bias, s.b_offset) {
                row[off..off + b.len()].copy_from_slice(b);
            }
        }
        row.repeat(self.k)
    }

    /// Particle `k` of an arena as a standalone model.
    pub fn particle_spec(&self, arena: &[f32], k: usize) -> MlpSpec {
        let row = &arena[k * self.d..(k + 1) * self.d];
        let mut spec = self.spec.clone();
        for (l, s) in spec.layers.iter_mut().zip(&self.slots) {
            l.weight = row[s.w_offset..s.w_offset + l.weight.len()].to_vec();
            l.bias = s
                .b_offset
                .map(|off| row[off..off + l.out_features].to_vec());
        }
        spec
    }
}

impl Particles for DenseParticles {
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
        for (l, s) in self.slots.iter().enumerate() {
            h = tape.dense(h, arena, *s)?;
            if l + 1 < n {
                h = tape.activation(h, self.spec.activation)?;
            }
        }
        Ok(h)
    }
    /// `particles.{k}.{layer}.weight` and `.bias`.
    fn to_named(&self, arena: &[f32]) -> Vec<(String, HostTensor)> {
        let mut out = Vec::new();
        for k in 0..self.k {
            for l in self.particle_spec(arena, k).layers {
                let (o, i) = (l.out_features, l.in_features);
                out.push((
                    format!("particles.{k}.{}.weight", l.name),
                    HostTensor::float(&[o, i], l.weight),
                ));
                if let Some(b) = l.bias {
                    out.push((
                        format!("particles.{k}.{}.bias", l.name),
                        HostTensor::float(&[o], b),
                    ));
                }
            }
        }
        out
    }
    fn arena_from_named(&self, named: &Named) -> Result<Vec<f32>> {
        let mut arena = vec![0.0; self.k * self.d];
        for (k, row) in arena.chunks_mut(self.d).enumerate() {
            for (l, s) in self.spec.layers.iter().zip(&self.slots) {
                let (o, i) = (l.out_features, l.in_features);
                let w = take(named, &format!("particles.{k}.{}.weight", l.name), &[o, i])?;
                row[s.w_offset..s.w_offset + o * i].copy_from_slice(&w);
                if let Some(off) = s.b_offset {
                    let b = take(named, &format!("particles.{k}.{}.bias", l.name), &[o])?;
                    row[off..off + o].copy_from_slice(&b);
                }
            }
        }
        Ok(arena)
    }
}
