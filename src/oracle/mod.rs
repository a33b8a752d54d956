//! The float64 oracle: every op of DESIGN.md, and the utility `axpby`, as plain f64 loops
//! written to be read, not to be fast. It is the reference every backend is checked
//! against, the fast CPU backend included (`bella doctor`, `tests/`), so it
//! shares no code with any backend: each function below is the op's formula from
//! DESIGN.md, index by index.
//!
//! The functions of the op families work on f64 slices with their sizes spelled out;
//! [`run`] and [`run_f64`] take the same named host tensors as
//! [`run_named`](crate::ops::named::run_named) and return outputs with the same names,
//! order and shapes.
//!
//! Inputs arrive as f32 (or integers); every value converts to f64 exactly, so the
//! oracle computes the exact answer (to ~1e-16) for the very inputs a backend gets.

#![allow(clippy::needless_range_loop)] // index loops, written as the formulas read

mod activation;
mod axpby;
mod lora;
mod matmul;
mod optim;
mod softmax;
mod svgd;

pub use activation::{gelu, gelu_backward, gelu_derivative, gelu_forward};
pub use activation::{relu_backward, relu_forward};
pub use axpby::axpby;
pub use lora::{lora_backward, lora_forward, LoraGrads, LoraShape};
pub use matmul::{matmul, MatmulShape};
pub use optim::{adamw_step, AdamWHyper};
pub use softmax::{ensemble_stats, entropy, softmax, softmax_xent, EnsembleStats};
pub use svgd::{median, median_bandwidth, pairwise_sqdist, rbf_kernel, svgd_direction};

use crate::error::{BellaError, Result};
use crate::ops::named::{HostData, HostTensor, Named, NamedInputs};

/// A float64 tensor: shape and row-major values. The oracle's outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor64 {
    /// Dimensions, outermost first (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// Row-major values, `shape.iter().product()` of them.
    pub data: Vec<f64>,
}

impl Tensor64 {
    /// A tensor of `shape` holding `data` (the caller keeps the two consistent).
    pub fn new(shape: &[usize], data: Vec<f64>) -> Self {
        Tensor64 {
            shape: shape.to_vec(),
            data,
        }
    }

    /// The values rounded to f32, as a host tensor of the same shape.
    pub fn to_host_f32(&self) -> HostTensor {
        HostTensor::float(&self.shape, self.data.iter().map(|&v| v as f32).collect())
    }
}

/// Run op `op` on named inputs (the names of DESIGN.md, as for `bella op`) and return its
/// outputs rounded to f32, with the names, order and shapes of
/// [`run_named`](crate::ops::named::run_named).
pub fn run(op: &str, inputs: &Named) -> Result<Vec<(String, HostTensor)>> {
    Ok(run_f64(op, inputs)?
        .into_iter()
        .map(|(name, t)| (name, t.to_host_f32()))
        .collect())
}

/// Like [`run`], but the outputs stay float64 (what the tests compare against).
pub fn run_f64(op: &str, inputs: &Named) -> Result<Vec<(String, Tensor64)>> {
    let i = Reader {
        named: NamedInputs { op, map: inputs },
    };
    let out = |name: &str, shape: &[usize], data: Vec<f64>| {
        (name.to_string(), Tensor64::new(shape, data))
    };
    match op {
        "lora_forward" | "lora_backward" => {
            let (x, w, a, b) = (
                i.tensor("x")?,
                i.tensor("weight")?,
                i.tensor("lora_a")?,
                i.tensor("lora_b")?,
            );
            let s = lora_shape(op, &x, &w, &a, &b)?;
            let scale = i.finite_scalar("scale")?;
            let (k, m, n_in, n_out, r) = (s.k, s.m, s.i, s.o, s.r);
            if op == "lora_forward" {
                let bias = i.optional_tensor("bias")?;
                if let Some(bias) = &bias {
                    expect_shape(op, "bias", bias, &[n_out])?;
                }
                let bias = bias.as_ref().map(|b| b.data.as_slice());
                let (y, h) = lora_forward(&s, &x.data, &w.data, bias, &a.data, &b.data, scale);
                Ok(vec![out("y", &[k, m, n_out], y), out("h", &[k, m, r], h)])
            } else {
                let (dy, h) = (i.tensor("dy")?, i.tensor("h")?);
                expect_shape(op, "dy", &dy, &[k, m, n_out])?;
                expect_shape(op, "h", &h, &[k, m, r])?;
                let g = lora_backward(
                    &s, &dy.data, &x.data, &w.data, &a.data, &b.data, &h.data, scale,
                );
                let dx_shape: Vec<usize> = if s.x_shared {
                    vec![m, n_in]
                } else {
                    vec![k, m, n_in]
                };
                Ok(vec![
                    out("dx", &dx_shape, g.dx),
                    out("d_lora_a", &[k, r, n_in], g.d_lora_a),
                    out("d_lora_b", &[k, n_out, r], g.d_lora_b),
                ])
            }
        }
        "matmul" => {
            let (a, b) = (i.tensor("a")?, i.tensor("b")?);
            let (trans_a, trans_b) = (i.named.flag("trans_a")?, i.named.flag("trans_b")?);
            let alpha = i.finite_scalar("alpha")?;
            let s = matmul_shape(&a, &b, trans_a, trans_b)?;
            let c = matmul(&s, &a.data, &b.data, alpha);
            let shape: Vec<usize> = match s.batched_output {
                true => vec![s.batch, s.m, s.n],
                false => vec![s.m, s.n],
            };
            Ok(vec![out("c", &shape, c)])
        }
        "pairwise_sqdist" => {
            let (theta, k, d) = i.particles()?;
            Ok(vec![out(
                "sqdist",
                &[k, k],
                pairwise_sqdist(&theta.data, k, d),
            )])
        }
        "rbf_kernel" => {
            let (theta, k, d) = i.particles()?;
            let given = i.named.opt_scalar("bandwidth")?;
            if let Some(h) = given {
                expect_bandwidth(op, h)?;
            }
            let (kernel, h) = rbf_kernel(&theta.data, k, d, given);
            Ok(vec![
                out("kernel", &[k, k], kernel),
                out("bandwidth", &[1], vec![h]),
            ])
        }
        "svgd_direction" => {
            let (theta, k, d) = i.particles()?;
            let (score, kernel) = (i.tensor("score")?, i.tensor("kernel")?);
            expect_shape(op, "score", &score, &[k, d])?;
            expect_shape(op, "kernel", &kernel, &[k, k])?;
            let h = i.named.scalar("bandwidth")?;
            expect_bandwidth(op, h)?;
            let phi = svgd_direction(&theta.data, &score.data, &kernel.data, k, d, h);
            Ok(vec![out("phi", &[k, d], phi)])
        }
        "adamw_step" => {
            let hp = i.adamw_hyper()?;
            let param = i.nonempty_tensor("param")?;
            let shape = param.shape.clone();
            let (grad, m, v) = (i.tensor("grad")?, i.tensor("m")?, i.tensor("v")?);
            expect_shape(op, "grad", &grad, &shape)?;
            expect_shape(op, "m", &m, &shape)?;
            expect_shape(op, "v", &v, &shape)?;
            let (p, m, v) = adamw_step(&param.data, &grad.data, &m.data, &v.data, &hp);
            Ok(vec![
                out("param", &shape, p),
                out("m", &shape, m),
                out("v", &shape, v),
            ])
        }
        "svgd_step" => {
            let (theta, k, d) = i.particles()?;
            let (score, kernel) = (i.tensor("score")?, i.tensor("kernel")?);
            let (m, v) = (i.tensor("m")?, i.tensor("v")?);
            for (name, t) in [("score", &score), ("m", &m), ("v", &v)] {
                expect_shape(op, name, t, &[k, d])?;
            }
            expect_shape(op, "kernel", &kernel, &[k, k])?;
            let h = i.named.scalar("bandwidth")?;
            expect_bandwidth(op, h)?;
            let grad_scale = i.finite_scalar("grad_scale")?;
            let hp = i.adamw_hyper()?;
            let phi = svgd_direction(&theta.data, &score.data, &kernel.data, k, d, h);
            let g: Vec<f64> = phi.iter().map(|&p| grad_scale * p).collect();
            let (t, m, v) = adamw_step(&theta.data, &g, &m.data, &v.data, &hp);
            Ok(vec![
                out("theta", &[k, d], t),
                out("m", &[k, d], m),
                out("v", &[k, d], v),
            ])
        }
        "relu_forward" | "gelu_forward" => {
            let x = i.nonempty_tensor("x")?;
            let y = match op {
                "relu_forward" => relu_forward(&x.data),
                _ => gelu_forward(&x.data),
            };
            Ok(vec![out("y", &x.shape, y)])
        }
        "relu_backward" | "gelu_backward" => {
            let (x, dy) = (i.nonempty_tensor("x")?, i.tensor("dy")?);
            expect_shape(op, "dy", &dy, &x.shape)?;
            let dx = match op {
                "relu_backward" => relu_backward(&x.data, &dy.data),
                _ => gelu_backward(&x.data, &dy.data),
            };
            Ok(vec![out("dx", &x.shape, dx)])
        }
        "softmax_xent" => {
            let (logits, k, m, c) = i.logits()?;
            let labels = i.named.labels("labels")?;
            if labels.len() != m {
                return Err(BellaError::shape(
                    op,
                    "labels",
                    format!("[{m}]"),
                    &[labels.len()],
                ));
            }
            if let Some((at, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= c) {
                return Err(BellaError::invalid(format!(
                    "{op}: label {l} at position {at} is out of range for C = {c} classes"
                )));
            }
            let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
            let (loss, dlogits) = softmax_xent(&logits.data, &labels, k, m, c);
            Ok(vec![
                out("loss", &[k], loss),
                out("dlogits", &[k, m, c], dlogits),
            ])
        }
        "ensemble_stats" => {
            let (logits, k, m, c) = i.logits()?;
            let s = ensemble_stats(&logits.data, k, m, c);
            Ok(vec![
                out("probs", &[m, c], s.probs),
                out("entropy", &[m], s.entropy),
                out("expected_entropy", &[m], s.expected_entropy),
                out("mutual_info", &[m], s.mutual_info),
            ])
        }
        "axpby" => {
            let (x, y) = (i.nonempty_tensor("x")?, i.tensor("y")?);
            expect_shape(op, "y", &y, &x.shape)?;
            let (alpha, beta) = (i.finite_scalar("alpha")?, i.finite_scalar("beta")?);
            Ok(vec![out(
                "out",
                &x.shape,
                axpby(alpha, &x.data, beta, &y.data),
            )])
        }
        other => Err(BellaError::Unknown {
            what: "op",
            name: other.to_string(),
        }),
    }
}

/// Named inputs read as float64 tensors, with the checks every op needs.
struct Reader<'a> {
    named: NamedInputs<'a>,
}

impl Reader<'_> {
    /// Input `name` as a float64 tensor (integers converted).
    fn tensor(&self, name: &str) -> Result<Tensor64> {
        let t = self.named.get(name)?;
        let data = match &t.data {
            HostData::Float(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::Half(..) => t.to_f32().into_iter().map(f64::from).collect(),
            HostData::Int(v) => v.iter().map(|&x| x as f64).collect(),
        };
        Ok(Tensor64::new(&t.shape, data))
    }
    fn optional_tensor(&self, name: &str) -> Result<Option<Tensor64>> {
        match self.named.map.contains_key(name) {
            true => self.tensor(name).map(Some),
            false => Ok(None),
        }
    }
    fn nonempty_tensor(&self, name: &str) -> Result<Tensor64> {
        let t = self.tensor(name)?;
        if t.data.is_empty() {
            return Err(BellaError::shape(
                self.named.op,
                name,
                "a non-empty tensor",
                &t.shape,
            ));
        }
        Ok(t)
    }
    fn finite_scalar(&self, name: &str) -> Result<f64> {
        let v = self.named.scalar(name)?;
        if !v.is_finite() {
            return Err(BellaError::invalid(format!(
                "{}: `{name}` must be finite, got {v}",
                self.named.op
            )));
        }
        Ok(v)
    }
    /// AdamW's hyper-parameters and step: finite, betas in `[0, 1)`, step ≥ 1.
    fn adamw_hyper(&self) -> Result<AdamWHyper> {
        let hp = AdamWHyper {
            lr: self.finite_scalar("lr")?,
            beta1: self.finite_scalar("beta1")?,
            beta2: self.finite_scalar("beta2")?,
            eps: self.finite_scalar("eps")?,
            weight_decay: self.finite_scalar("weight_decay")?,
            step: self.named.step()?,
        };
        if !(0.0..1.0).contains(&hp.beta1) || !(0.0..1.0).contains(&hp.beta2) {
            return Err(BellaError::invalid(format!(
                "{}: betas must be in [0, 1), got {} and {}",
                self.named.op, hp.beta1, hp.beta2
            )));
        }
        Ok(hp)
    }
    /// `theta`, a non-empty `[K, D]`; returns it with K and D.
    fn particles(&self) -> Result<(Tensor64, usize, usize)> {
        let t = self.nonempty_tensor("theta")?;
        match *t.shape {
            [k, d] => Ok((t, k, d)),
            _ => Err(BellaError::shape(
                self.named.op,
                "theta",
                "[K, D]",
                &t.shape,
            )),
        }
    }
    /// `logits`, a non-empty `[K, M, C]`; returns it with K, M and C.
    fn logits(&self) -> Result<(Tensor64, usize, usize, usize)> {
        let t = self.nonempty_tensor("logits")?;
        match *t.shape {
            [k, m, c] => Ok((t, k, m, c)),
            _ => Err(BellaError::shape(
                self.named.op,
                "logits",
                "[K, M, C]",
                &t.shape,
            )),
        }
    }
}

fn expect_shape(op: &str, name: &str, t: &Tensor64, want: &[usize]) -> Result<()> {
    if t.shape != want {
        return Err(BellaError::shape(op, name, format!("{want:?}"), &t.shape));
    }
    Ok(())
}

fn expect_bandwidth(op: &str, h: f64) -> Result<()> {
    if !(h > 0.0 && h.is_finite()) {
        return Err(BellaError::invalid(format!(
            "{op}: bandwidth must be positive and finite, got {h}"
        )));
    }
    Ok(())
}

/// The layer sizes of `lora_forward`/`lora_backward`, checked against each other.
fn lora_shape(
    op: &str,
    x: &Tensor64,
    w: &Tensor64,
    a: &Tensor64,
    b: &Tensor64,
) -> Result<LoraShape> {
    let [o, i] = *w.shape else {
        return Err(BellaError::shape(op, "weight", "[O, I]", &w.shape));
    };
    let [k, r, _] = *a.shape else {
        return Err(BellaError::shape(op, "lora_a", "[K, r, I]", &a.shape));
    };
    expect_shape(op, "lora_a", a, &[k, r, i])?;
    expect_shape(op, "lora_b", b, &[k, o, r])?;
    let (m, x_shared) = match *x.shape {
        [m, xi] if xi == i => (m, true),
        [xk, m, xi] if xk == k && xi == i => (m, false),
        _ => {
            return Err(BellaError::shape(
                op,
                "x",
                format!("[M, {i}] or [{k}, M, {i}]"),
                &x.shape,
            ))
        }
    };
    if [k, m, i, o, r].contains(&0) {
        return Err(BellaError::invalid(format!(
            "{op}: every size must be ≥ 1 (K={k}, M={m}, I={i}, O={o}, r={r})"
        )));
    }
    Ok(LoraShape {
        k,
        m,
        i,
        o,
        r,
        x_shared,
    })
}

/// The sizes of `matmul`, checked: each operand `[m, n]` (shared) or `[Kb, m, n]`.
fn matmul_shape(a: &Tensor64, b: &Tensor64, trans_a: bool, trans_b: bool) -> Result<MatmulShape> {
    let split = |name: &str, t: &Tensor64| -> Result<(Option<usize>, usize, usize)> {
        match *t.shape {
            [rows, cols] => Ok((None, rows, cols)),
            [batch, rows, cols] => Ok((Some(batch), rows, cols)),
            _ => Err(BellaError::shape(
                "matmul",
                name,
                "[m, n] or [Kb, m, n]",
                &t.shape,
            )),
        }
    };
    let (batch_a, rows_a, cols_a) = split("a", a)?;
    let (batch_b, rows_b, cols_b) = split("b", b)?;
    let (m, inner_a) = if trans_a {
        (cols_a, rows_a)
    } else {
        (rows_a, cols_a)
    };
    let (inner_b, n) = if trans_b {
        (cols_b, rows_b)
    } else {
        (rows_b, cols_b)
    };
    if inner_a != inner_b {
        return Err(BellaError::invalid(format!(
            "matmul: inner dimensions differ: op(a) is [{m}, {inner_a}], op(b) is [{inner_b}, {n}]"
        )));
    }
    let batch = match (batch_a, batch_b) {
        (Some(x), Some(y)) if x != y => {
            return Err(BellaError::shape(
                "matmul",
                "b",
                format!("batch {x} like `a`"),
                &b.shape,
            ))
        }
        (Some(x), _) | (None, Some(x)) => x,
        (None, None) => 1,
    };
    if [batch, m, n, inner_a].contains(&0) {
        return Err(BellaError::invalid(format!(
            "matmul: empty product (batch {batch}, m {m}, n {n}, inner {inner_a})"
        )));
    }
    Ok(MatmulShape {
        batch,
        m,
        n,
        inner: inner_a,
        trans_a,
        trans_b,
        a_batched: batch_a.is_some(),
        b_batched: batch_b.is_some(),
        batched_output: batch_a.is_some() || batch_b.is_some(),
    })
}
