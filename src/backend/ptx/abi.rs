//! The kernel ABI, `kernels/abi.json`: every `.entry` of `kernels/*.ptx` with its parameters
//! in order, launch shape, resources and an example launch (the format is described in
//! kernels/README.md, "Kernel ABI"). The host checks every launch against it
//! ([`check`]) and can pass its arguments by name ([`order_named`]), so a kernel's parameter
//! order is stated in the PTX and the ABI only.

use super::driver::Param;
use crate::error::{BellaError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The text of `kernels/abi.json`.
pub const ABI_JSON: &str = include_str!("../../../kernels/abi.json");

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
pub struct Abi {
    /// Format tag, `bella-kernel-abi/1`.
    pub format: String,
    /// What the file is.
    pub about: String,
    /// The meaning of the fields, in words (keyed by field).
    pub conventions: BTreeMap<String, String>,
    /// One per `.entry`.
    pub entries: Vec<Entry>,
}

/// One kernel entry point.
#[derive(Clone, Debug, Deserialize)]
pub struct Entry {
    /// The `.entry` name.
    pub name: String,
    /// The file under `kernels/` that holds it (e.g. `activation.ptx`).
    pub file: String,
    /// What it computes, in one line.
    pub computes: String,
    /// The `.param` list, in order.
    pub params: Vec<ParamSpec>,
    /// Threads per CTA (always `[256, 1, 1]`).
    pub block: [u32; 3],
    /// How the grid is chosen.
    pub grid: GridRule,
    /// How the kernel uses 16-byte vector accesses.
    pub vector_loads: VectorLoads,
    /// An extra condition of the vector path, if any.
    pub vector_note: Option<String>,
    /// Static shared memory per CTA, bytes (ptxas).
    pub shared_bytes: u32,
    /// Registers per thread (ptxas).
    pub registers: Registers,
    /// A small launch that runs on the simulator.
    pub example: Example,
}

/// How a kernel uses 16-byte global accesses (`ld/st.global.v4`, `cp.async` 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VectorLoads {
    /// Vector accesses where a thread's 4 elements are in range and 16-byte aligned, tested
    /// per thread at run time; otherwise scalar ones: any 4-byte aligned pointer works.
    RuntimeChecked,
    /// Scalar accesses only.
    None,
    /// The pointers' `align` is a precondition the kernel does not check.
    Required,
}

/// The PTX type of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// `.u64`: a device pointer.
    U64,
    /// `.u32` scalar.
    U32,
    /// `.f32` scalar.
    F32,
}

impl ParamType {
    /// The PTX spelling (`u64`, `u32`, `f32`).
    pub fn ptx(self) -> &'static str {
        match self {
            ParamType::U64 => "u64",
            ParamType::U32 => "u32",
            ParamType::F32 => "f32",
        }
    }
}

/// What a pointer parameter points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Elem {
    /// f32 elements.
    F32,
    /// u32 elements (class labels).
    U32,
    /// Two bfloat16 values per 32-bit word, element `2i` in the low half.
    Bf16x2,
    /// Two IEEE binary16 values per 32-bit word, element `2i` in the low half.
    F16x2,
}

/// Whether the kernel reads or writes through a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Access {
    /// Read only.
    #[serde(rename = "r")]
    Read,
    /// Written only.
    #[serde(rename = "w")]
    Write,
    /// Read and written (or either, depending on a mode; see the parameter's note).
    #[serde(rename = "rw")]
    ReadWrite,
}

/// One `.param`.
#[derive(Clone, Debug, Deserialize)]
pub struct ParamSpec {
    /// The PTX name (`p_...`).
    pub name: String,
    /// The PTX type.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Pointers: the element type.
    pub elem: Option<Elem>,
    /// Pointers: read, written or both.
    pub access: Option<Access>,
    /// Pointers: the least alignment of the address, bytes.
    pub align: Option<u32>,
    /// A constraint or mode note.
    pub note: Option<String>,
}

/// The grid of a launch: 1-D, any size ≥ 1 is correct.
#[derive(Clone, Debug, Deserialize)]
pub struct GridRule {
    /// What one iteration of the grid-stride loop covers.
    pub work_unit: String,
    /// The grid bella's host code picks.
    pub host: String,
}

/// Registers per thread by architecture.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Registers {
    /// On sm_80.
    pub sm_80: u32,
    /// On sm_90.
    pub sm_90: u32,
}

/// An example launch: scalar values and one buffer per pointer parameter, by name.
#[derive(Clone, Debug, Deserialize)]
pub struct Example {
    /// CTAs in x.
    pub grid: u32,
    /// The value of every scalar parameter.
    pub scalars: BTreeMap<String, f64>,
    /// The buffer of every pointer parameter.
    pub buffers: BTreeMap<String, BufferSpec>,
}

/// One example buffer.
#[derive(Clone, Debug, Deserialize)]
pub struct BufferSpec {
    /// Length in 32-bit words.
    pub len: usize,
    /// `uniform`, `positive`, `index`, `bf16x2`, `f16x2` or `nan` (see the conventions).
    pub fill: String,
    /// `index` fills: the exclusive upper bound.
    pub below: Option<u32>,
}

/// The parsed `kernels/abi.json` (parsed once; the file is part of the build).
pub fn abi() -> &'static Abi {
    static ABI: OnceLock<Abi> = OnceLock::new();
    ABI.get_or_init(|| serde_json::from_str(ABI_JSON).expect("kernels/abi.json parses"))
}

/// The entry named `name`, if the ABI lists it.
pub fn entry(name: &str) -> Option<&'static Entry> {
    abi().entries.iter().find(|e| e.name == name)
}

fn lookup(kernel: &str) -> Result<&'static Entry> {
    entry(kernel)
        .ok_or_else(|| BellaError::invalid(format!("kernel `{kernel}` is not in kernels/abi.json")))
}

/// The PTX type a launch argument is passed as.
fn passed_as<B>(p: &Param<'_, B>) -> &'static str {
    match p {
        Param::Ptr { .. } => "a pointer",
        Param::U32(_) => "u32",
        Param::I32(_) => "s32",
        Param::F32(_) => "f32",
        Param::U64(_) => "a u64 value",
    }
}

fn agrees<B>(spec: &ParamSpec, p: &Param<'_, B>) -> bool {
    matches!(
        (spec.ty, p),
        (ParamType::U64, Param::Ptr { .. })
            | (ParamType::U32, Param::U32(_))
            | (ParamType::F32, Param::F32(_))
    )
}

/// Checks a launch's arguments against the ABI entry of `kernel`: the same count and, in
/// order, the same types (pointers for `u64`). The error names the kernel and the first
/// mismatching parameter. `module` must be the entry's file (`kernels/<module>.ptx`) when it
/// names one of the families (tests load altered copies under other names).
pub fn check<B>(module: &str, kernel: &str, params: &[Param<'_, B>]) -> Result<()> {
    let e = lookup(kernel)?;
    let family = super::modules::MODULES.iter().any(|(m, _)| *m == module);
    if family && e.file.strip_suffix(".ptx") != Some(module) {
        return Err(BellaError::invalid(format!(
            "kernel `{kernel}` is in kernels/{}, launched from module `{module}`",
            e.file
        )));
    }
    for (i, (spec, p)) in e.params.iter().zip(params).enumerate() {
        if !agrees(spec, p) {
            return Err(BellaError::invalid(format!(
                "kernel `{kernel}`: parameter {i} `{}` is .{} in kernels/abi.json, the launch passes {}",
                spec.name,
                spec.ty.ptx(),
                passed_as(p)
            )));
        }
    }
    if params.len() != e.params.len() {
        let what = match e.params.get(params.len()) {
            Some(missing) => format!("parameter `{}` is missing", missing.name),
            None => "extra arguments".to_string(),
        };
        return Err(BellaError::invalid(format!(
            "kernel `{kernel}`: {} arguments given, kernels/abi.json lists {} ({what})",
            params.len(),
            e.params.len()
        )));
    }
    Ok(())
}

/// Named arguments put in the ABI's parameter order: every parameter of `kernel` exactly
/// once; a missing, unknown or repeated name is an error naming the kernel and the
/// parameter. (Types are checked at launch, by [`check`].)
pub fn order_named<'a, B>(
    kernel: &str,
    named: Vec<(&str, Param<'a, B>)>,
) -> Result<Vec<Param<'a, B>>> {
    let e = lookup(kernel)?;
    let mut slots: Vec<Option<Param<'a, B>>> = e.params.iter().map(|_| None).collect();
    for (name, p) in named {
        let i = e
            .params
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                BellaError::invalid(format!("kernel `{kernel}` has no parameter `{name}`"))
            })?;
        if slots[i].replace(p).is_some() {
            return Err(BellaError::invalid(format!(
                "kernel `{kernel}`: parameter `{name}` given twice"
            )));
        }
    }
    slots
        .into_iter()
        .zip(&e.params)
        .map(|(p, s)| {
            p.ok_or_else(|| {
                BellaError::invalid(format!(
                    "kernel `{kernel}`: parameter `{}` not given",
                    s.name
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf() -> u8 {
        0
    }

    fn message<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_abi_parses_and_names_each_kernel_once() {
        let a = abi();
        assert_eq!(a.format, "bella-kernel-abi/1");
        let mut names: Vec<&str> = a.entries.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "an entry is listed twice");
        assert!(entry("axpby").is_some() && entry("no_such").is_none());
    }

    #[test]
    fn a_wrong_launch_is_an_error_naming_kernel_and_parameter() {
        let b = buf();
        let p = || Param::Ptr {
            buf: &b,
            byte_offset: 0,
        };
        let good = [p(), p(), Param::U32(4)];
        check("activation", "relu_forward", &good).unwrap();
        let swapped = [p(), Param::U32(4), p()];
        let e = message(check("activation", "relu_forward", &swapped));
        assert!(e.contains("relu_forward") && e.contains("`p_x`"), "{e}");
        let short = [p(), p()];
        let e = message(check("activation", "relu_forward", &short));
        assert!(e.contains("`p_n` is missing"), "{e}");
        let e = message(check("softmax", "relu_forward", &good));
        assert!(e.contains("activation.ptx"), "{e}");
    }

    #[test]
    fn named_arguments_take_the_abi_order() {
        let b = buf();
        let p = || Param::Ptr {
            buf: &b,
            byte_offset: 0,
        };
        let ordered = order_named(
            "relu_forward",
            vec![("p_n", Param::U32(7)), ("p_x", p()), ("p_y", p())],
        )
        .unwrap();
        assert!(matches!(ordered[2], Param::U32(7)));
        check("activation", "relu_forward", &ordered).unwrap();
        let e = message(order_named(
            "relu_forward",
            vec![("p_y", p()), ("p_x", p())],
        ));
        assert!(e.contains("`p_n` not given"), "{e}");
        let e = message(order_named("relu_forward", vec![("p_z", p())]));
        assert!(e.contains("no parameter `p_z`"), "{e}");
        let e = message(order_named(
            "relu_forward",
            vec![("p_y", p()), ("p_y", p())],
        ));
        assert!(e.contains("given twice"), "{e}");
    }
}
