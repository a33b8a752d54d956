//! Host tensors: what the file readers (`io`) produce and the named-op interface
//! (`ops::named`, `bella op`) consumes. A leaf module, so `io` does not depend on `ops`.

use crate::dtype::DType;
use std::collections::BTreeMap;

/// A host tensor as read from (or written to) a file.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: HostData,
}

/// The values of a [`HostTensor`]: f32 and f64 are read as f32, bf16 and f16 kept as their
/// bits, every integer as i64.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// Float values (f32, or f64 converted).
    Float(Vec<f32>),
    /// 16-bit float values as stored (bf16 or f16 bits), not widened on load.
    Half(DType, Vec<u16>),
    /// Integer values (labels, flags, `step`).
    Int(Vec<i64>),
}

impl HostTensor {
    /// A float tensor.
    pub fn float(shape: &[usize], data: Vec<f32>) -> Self {
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::Float(data),
        }
    }
    /// An integer tensor.
    pub fn int(shape: &[usize], data: Vec<i64>) -> Self {
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::Int(data),
        }
    }
    /// A 0-d float tensor.
    pub fn scalar(v: f32) -> Self {
        Self::float(&[], vec![v])
    }
    /// A bf16/f16 tensor from the bits of its elements.
    pub fn half(shape: &[usize], dtype: DType, bits: Vec<u16>) -> Self {
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::Half(dtype, bits),
        }
    }
    /// The values as f32 (16-bit floats widened exactly, integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::Float(v) => v.clone(),
            HostData::Half(d, v) => v.iter().map(|&b| d.widen_bits(b)).collect(),
            HostData::Int(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    /// The element type of a float tensor (`None` for integers).
    pub fn float_dtype(&self) -> Option<DType> {
        match &self.data {
            HostData::Float(_) => Some(DType::F32),
            HostData::Half(d, _) => Some(*d),
            HostData::Int(_) => None,
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            HostData::Float(v) => v.len(),
            HostData::Half(_, v) => v.len(),
            HostData::Int(v) => v.len(),
        }
    }
    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tensors by name: an op's inputs, as read from a safetensors file.
pub type Named = BTreeMap<String, HostTensor>;
