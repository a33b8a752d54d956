//! Loading a frozen MLP from safetensors (memory-mapped; f32, f16 and bf16 converted to f32
//! on load) and saving one.
//!
//! Name rules (what PyTorch writes for `nn.Sequential` and numbered layers):
//! - every tensor is `<stem><n>.weight` (2-D, `[O, I]`) or `<stem><n>.bias` (1-D, `[O]`),
//!   where `<n>` is a decimal index and `<stem>` is any prefix, the same for every layer:
//!   `0.weight`, `layers.2.weight`, `model.net.4.bias`, `fc1.weight`;
//! - layers run in increasing numeric order of `<n>` (gaps, such as the indices of
//!   activation modules in an `nn.Sequential`, are fine); a bias is optional;
//! - the activation between layers is read from the header metadata key `activation`
//!   (`relu` or `gelu`); without it, ReLU;
//! - any other tensor name, a second stem, or layers whose shapes do not chain is an error.

use super::model::{HostLinear, MlpSpec};
use crate::autograd::Activation;
use crate::error::{BellaError, Result};
use crate::ops::named::HostTensor;
use ::safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Read a model file (see the module docs for the rules).
pub fn load_model(path: &Path) -> Result<MlpSpec> {
    let err = |m: String| BellaError::io(format!("{}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    // SAFETY: read-only map, dropped before returning; values read from it are validated.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(format!("cannot map: {e}")))?;
    parse_model(&map).map_err(err)
}

/// Parse model bytes (the body of [`load_model`]).
pub fn parse_model(bytes: &[u8]) -> std::result::Result<MlpSpec, String> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a valid safetensors file ({e})"))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a valid safetensors file ({e})"))?;
    let activation = match header.metadata().as_ref().and_then(|m| m.get("activation")) {
        None => Activation::Relu,
        Some(a) if a == "relu" => Activation::Relu,
        Some(a) if a == "gelu" => Activation::Gelu,
        Some(a) => return Err(format!("metadata activation `{a}` is not `relu` or `gelu`")),
    };

    let mut stem: Option<String> = None;
    let mut layers: BTreeMap<u64, (String, Option<TensorView>, Option<TensorView>)> =
        BTreeMap::new();
    for (name, view) in st.tensors() {
        let (module, is_weight) = if let Some(m) = name.strip_suffix(".weight") {
            (m, true)
        } else if let Some(m) = name.strip_suffix(".bias") {
            (m, false)
        } else {
            return Err(format!(
                "tensor `{name}` is not `<prefix><n>.weight` or `<prefix><n>.bias`"
            ));
        };
        let digits = module.len() - module.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (s, n) = module.split_at(module.len() - digits);
        let index: u64 = n.parse().map_err(|_| {
            format!("tensor `{name}`: the module `{module}` does not end in a layer number")
        })?;
        match &stem {
            None => stem = Some(s.to_string()),
            Some(prev) if prev != s => {
                return Err(format!(
                "tensor `{name}`: layers under two prefixes (`{prev}` and `{s}`); one MLP per file"
            ))
            }
            _ => {}
        }
        let entry = layers
            .entry(index)
            .or_insert((module.to_string(), None, None));
        if is_weight {
            entry.1 = Some(view);
        } else {
            entry.2 = Some(view);
        }
    }
    let mut spec = MlpSpec {
        layers: Vec::new(),
        activation,
    };
    for (_, (module, w, b)) in layers {
        let w = w.ok_or_else(|| format!("layer `{module}` has a bias but no weight"))?;
        let wname = format!("{module}.weight");
        let [o, i] = *w.shape() else {
            return Err(format!(
                "`{wname}` has shape {:?}, a weight must be 2-D [out, in]",
                w.shape()
            ));
        };
        let bias = match b {
            None => None,
            Some(b) => {
                if b.shape() != [o] {
                    return Err(format!(
                        "`{module}.bias` has shape {:?}, expected [{o}]",
                        b.shape()
                    ));
                }
                Some(floats(&format!("{module}.bias"), &b)?)
            }
        };
        spec.layers.push(HostLinear {
            name: module,
            out_features: o,
            in_features: i,
            weight: floats(&wname, &w)?,
            bias,
        });
    }
    if spec.layers.is_empty() {
        return Err("the file holds no `<n>.weight` tensors".into());
    }
    spec.check().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// f32, f16 or bf16 little-endian values as f32; any other dtype is an error.
fn floats(name: &str, v: &TensorView) -> std::result::Result<Vec<f32>, String> {
    let b = v.data();
    fn each<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
            .collect()
    }
    let out = match v.dtype() {
        Dtype::F32 => each(b, f32::from_le_bytes),
        Dtype::F16 => each(b, |c| half::f16::from_le_bytes(c).to_f32()),
        Dtype::BF16 => each(b, |c| half::bf16::from_le_bytes(c).to_f32()),
        other => {
            return Err(format!(
                "tensor `{name}` has dtype {other:?}; model weights must be F32, F16 or BF16"
            ))
        }
    };
    if let Some(bad) = out.iter().position(|x| !x.is_finite()) {
        return Err(format!(
            "tensor `{name}` holds a non-finite value at element {bad}"
        ));
    }
    Ok(out)
}

/// Write a model as f32 under its layers' names, with the activation in the metadata;
/// atomic (temporary file, then rename).
pub fn save_model(path: &Path, spec: &MlpSpec) -> Result<()> {
    spec.check()?;
    let mut tensors = Vec::new();
    for l in &spec.layers {
        tensors.push((
            format!("{}.weight", l.name),
            HostTensor::float(&[l.out_features, l.in_features], l.weight.clone()),
        ));
        if let Some(b) = &l.bias {
            tensors.push((
                format!("{}.bias", l.name),
                HostTensor::float(&[l.out_features], b.clone()),
            ));
        }
    }
    let act = match spec.activation {
        Activation::Relu => "relu",
        Activation::Gelu => "gelu",
    };
    let meta = HashMap::from([("activation".to_string(), act.to_string())]);
    crate::io::safetensors::write_with_metadata(path, &tensors, Some(meta))
}
