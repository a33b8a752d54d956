//! The frozen base: an MLP of linear layers with one activation between them, as host
//! values (what files hold) and as device tensors (what the ops read).

use crate::autograd::Activation;
use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::ops;
use crate::tensor::Tensor;

/// One linear layer in PyTorch layout: `weight [O, I]` row-major, `bias [O]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostLinear {
    /// The module path the file uses (`layers.0`, `2`, `fc1`): adapters are named after it.
    pub name: String,
    /// O: rows of `weight`.
    pub out_features: usize,
    /// I: columns of `weight`.
    pub in_features: usize,
    /// `[O, I]`, row-major.
    pub weight: Vec<f32>,
    /// `[O]`, if the layer has one.
    pub bias: Option<Vec<f32>>,
}

/// An MLP: linear layers, the activation after every layer but the last.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpSpec {
    /// In order, input first.
    pub layers: Vec<HostLinear>,
    /// Applied after every layer but the last (the last gives the logits).
    pub activation: Activation,
}

impl MlpSpec {
    /// Layers must chain: layer l+1 takes as many inputs as layer l gives.
    pub fn check(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(BellaError::invalid("the model has no linear layers"));
        }
        for l in &self.layers {
            if l.weight.len() != l.out_features * l.in_features
                || l.out_features == 0
                || l.in_features == 0
            {
                return Err(BellaError::invalid(format!(
                    "layer `{}`: weight must be a non-empty [{}, {}]",
                    l.name, l.out_features, l.in_features
                )));
            }
            if let Some(b) = &l.bias {
                if b.len() != l.out_features {
                    return Err(BellaError::invalid(format!(
                        "layer `{}`: bias has {} values, its weight has {} outputs",
                        l.name,
                        b.len(),
                        l.out_features
                    )));
                }
            }
        }
        for pair in self.layers.windows(2) {
            if pair[1].in_features != pair[0].out_features {
                return Err(BellaError::invalid(format!(
                    "layers do not chain: `{}` gives {} outputs but `{}` takes {} inputs",
                    pair[0].name, pair[0].out_features, pair[1].name, pair[1].in_features
                )));
            }
        }
        Ok(())
    }
    /// Inputs of the first layer.
    pub fn in_features(&self) -> usize {
        self.layers[0].in_features
    }
    /// Outputs of the last layer (the number of classes C).
    pub fn out_features(&self) -> usize {
        self.layers[self.layers.len() - 1].out_features
    }
    /// Every weight and bias value.
    pub fn param_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.len() + l.bias.as_ref().map_or(0, |b| b.len()))
            .sum()
    }
}

/// The base on a device, frozen.
pub struct FrozenMlp {
    /// The host values and layer names it was made from.
    pub spec: MlpSpec,
    /// Per layer, `weight [O, I]` on the device.
    pub weights: Vec<Tensor>,
    /// Per layer, `bias [O]` on the device, if any.
    pub biases: Vec<Option<Tensor>>,
    /// The weights converted to a 16-bit dtype, made once on first use ([`Self::weight_in`]).
    converted: std::sync::Mutex<Vec<(DType, Vec<Tensor>)>>,
}

impl FrozenMlp {
    /// Check `spec` ([`MlpSpec::check`]) and upload every weight and bias to `be`.
    pub fn upload(be: &dyn Backend, spec: MlpSpec) -> Result<Self> {
        spec.check()?;
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for l in &spec.layers {
            weights.push(be.upload(&[l.out_features, l.in_features], &l.weight)?);
            biases.push(
                l.bias
                    .as_ref()
                    .map(|b| be.upload(&[l.out_features], b))
                    .transpose()?,
            );
        }
        Ok(FrozenMlp {
            spec,
            weights,
            biases,
            converted: Default::default(),
        })
    }

    /// Layer `l`'s weight in `dtype`: the f32 weight itself, or its conversion (`ops::cast`)
    /// made on first use and kept, so mixed-precision training converts the frozen weights
    /// once per run, not once per step.
    pub fn weight_in(&self, be: &dyn Backend, l: usize, dtype: DType) -> Result<Tensor> {
        if dtype == DType::F32 {
            return Ok(self.weights[l].clone());
        }
        let mut cache = self.converted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, ws)) = cache.iter().find(|(d, _)| *d == dtype) {
            return Ok(ws[l].clone());
        }
        let ws = self
            .weights
            .iter()
            .map(|w| ops::cast(be, w, dtype))
            .collect::<Result<Vec<_>>>()?;
        let w = ws[l].clone();
        cache.push((dtype, ws));
        Ok(w)
    }

    /// Logits `[M, C]` of the base alone for `x [M, I]`, with ops only (no adapters).
    pub fn logits(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let n = self.weights.len();
        let mut h = x.clone();
        for (l, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            let base = crate::autograd::FrozenRef {
                weight: w,
                bias: b.as_ref(),
            };
            let y = crate::autograd::frozen_forward(be, &h, base)?;
            h = if l + 1 < n {
                match self.spec.activation {
                    Activation::Relu => ops::relu_forward(be, &y)?,
                    Activation::Gelu => ops::gelu_forward(be, &y)?,
                }
            } else {
                y
            };
        }
        Ok(h)
    }
}
