//! The shader ABI, `shaders/abi.json`: every `@compute` entry of `shaders/*.wgsl` with its
//! parameter struct (fields, offsets, size), the storage bindings it uses, its workgroup size,
//! dispatch rule and an example dispatch (the format is described in shaders/README.md,
//! "Kernel ABI"). The host takes each kernel's file, parameter buffer kind and binding counts
//! from it, and checks every dispatch's parameter words against it ([`Entry::pack`]), so a
//! kernel's parameter layout is stated in the WGSL and the ABI only.

use super::gpu::NAME;
use crate::error::{BellaError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The text of `shaders/abi.json`.
pub const ABI_JSON: &str = include_str!("../../../shaders/abi.json");

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
pub struct Abi {
    /// Format tag, `bella-shader-abi/1`.
    pub format: String,
    /// What the file is.
    pub about: String,
    /// The meaning of the fields, in words (keyed by field).
    pub conventions: BTreeMap<String, String>,
    /// One per `@compute` entry point.
    pub entries: Vec<Entry>,
}

/// One compute entry point.
#[derive(Clone, Debug, Deserialize)]
pub struct Entry {
    /// The entry point's function name.
    pub name: String,
    /// The file under `shaders/` that holds it (e.g. `activation.wgsl`).
    pub file: String,
    /// What it computes, in one line.
    pub computes: String,
    /// The parameter struct at binding 0.
    pub params: ParamsSpec,
    /// The storage arrays it uses, by binding number (read-only ones first).
    pub bindings: Vec<BindingSpec>,
    /// `@workgroup_size` (always `[256, 1, 1]`).
    pub workgroup_size: [u32; 3],
    /// How many workgroups the host dispatches.
    pub dispatch: Dispatch,
    /// Extra conditions on sizes and layouts.
    #[serde(default)]
    pub rules: Vec<String>,
    /// A small dispatch that runs on lavapipe.
    pub example: Example,
}

/// The buffer kind of the parameter struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamsIn {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>`: for kernels that lavapipe would recompile on every dispatch
    /// (see `src/backend/wgpu/kernels.rs`).
    Storage,
}

/// The parameter struct at binding 0.
#[derive(Clone, Debug, Deserialize)]
pub struct ParamsSpec {
    /// Its binding number (0).
    pub binding: u32,
    /// The WGSL variable.
    pub var: String,
    /// Uniform or read-only storage.
    #[serde(rename = "in")]
    pub params_in: ParamsIn,
    /// The struct's WGSL name.
    #[serde(rename = "struct")]
    pub struct_name: String,
    /// Its size in bytes, padding included.
    pub size: u32,
    /// Its members, in order.
    pub fields: Vec<Field>,
}

/// One member of a parameter struct.
#[derive(Clone, Debug, Deserialize)]
pub struct Field {
    /// The member name (`_pad*`: padding).
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: Scalar,
    /// Its byte offset in the struct.
    pub offset: u32,
}

impl Field {
    /// Whether the member is padding (named `_pad*`), written as 0.
    pub fn is_padding(&self) -> bool {
        self.name.starts_with("_pad")
    }
}

/// A 4-byte scalar parameter type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scalar {
    /// `u32`.
    U32,
    /// `f32`.
    F32,
}

/// How a storage binding is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// One storage array an entry uses.
#[derive(Clone, Debug, Deserialize)]
pub struct BindingSpec {
    /// Binding number in group 0.
    pub binding: u32,
    /// The WGSL variable.
    pub var: String,
    /// Read-only or read-write.
    pub access: Access,
    /// The array's element type: `f32`, `u32` or `vec4<f32>`.
    pub elem: String,
}

/// How many workgroups the host dispatches (a linear count, folded into (x, y)).
#[derive(Clone, Debug, Deserialize)]
pub struct Dispatch {
    /// What one workgroup computes.
    pub work_unit: String,
    /// The linear workgroup count, as a formula in the parameters.
    pub workgroups: String,
}

/// A small dispatch: parameters by field name, one buffer per binding.
#[derive(Clone, Debug, Deserialize)]
pub struct Example {
    /// Linear workgroup count.
    pub workgroups: u64,
    /// Parameter values by field name (omitted padding is 0).
    pub params: BTreeMap<String, f64>,
    /// Buffers by binding variable.
    pub buffers: BTreeMap<String, ExampleBuffer>,
}

/// One example buffer.
#[derive(Clone, Debug, Deserialize)]
pub struct ExampleBuffer {
    /// Length in 4-byte words.
    pub len: usize,
    /// How to fill it.
    pub fill: Fill,
    /// For [`Fill::Index`]: values are below this.
    pub below: Option<u32>,
}

/// How an example buffer is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    /// Uniform in [-1, 1].
    Uniform,
    /// Uniform in [0.01, 1].
    Positive,
    /// u32 integers below `below`.
    Index,
    /// NaN: an output the dispatch writes in full.
    Nan,
    /// Two 16-bit floats per word, each a random bit pattern with bit 14 clear: finite as
    /// bf16 and as f16 (|v| < 2, zeros and subnormals included), for the packed inputs of
    /// the widening casts.
    Halves,
}

/// The parsed `shaders/abi.json` (embedded at build time; its parsing is tested).
pub fn abi() -> &'static Abi {
    static ABI: OnceLock<Abi> = OnceLock::new();
    ABI.get_or_init(|| serde_json::from_str(ABI_JSON).expect("shaders/abi.json parses"))
}

/// The entry named `name`, if the ABI lists it.
pub fn entry(name: &str) -> Option<&'static Entry> {
    abi().entries.iter().find(|e| e.name == name)
}

/// A parameter value as the host gives it.
#[derive(Clone, Copy, Debug)]
pub enum Value {
    /// An unsigned integer (`u32`).
    U(u32),
    /// A float (`f32`).
    F(f32),
}

impl Value {
    fn scalar(self) -> Scalar {
        match self {
            Value::U(_) => Scalar::U32,
            Value::F(_) => Scalar::F32,
        }
    }
    fn bits(self) -> u32 {
        match self {
            Value::U(v) => v,
            Value::F(v) => v.to_bits(),
        }
    }
}

impl Entry {
    /// The read-only storage bindings.
    pub fn reads(&self) -> usize {
        self.bindings
            .iter()
            .filter(|b| b.access == Access::Read)
            .count()
    }

    /// The read-write storage bindings.
    pub fn writes(&self) -> usize {
        self.bindings.len() - self.reads()
    }

    fn error(&self, what: String) -> BellaError {
        BellaError::device(
            NAME,
            format!(
                "kernel `{}` ({}, {}): {what}",
                self.name, self.file, self.params.struct_name
            ),
        )
    }

    /// The parameter struct's words from `values` given in field order: every field up to
    /// the last one that is not padding, each of the field's type; padding is 0.
    pub fn pack(&self, values: &[Value]) -> Result<Vec<u32>> {
        let fields = &self.params.fields;
        let needed = fields
            .iter()
            .rposition(|f| !f.is_padding())
            .map_or(0, |i| i + 1);
        if values.len() < needed || values.len() > fields.len() {
            return Err(self.error(format!(
                "given {} parameter words ({} bytes), the struct has {} fields ({} of them \
                 needed) in {} bytes",
                values.len(),
                4 * values.len(),
                fields.len(),
                needed,
                self.params.size
            )));
        }
        for (v, f) in values.iter().zip(fields) {
            if v.scalar() != f.ty {
                return Err(self.error(format!(
                    "parameter `{}` is {:?}, given {:?}",
                    f.name,
                    f.ty,
                    v.scalar()
                )));
            }
        }
        self.words(values.iter().map(|v| v.bits()))
    }

    /// The parameter struct's words from `values` by field name: every field that is not
    /// padding exactly once, of its type; padding is 0. Unknown and missing names are errors.
    pub fn pack_named(&self, values: &[(&str, Value)]) -> Result<Vec<u32>> {
        let fields = &self.params.fields;
        if let Some((name, _)) = values
            .iter()
            .find(|(n, _)| !fields.iter().any(|f| f.name == *n && !f.is_padding()))
        {
            return Err(self.error(format!("no parameter named `{name}`")));
        }
        let mut ordered = Vec::with_capacity(fields.len());
        for f in fields {
            let given: Vec<&Value> = values
                .iter()
                .filter(|(n, _)| *n == f.name)
                .map(|(_, v)| v)
                .collect();
            match given[..] {
                [] if f.is_padding() => ordered.push(Value::U(0)),
                [] => return Err(self.error(format!("parameter `{}` not given", f.name))),
                [v] => ordered.push(*v),
                _ => return Err(self.error(format!("parameter `{}` given twice", f.name))),
            }
        }
        self.pack(&ordered)
    }

    /// `words` padded with zeros to the struct's size; the offsets must be 4 apart from 0.
    fn words(&self, words: impl Iterator<Item = u32>) -> Result<Vec<u32>> {
        let p = &self.params;
        if p.fields
            .iter()
            .enumerate()
            .any(|(i, f)| f.offset != 4 * i as u32)
            || p.size < 4 * p.fields.len() as u32
            || !p.size.is_multiple_of(16)
        {
            return Err(self.error(
                "the ABI's struct layout is not consecutive 4-byte fields in a size that is a \
                 multiple of 16 bytes"
                    .into(),
            ));
        }
        let mut out: Vec<u32> = words.collect();
        out.resize(p.size as usize / 4, 0);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lists_every_entry_once() {
        let a = abi();
        assert_eq!(a.format, "bella-shader-abi/1");
        let mut names: Vec<&str> = a.entries.iter().map(|e| e.name.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate entry names");
    }

    /// A field planted in the ABI's copy of a struct makes the host's words for it an error.
    #[test]
    fn a_field_added_to_the_abi_is_caught() {
        let pad = r#"{"name": "_pad", "type": "u32", "offset": 12}"#;
        assert!(ABI_JSON.contains(pad));
        let planted = ABI_JSON.replace(pad, r#"{"name": "gamma", "type": "f32", "offset": 12}"#);
        let a: Abi = serde_json::from_str(&planted).unwrap();
        let e = a.entries.iter().find(|e| e.name == "axpby").unwrap();
        let err = e
            .pack(&[Value::U(3), Value::F(0.5), Value::F(2.0)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("axpby") && err.contains("4 of them needed"),
            "{err}"
        );
    }

    #[test]
    fn packing_checks_count_types_and_names() {
        let e = entry("axpby").unwrap();
        let ok = e
            .pack(&[Value::U(3), Value::F(0.5), Value::F(2.0)])
            .unwrap();
        assert_eq!(ok, vec![3, 0.5f32.to_bits(), 2.0f32.to_bits(), 0]);
        assert!(e.pack(&[Value::U(3), Value::F(0.5)]).is_err());
        assert!(e.pack(&[Value::U(3), Value::U(1), Value::F(2.0)]).is_err());
        let named = e
            .pack_named(&[
                ("beta", Value::F(2.0)),
                ("n", Value::U(3)),
                ("alpha", Value::F(0.5)),
            ])
            .unwrap();
        assert_eq!(named, ok);
        let missing = e.pack_named(&[("n", Value::U(3)), ("alpha", Value::F(0.5))]);
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("`beta` not given"));
        let unknown = e.pack_named(&[
            ("n", Value::U(3)),
            ("alpha", Value::F(0.5)),
            ("beta", Value::F(2.0)),
            ("gamma", Value::F(1.0)),
        ]);
        let msg = unknown.unwrap_err().to_string();
        assert!(msg.contains("axpby") && msg.contains("`gamma`"), "{msg}");
    }
}
