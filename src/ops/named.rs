//! Ops on named host tensors: the interface of `bella op` (safetensors in, safetensors out)
//! and of `bella doctor`. Names are DESIGN.md's. Scalars are 0-d or 1-element tensors;
//! integer-valued inputs (labels, flags, `step`) may be any integer dtype or a float holding
//! an integral value.

use super::*;
use crate::backend::AdamW;
use crate::dtype::DType;
pub use crate::host::{HostData, HostTensor, Named};

/// Reads the named inputs of one op without a backend: scalars, integers, flags, labels and
/// `step`, with the op's errors. `run_named` and the float64 oracle both read through it,
/// so they accept the same files.
pub(crate) struct NamedInputs<'a> {
    pub op: &'a str,
    pub map: &'a Named,
}

impl NamedInputs<'_> {
    pub fn get(&self, name: &str) -> Result<&HostTensor> {
        self.map.get(name).ok_or_else(|| BellaError::Missing {
            op: self.op.to_string(),
            tensor: name.to_string(),
        })
    }
    /// A scalar (0-d or 1 element) if present.
    pub fn opt_scalar(&self, name: &str) -> Result<Option<f64>> {
        let Some(t) = self.map.get(name) else {
            return Ok(None);
        };
        if t.len() != 1 {
            return Err(BellaError::shape(
                self.op,
                name,
                "a scalar (0-d or 1 element)",
                &t.shape,
            ));
        }
        Ok(Some(match &t.data {
            HostData::Float(v) => v[0] as f64,
            HostData::Half(..) => t.to_f32()[0] as f64,
            HostData::Int(v) => v[0] as f64,
        }))
    }
    /// A required scalar.
    pub fn scalar(&self, name: &str) -> Result<f64> {
        self.get(name)?;
        Ok(self.opt_scalar(name)?.unwrap_or_default())
    }
    /// An integer-valued scalar (flags, `step`), given as any integer or an integral float.
    pub fn integer(&self, name: &str) -> Result<i64> {
        let v = self.scalar(name)?;
        integral(self.op, name, v)
    }
    /// A 0/1 flag.
    pub fn flag(&self, name: &str) -> Result<bool> {
        match self.integer(name)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(BellaError::invalid(format!(
                "{}: `{name}` must be 0 or 1, got {v}",
                self.op
            ))),
        }
    }
    /// The AdamW step number, t ≥ 1.
    pub fn step(&self) -> Result<u32> {
        let step = self.integer("step")?;
        u32::try_from(step).ok().filter(|&s| s >= 1).ok_or_else(|| {
            BellaError::invalid(format!("{}: step must be ≥ 1, got {step}", self.op))
        })
    }
    /// Class labels `[M]`, non-negative integers.
    pub fn labels(&self, name: &str) -> Result<Vec<u32>> {
        let t = self.get(name)?;
        if t.shape.len() != 1 {
            return Err(BellaError::shape(self.op, name, "[M]", &t.shape));
        }
        let vals: Vec<i64> = match &t.data {
            HostData::Int(v) => v.clone(),
            HostData::Float(_) | HostData::Half(..) => t
                .to_f32()
                .iter()
                .map(|&x| integral(self.op, name, x as f64))
                .collect::<Result<_>>()?,
        };
        vals.iter()
            .map(|&l| {
                u32::try_from(l).map_err(|_| {
                    BellaError::invalid(format!("{}: label {l} is negative or too large", self.op))
                })
            })
            .collect()
    }
}

/// Named inputs uploaded to a backend.
struct Inputs<'a> {
    named: NamedInputs<'a>,
    be: &'a dyn Backend,
}

impl Inputs<'_> {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let t = self.named.get(name)?;
        self.be.upload(&t.shape, &t.to_f32())
    }
    fn opt_tensor(&self, name: &str) -> Result<Option<Tensor>> {
        self.named
            .map
            .get(name)
            .map(|_| self.tensor(name))
            .transpose()
    }
    fn opt_scalar(&self, name: &str) -> Result<Option<f64>> {
        self.named.opt_scalar(name)
    }
    fn scalar(&self, name: &str) -> Result<f32> {
        Ok(self.named.scalar(name)? as f32)
    }
    fn flag(&self, name: &str) -> Result<bool> {
        self.named.flag(name)
    }
    fn labels(&self, name: &str) -> Result<Vec<u32>> {
        self.named.labels(name)
    }
}

fn integral(op: &str, name: &str, v: f64) -> Result<i64> {
    if v.fract() != 0.0 || !v.is_finite() || v.abs() > 2f64.powi(53) {
        return Err(BellaError::invalid(format!(
            "{op}: `{name}` must be an integer, got {v}"
        )));
    }
    Ok(v as i64)
}

impl Inputs<'_> {
    /// A product operand: as `dtype` when given (uploaded as f32 if the file holds f32, then
    /// converted on the device by `cast`), else as stored when every name in `group` is the
    /// same 16-bit type, else widened to f32.
    fn operand(&self, name: &str, group: &[&str], dtype: Option<DType>) -> Result<Tensor> {
        let t = self.named.get(name)?;
        let stored = t.float_dtype();
        if let Some(d) = dtype {
            let dev = match &t.data {
                HostData::Half(h, bits) => self.be.upload_bits(&t.shape, *h, bits)?,
                _ => self.tensor(name)?,
            };
            return cast(self.be, &dev, d);
        }
        let same_half = stored.is_some_and(DType::is_half)
            && group
                .iter()
                .all(|g| self.named.map.get(*g).and_then(HostTensor::float_dtype) == stored);
        match &t.data {
            HostData::Half(h, bits) if same_half => self.be.upload_bits(&t.shape, *h, bits),
            _ => self.tensor(name),
        }
    }
}

fn out(be: &dyn Backend, name: &str, t: &Tensor) -> Result<(String, HostTensor)> {
    let host = match t.dtype() {
        DType::F32 => HostTensor::float(t.shape(), be.download(t)?),
        half => HostTensor::half(t.shape(), half, be.download_bits(t)?),
    };
    Ok((name.to_string(), host))
}

/// The ops [`run_named`] takes besides [`OP_NAMES`]: `cast` (`x` to the dtype given).
pub const UTILITY_NAMES: [&str; 1] = ["cast"];

/// Run op `name` on named inputs; returns the named outputs of its contract. Float inputs
/// are read as f32 (bf16/f16 widened exactly), except the 16-bit operands of the ops that
/// take them when all of them are the same 16-bit type: `matmul`'s `a` and `b`,
/// `lora_forward`'s and `lora_backward`'s `x`, `weight`, `lora_a` and `lora_b` stay 16-bit
/// on the device, and `lora_backward`'s `dy` and `h` too when all six are one 16-bit type.
pub fn run_named(
    be: &dyn Backend,
    name: &str,
    inputs: &Named,
) -> Result<Vec<(String, HostTensor)>> {
    run_named_as(be, name, inputs, None)
}

/// [`run_named`] with a dtype for the ops that take 16-bit operands (`bella op --dtype`):
/// the operands of `matmul`, `lora_forward` and `lora_backward` are converted to it on the
/// device (`cast`),
/// and `cast` converts its `x` to it (output `y` in that dtype). Other ops take f32 only: a
/// 16-bit `dtype` for them is an error.
pub fn run_named_as(
    be: &dyn Backend,
    name: &str,
    inputs: &Named,
    dtype: Option<DType>,
) -> Result<Vec<(String, HostTensor)>> {
    let takes_half = matches!(name, "matmul" | "lora_forward" | "lora_backward" | "cast");
    if !takes_half && dtype.is_some_and(DType::is_half) {
        return Err(BellaError::invalid(format!(
            "{name} takes f32 tensors only; a 16-bit dtype is for matmul, lora_forward, \
             lora_backward and cast (bf16/f16 inputs in the file are widened to f32 for {name})"
        )));
    }
    let i = Inputs {
        named: NamedInputs {
            op: name,
            map: inputs,
        },
        be,
    };
    match name {
        "lora_forward" => {
            let g = ["x", "weight", "lora_a", "lora_b"];
            let (x, w, a, b) = (
                i.operand("x", &g, dtype)?,
                i.operand("weight", &g, dtype)?,
                i.operand("lora_a", &g, dtype)?,
                i.operand("lora_b", &g, dtype)?,
            );
            let bias = i.opt_tensor("bias")?;
            let adapter = Adapter::from_tensors(name, &a, &b)?;
            let r = lora_forward(be, &x, &w, bias.as_ref(), &adapter, i.scalar("scale")?)?;
            Ok(vec![out(be, "y", &r.y)?, out(be, "h", &r.h)?])
        }
        "lora_backward" => {
            let g = ["x", "weight", "lora_a", "lora_b"];
            let (a, b) = (
                i.operand("lora_a", &g, dtype)?,
                i.operand("lora_b", &g, dtype)?,
            );
            let adapter = Adapter::from_tensors(name, &a, &b)?;
            // dy and h stay 16-bit when all six inputs are one 16-bit type in the file (and
            // no dtype is forced); else f32.
            let all = ["x", "weight", "lora_a", "lora_b", "dy", "h"];
            let upstream = |n: &str| match dtype {
                Some(_) => i.tensor(n),
                None => i.operand(n, &all, None),
            };
            let g = lora_backward(
                be,
                &upstream("dy")?,
                &i.operand("x", &g, dtype)?,
                &i.operand("weight", &g, dtype)?,
                &adapter,
                &upstream("h")?,
                i.scalar("scale")?,
            )?;
            Ok(vec![
                out(be, "dx", &g.dx)?,
                out(be, "d_lora_a", &g.d_lora_a)?,
                out(be, "d_lora_b", &g.d_lora_b)?,
            ])
        }
        "cast" => {
            let to = dtype.ok_or_else(|| {
                BellaError::invalid("cast: give the dtype to convert `x` to (--dtype)")
            })?;
            let x = i.operand("x", &["x"], None)?;
            Ok(vec![out(be, "y", &cast(be, &x, to)?)?])
        }
        "matmul" => {
            let ab = ["a", "b"];
            let c = matmul(
                be,
                &i.operand("a", &ab, dtype)?,
                &i.operand("b", &ab, dtype)?,
                i.flag("trans_a")?,
                i.flag("trans_b")?,
                i.scalar("alpha")?,
            )?;
            Ok(vec![out(be, "c", &c)?])
        }
        "pairwise_sqdist" => {
            let d = pairwise_sqdist(be, &i.tensor("theta")?)?;
            Ok(vec![out(be, "sqdist", &d)?])
        }
        "rbf_kernel" => {
            let h = i.opt_scalar("bandwidth")?.map(|v| v as f32);
            let (k, h) = rbf_kernel(be, &i.tensor("theta")?, h)?;
            Ok(vec![
                out(be, "kernel", &k)?,
                ("bandwidth".into(), HostTensor::float(&[1], vec![h])),
            ])
        }
        "svgd_direction" => {
            let phi = svgd_direction(
                be,
                &i.tensor("theta")?,
                &i.tensor("score")?,
                &i.tensor("kernel")?,
                i.scalar("bandwidth")?,
            )?;
            Ok(vec![out(be, "phi", &phi)?])
        }
        "adamw_step" => {
            let step = i.named.step()?;
            let hp = AdamW {
                lr: i.scalar("lr")?,
                beta1: i.scalar("beta1")?,
                beta2: i.scalar("beta2")?,
                eps: i.scalar("eps")?,
                weight_decay: i.scalar("weight_decay")?,
                step,
            };
            let (mut p, g, mut m, mut v) = (
                i.tensor("param")?,
                i.tensor("grad")?,
                i.tensor("m")?,
                i.tensor("v")?,
            );
            adamw_step(be, &mut p, &g, &mut m, &mut v, &hp)?;
            Ok(vec![
                out(be, "param", &p)?,
                out(be, "m", &m)?,
                out(be, "v", &v)?,
            ])
        }
        "svgd_step" => {
            let hp = AdamW {
                lr: i.scalar("lr")?,
                beta1: i.scalar("beta1")?,
                beta2: i.scalar("beta2")?,
                eps: i.scalar("eps")?,
                weight_decay: i.scalar("weight_decay")?,
                step: i.named.step()?,
            };
            let (mut theta, mut m, mut v) = (i.tensor("theta")?, i.tensor("m")?, i.tensor("v")?);
            svgd_step(
                be,
                &mut theta,
                &i.tensor("score")?,
                &i.tensor("kernel")?,
                i.scalar("bandwidth")?,
                i.scalar("grad_scale")?,
                &mut m,
                &mut v,
                &hp,
            )?;
            Ok(vec![
                out(be, "theta", &theta)?,
                out(be, "m", &m)?,
                out(be, "v", &v)?,
            ])
        }
        "relu_forward" => Ok(vec![out(be, "y", &relu_forward(be, &i.tensor("x")?)?)?]),
        "gelu_forward" => Ok(vec![out(be, "y", &gelu_forward(be, &i.tensor("x")?)?)?]),
        "relu_backward" => {
            let dx = relu_backward(be, &i.tensor("x")?, &i.tensor("dy")?)?;
            Ok(vec![out(be, "dx", &dx)?])
        }
        "gelu_backward" => {
            let dx = gelu_backward(be, &i.tensor("x")?, &i.tensor("dy")?)?;
            Ok(vec![out(be, "dx", &dx)?])
        }
        "softmax_xent" => {
            let labels = i.labels("labels")?;
            let (loss, dl) = softmax_xent(be, &i.tensor("logits")?, &labels)?;
            Ok(vec![out(be, "loss", &loss)?, out(be, "dlogits", &dl)?])
        }
        "ensemble_stats" => {
            let s = ensemble_stats(be, &i.tensor("logits")?)?;
            Ok(vec![
                out(be, "probs", &s.probs)?,
                out(be, "entropy", &s.entropy)?,
                out(be, "expected_entropy", &s.expected_entropy)?,
                out(be, "mutual_info", &s.mutual_info)?,
            ])
        }
        "axpby" => {
            let (x, y) = (i.tensor("x")?, i.tensor("y")?);
            let r = axpby(be, i.scalar("alpha")?, &x, i.scalar("beta")?, &y)?;
            Ok(vec![out(be, "out", &r)?])
        }
        other => Err(BellaError::Unknown {
            what: "op",
            name: other.to_string(),
        }),
    }
}
