//! Host tensors: what the file readers (`io`) produce and the named-op interface
//! (`ops::named`, `bella op`) consumes. A leaf module, so `io` does not depend on `ops`.

use std::collections::BTreeMap;

/// A host tensor as read from (or written to) a file.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: HostData,
}

/// The values of a [`HostTensor`]: every float dtype is read as f32, every integer as i64.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// Float values (f32, or f16/bf16/f64 converted).
    Float(Vec<f32>),
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
    /// The values as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            HostData::Float(v) => v.clone(),
            HostData::Int(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            HostData::Float(v) => v.len(),
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
