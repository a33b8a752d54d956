//! The benchmark cases: per op, the shapes, the counted work (FLOPs and bytes moved, the
//! least each op must read and write once), and how to run it once on a backend.
//! `bella bench` and `benches/ops.rs` (criterion) use the same list.

use crate::backend::{AdamW, Backend, BackendKind};
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::{self, Adapter};
use crate::rng::Rng;
use crate::tensor::{OutSlot, Tensor};
use std::sync::Arc;

const F32: f64 = 4.0;

/// A body that runs the case once; it owns its inputs (already on the device).
pub type RunOnce = Box<dyn FnMut() -> Result<()>>;
pub(crate) type Build = Box<dyn Fn(&Arc<dyn Backend>, &mut Rng) -> Result<RunOnce>>;

/// How big the cases are: interpreters (the PTX simulator) and software rasterisers (wgpu
/// on lavapipe) get small ones, CPUs medium ones, GPUs big ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Small,
    Cpu,
    Gpu,
}

impl std::str::FromStr for Scale {
    type Err = crate::error::BellaError;
    /// `small`, `cpu` or `gpu`.
    fn from_str(s: &str) -> Result<Scale> {
        match s {
            "small" => Ok(Scale::Small),
            "cpu" => Ok(Scale::Cpu),
            "gpu" => Ok(Scale::Gpu),
            _ => Err(crate::error::BellaError::Unknown {
                what: "scale (small, cpu, gpu)",
                name: s.to_string(),
            }),
        }
    }
}

impl Scale {
    /// GPU sizes for CUDA and for wgpu on a hardware adapter; small ones for wgpu on a
    /// software rasteriser (lavapipe runs a 768³ GEMM at about 0.2 GFLOP/s on 2 cores).
    pub fn for_backend(kind: BackendKind) -> Scale {
        match kind {
            BackendKind::PtxSim => Scale::Small,
            BackendKind::Cpu => Scale::Cpu,
            BackendKind::Cuda => Scale::Gpu,
            BackendKind::Wgpu => {
                #[cfg(feature = "wgpu")]
                if crate::backend::wgpu::has_real_gpu() {
                    return Scale::Gpu;
                }
                Scale::Small
            }
        }
    }
}

/// Counted work of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
}

pub struct OpCase {
    pub op: &'static str,
    pub shape: String,
    pub work: Work,
    /// One op call in one device submission, so a device clock may time it alone.
    pub single_submission: bool,
    build: Build,
}

impl OpCase {
    /// A case of `op` on `shape` doing `work`, built by `build` (one submission).
    #[cfg(any(feature = "cuda", feature = "ptx-sim"))]
    pub(crate) fn new(op: &'static str, shape: String, work: Work, build: Build) -> Self {
        OpCase {
            op,
            shape,
            work,
            single_submission: true,
            build,
        }
    }

    /// Upload random inputs and return the body that runs the op on them.
    pub fn prepare(&self, be: &Arc<dyn Backend>, rng: &mut Rng) -> Result<RunOnce> {
        (self.build)(be, rng)
    }
}

/// Ops `bella bench --op` accepts: DESIGN.md's ops plus the composite SVGD step, three ops
/// (`svgd_step`) or the fused op (`svgd_step_fused`), both after `rbf_kernel`.
pub const BENCH_OPS: [&str; 15] = [
    "lora_forward",
    "lora_backward",
    "matmul",
    "pairwise_sqdist",
    "rbf_kernel",
    "svgd_direction",
    "adamw_step",
    "svgd_step",
    "svgd_step_fused",
    "relu_forward",
    "relu_backward",
    "gelu_forward",
    "gelu_backward",
    "softmax_xent",
    "ensemble_stats",
];

/// Random values in [-a, a) on the device (uniform: cheap to draw for big tensors).
pub fn random(be: &dyn Backend, rng: &mut Rng, shape: &[usize], a: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    be.upload(shape, &rng.uniform_vec(n, -a, a))
}

/// One LoRA layer call: K particles of rank r on a `[O, I]` weight, M rows of input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraShape {
    pub k: usize,
    pub m: usize,
    pub i: usize,
    pub o: usize,
    pub r: usize,
    pub x_shared: bool,
}

impl LoraShape {
    pub fn label(&self) -> String {
        let x = if self.x_shared {
            "shared x"
        } else {
            "per-particle x"
        };
        format!(
            "K={} M={} I={} O={} r={} {x}",
            self.k, self.m, self.i, self.o, self.r
        )
    }
    fn x_rows(&self) -> usize {
        if self.x_shared {
            self.m
        } else {
            self.k * self.m
        }
    }
    /// `x Wᵀ` once for a shared x (K times otherwise), plus `h = x Aᵀ` and `s h Bᵀ` per particle.
    pub fn forward_work(&self) -> Work {
        let (k, m, i, o, r) = (
            self.k as f64,
            self.m as f64,
            self.i as f64,
            self.o as f64,
            self.r as f64,
        );
        let base = 2.0 * self.x_rows() as f64 * i * o;
        let lora = k * (2.0 * m * i * r + 2.0 * m * r * o);
        let read = self.x_rows() as f64 * i + o * i + k * (r * i + o * r);
        let write = k * m * (o + r);
        Work {
            flops: base + lora,
            bytes: F32 * (read + write),
        }
    }
    /// [`Self::forward_work`] with `x`, `W`, `A`, `B` in `dtype` (outputs f32).
    pub fn forward_work_in(&self, dtype: DType) -> Work {
        let (k, i, o, r) = (self.k as f64, self.i as f64, self.o as f64, self.r as f64);
        let operands = self.x_rows() as f64 * i + o * i + k * (r * i + o * r);
        let w = self.forward_work();
        Work {
            bytes: w.bytes - (F32 - dtype.size_bytes() as f64) * operands,
            ..w
        }
    }
    /// `g = dy B`, `dB = s dyᵀ h`, `dA = s gᵀ x`, `dx = dy W + s g A` (summed for a shared x).
    pub fn backward_work(&self) -> Work {
        let (k, m, i, o, r) = (
            self.k as f64,
            self.m as f64,
            self.i as f64,
            self.o as f64,
            self.r as f64,
        );
        let adapters = k * (2.0 * m * o * r * 2.0 + 2.0 * m * r * i * 2.0);
        let dx_base = 2.0 * self.x_rows() as f64 * o * i;
        let read = k * m * o + self.x_rows() as f64 * i + o * i + k * (r * i + o * r) + k * m * r;
        let write = self.x_rows() as f64 * i + k * (r * i + o * r);
        Work {
            flops: adapters + dx_base,
            bytes: F32 * (read + write),
        }
    }
    /// [`Self::backward_work`] with `x`, `W`, `A`, `B`, `dy` and `h` in `dtype` (outputs f32).
    pub fn backward_work_in(&self, dtype: DType) -> Work {
        let (k, i, o, r) = (self.k as f64, self.i as f64, self.o as f64, self.r as f64);
        let m = self.m as f64;
        // x, W, the adapters, and (16-bit operands) dy and h.
        let operands = self.x_rows() as f64 * i + o * i + k * (r * i + o * r) + k * m * (o + r);
        let w = self.backward_work();
        Work {
            bytes: w.bytes - (F32 - dtype.size_bytes() as f64) * operands,
            ..w
        }
    }
}

/// Inputs of one LoRA layer on the device.
pub struct LoraInputs {
    pub x: Tensor,
    pub weight: Tensor,
    pub lora_a: Tensor,
    pub lora_b: Tensor,
    pub scale: f32,
}

impl LoraInputs {
    /// [`Self::random`] with `x`, `weight`, `lora_a`, `lora_b` converted to `dtype` on the
    /// device.
    pub fn random_in(be: &dyn Backend, rng: &mut Rng, s: &LoraShape, dtype: DType) -> Result<Self> {
        let f = Self::random(be, rng, s)?;
        Ok(LoraInputs {
            x: ops::cast(be, &f.x, dtype)?,
            weight: ops::cast(be, &f.weight, dtype)?,
            lora_a: ops::cast(be, &f.lora_a, dtype)?,
            lora_b: ops::cast(be, &f.lora_b, dtype)?,
            scale: f.scale,
        })
    }
    pub fn random(be: &dyn Backend, rng: &mut Rng, s: &LoraShape) -> Result<Self> {
        let x_shape = if s.x_shared {
            vec![s.m, s.i]
        } else {
            vec![s.k, s.m, s.i]
        };
        Ok(LoraInputs {
            x: random(be, rng, &x_shape, 1.0)?,
            weight: random(be, rng, &[s.o, s.i], 0.05)?,
            lora_a: random(be, rng, &[s.k, s.r, s.i], 0.05)?,
            lora_b: random(be, rng, &[s.k, s.o, s.r], 0.05)?,
            scale: 2.0,
        })
    }
    pub fn adapter(&self) -> Result<Adapter<'_>> {
        Adapter::from_tensors("lora_forward", &self.lora_a, &self.lora_b)
    }
}

/// The shape label, with the operands' dtype when it is not f32.
fn label_in(label: String, dtype: DType) -> String {
    match dtype {
        DType::F32 => label,
        d => format!("{label} {d}"),
    }
}

fn lora_forward_case(s: LoraShape, dtype: DType) -> OpCase {
    OpCase {
        op: "lora_forward",
        shape: label_in(s.label(), dtype),
        work: s.forward_work_in(dtype),
        single_submission: true,
        build: Box::new(move |be, rng| {
            let inp = LoraInputs::random_in(be.as_ref(), rng, &s, dtype)?;
            let be = be.clone();
            Ok(Box::new(move || {
                let ad = inp.adapter()?;
                ops::lora_forward(be.as_ref(), &inp.x, &inp.weight, None, &ad, inp.scale).map(drop)
            }))
        }),
    }
}

fn lora_backward_case(s: LoraShape, dtype: DType) -> OpCase {
    OpCase {
        op: "lora_backward",
        shape: label_in(s.label(), dtype),
        work: s.backward_work_in(dtype),
        single_submission: true,
        build: Box::new(move |be, rng| {
            let inp = LoraInputs::random_in(be.as_ref(), rng, &s, dtype)?;
            // 16-bit operands: dy and h in the same type (autocast's backward, every
            // product on 16-bit operands: tensor cores on PTX where the shape allows).
            let dy = random(be.as_ref(), rng, &[s.k, s.m, s.o], 1.0)?;
            let h = random(be.as_ref(), rng, &[s.k, s.m, s.r], 1.0)?;
            let (dy, h) = (
                ops::cast(be.as_ref(), &dy, dtype)?,
                ops::cast(be.as_ref(), &h, dtype)?,
            );
            // The training form: gradients land in a [K, rI + Or] arena.
            let (ri, or) = (s.r * s.i, s.o * s.r);
            let mut grad = be.zeros(&[s.k, ri + or])?;
            let be = be.clone();
            Ok(Box::new(move || {
                let ad = inp.adapter()?;
                let da = OutSlot {
                    offset: 0,
                    stride: ri + or,
                };
                let db = OutSlot {
                    offset: ri,
                    stride: ri + or,
                };
                let (x, w) = (&inp.x, &inp.weight);
                ops::lora_backward_into(
                    be.as_ref(),
                    &dy,
                    x,
                    w,
                    &ad,
                    &h,
                    inp.scale,
                    true,
                    &mut grad,
                    da,
                    db,
                )
                .map(drop)
            }))
        }),
    }
}

/// `c = a bᵀ` for `batch` blocks of `a [m, inner]` and one shared `b [n, inner]`: the dense
/// ensemble forward (`x_k W_kᵀ` without adapters).
pub fn matmul_case(batch: usize, m: usize, n: usize, inner: usize) -> OpCase {
    matmul_case_in(batch, m, n, inner, DType::F32)
}

/// [`matmul_case`] with `a` and `b` in `dtype` (converted on the device; `c` f32).
pub fn matmul_case_in(batch: usize, m: usize, n: usize, inner: usize, dtype: DType) -> OpCase {
    matmul_case_layout(batch, m, n, inner, dtype, false, true)
}

/// `matmul` with `a` stored `[inner, m]` when `trans_a` and `b` stored `[n, inner]` when
/// `trans_b` (`[inner, n]` otherwise); `a · bᵀ` (`trans_b` only) keeps its old label, the
/// others end in `(no trans)`, `(trans_a)` or `(trans_a, trans_b)`.
pub fn matmul_case_layout(
    batch: usize,
    m: usize,
    n: usize,
    inner: usize,
    dtype: DType,
    trans_a: bool,
    trans_b: bool,
) -> OpCase {
    let (bf, mf, nf, kf) = (batch as f64, m as f64, n as f64, inner as f64);
    let operand_bytes = dtype.size_bytes() as f64;
    let layout = match (trans_a, trans_b) {
        (false, true) => "trans_b",
        (false, false) => "(no trans)",
        (true, false) => "(trans_a)",
        (true, true) => "(trans_a, trans_b)",
    };
    OpCase {
        op: "matmul",
        shape: label_in(
            format!("Kb={batch} m={m} n={n} inner={inner} {layout}"),
            dtype,
        ),
        work: Work {
            flops: 2.0 * bf * mf * nf * kf,
            bytes: operand_bytes * (bf * mf * kf + nf * kf) + F32 * bf * mf * nf,
        },
        single_submission: true,
        build: Box::new(move |be, rng| {
            let a_block = if trans_a { [inner, m] } else { [m, inner] };
            let a_shape = if batch == 1 {
                a_block.to_vec()
            } else {
                vec![batch, a_block[0], a_block[1]]
            };
            let a = ops::cast(
                be.as_ref(),
                &random(be.as_ref(), rng, &a_shape, 1.0)?,
                dtype,
            )?;
            let b_shape = if trans_b { [n, inner] } else { [inner, n] };
            let b = ops::cast(
                be.as_ref(),
                &random(be.as_ref(), rng, &b_shape, 1.0)?,
                dtype,
            )?;
            let be = be.clone();
            Ok(Box::new(move || {
                ops::matmul(be.as_ref(), &a, &b, trans_a, trans_b, 1.0).map(drop)
            }))
        }),
    }
}

/// Bytes and FLOPs of the three SVGD ops on `[K, D]` (and the step that chains them).
pub mod svgd_work {
    use super::{Work, F32};
    /// All pairs `i < j`: a difference, a square and an add per element.
    pub fn sqdist(k: usize, d: usize) -> Work {
        let (kf, df) = (k as f64, d as f64);
        Work {
            flops: 3.0 * kf * (kf - 1.0) / 2.0 * df,
            bytes: F32 * (kf * df + kf * kf),
        }
    }
    /// Reads θ and the scores, writes φ: two K×K-by-K×D products and a row scaling.
    pub fn direction(k: usize, d: usize) -> Work {
        let (kf, df) = (k as f64, d as f64);
        Work {
            flops: 4.0 * kf * kf * df + 2.0 * kf * df,
            bytes: F32 * (3.0 * kf * df + kf * kf),
        }
    }
    /// Reads param, grad, m, v; writes param, m, v.
    pub fn adamw(n: usize) -> Work {
        Work {
            flops: 15.0 * n as f64,
            bytes: F32 * 7.0 * n as f64,
        }
    }
    /// `rbf_kernel` + `svgd_direction` + `adamw_step` as three passes: 11 K·D f32 moved
    /// (θ read for the distances; θ, scores read and φ written; θ, φ, m, v read and θ, m, v
    /// written).
    pub fn step(k: usize, d: usize) -> Work {
        let parts = [sqdist(k, d), direction(k, d), adamw(k * d)];
        Work {
            flops: parts.iter().map(|w| w.flops).sum(),
            bytes: parts.iter().map(|w| w.bytes).sum(),
        }
    }
    /// `rbf_kernel` + the fused `svgd_step` op: 8 K·D f32 moved (θ read for the distances;
    /// θ, scores, m, v read and θ, m, v written; φ never stored). The same FLOPs.
    pub fn step_fused(k: usize, d: usize) -> Work {
        let (kf, df) = (k as f64, d as f64);
        Work {
            flops: step(k, d).flops,
            bytes: F32 * (8.0 * kf * df + 2.0 * kf * kf),
        }
    }
}

/// SVGD inputs on the device: particles, their scores, optimizer state.
pub struct SvgdInputs {
    pub theta: Tensor,
    pub score: Tensor,
    pub m: Tensor,
    pub v: Tensor,
}

impl SvgdInputs {
    pub fn random(be: &dyn Backend, rng: &mut Rng, k: usize, d: usize) -> Result<Self> {
        Ok(SvgdInputs {
            theta: random(be, rng, &[k, d], 0.1)?,
            score: random(be, rng, &[k, d], 1.0)?,
            m: random(be, rng, &[k, d], 0.01)?,
            v: be.upload(&[k, d], &rng.uniform_vec(k * d, 0.0, 0.01))?,
        })
    }
}

pub const ADAMW: AdamW = AdamW {
    lr: 1e-3,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weight_decay: 0.01,
    step: 10,
};

/// One SVGD step over the `[K, D]` arena: kernel (median bandwidth), direction, AdamW.
/// φ is fed to AdamW as is: the sign a trainer flips does not change the time.
pub fn svgd_step(be: &dyn Backend, s: &mut SvgdInputs) -> Result<()> {
    let (kernel, h) = ops::rbf_kernel(be, &s.theta, None)?;
    let phi = ops::svgd_direction(be, &s.theta, &s.score, &kernel, h)?;
    ops::adamw_step(be, &mut s.theta, &phi, &mut s.m, &mut s.v, &ADAMW)
}

/// [`svgd_step`] with the fused op: kernel (median bandwidth), then `ops::svgd_step` (φ
/// into AdamW as is, `grad_scale = 1`).
pub fn svgd_step_fused(be: &dyn Backend, s: &mut SvgdInputs) -> Result<()> {
    let (kernel, h) = ops::rbf_kernel(be, &s.theta, None)?;
    ops::svgd_step(
        be,
        &mut s.theta,
        &s.score,
        &kernel,
        h,
        1.0,
        &mut s.m,
        &mut s.v,
        &ADAMW,
    )
}

/// An SVGD op (`pairwise_sqdist`, `rbf_kernel`, `svgd_direction`, `svgd_step`,
/// `svgd_step_fused`) on `k` particles of `d` parameters.
pub fn svgd_case(op: &'static str, k: usize, d: usize) -> OpCase {
    let work = match op {
        "pairwise_sqdist" | "rbf_kernel" => svgd_work::sqdist(k, d),
        "svgd_direction" => svgd_work::direction(k, d),
        "svgd_step_fused" => svgd_work::step_fused(k, d),
        _ => svgd_work::step(k, d),
    };
    OpCase {
        op,
        shape: format!("K={k} D={d}"),
        work,
        // rbf_kernel takes the median on the host between two submissions.
        single_submission: op == "pairwise_sqdist" || op == "svgd_direction",
        build: Box::new(move |be, rng| {
            let mut s = SvgdInputs::random(be.as_ref(), rng, k, d)?;
            let be = be.clone();
            let body: RunOnce = match op {
                "pairwise_sqdist" => {
                    Box::new(move || ops::pairwise_sqdist(be.as_ref(), &s.theta).map(drop))
                }
                "rbf_kernel" => {
                    Box::new(move || ops::rbf_kernel(be.as_ref(), &s.theta, None).map(drop))
                }
                "svgd_direction" => {
                    let (kernel, h) = ops::rbf_kernel(be.as_ref(), &s.theta, None)?;
                    Box::new(move || {
                        ops::svgd_direction(be.as_ref(), &s.theta, &s.score, &kernel, h).map(drop)
                    })
                }
                "svgd_step_fused" => Box::new(move || svgd_step_fused(be.as_ref(), &mut s)),
                _ => Box::new(move || svgd_step(be.as_ref(), &mut s)),
            };
            Ok(body)
        }),
    }
}

fn adamw_case(n: usize) -> OpCase {
    OpCase {
        op: "adamw_step",
        shape: format!("n={n}"),
        work: svgd_work::adamw(n),
        single_submission: true,
        build: Box::new(move |be, rng| {
            let mut s = SvgdInputs::random(be.as_ref(), rng, 1, n)?;
            let be = be.clone();
            Ok(Box::new(move || {
                ops::adamw_step(
                    be.as_ref(),
                    &mut s.theta,
                    &s.score,
                    &mut s.m,
                    &mut s.v,
                    &ADAMW,
                )
            }))
        }),
    }
}

fn activation_case(op: &'static str, n: usize) -> OpCase {
    let backward = op.ends_with("backward");
    // Per element: relu a compare (and a select), gelu about 10 FLOPs forward, 20 backward.
    let flops = match op {
        "relu_forward" | "relu_backward" => 1.0,
        "gelu_forward" => 10.0,
        _ => 20.0,
    };
    OpCase {
        op,
        shape: format!("n={n}"),
        work: Work {
            flops: flops * n as f64,
            bytes: F32 * n as f64 * if backward { 3.0 } else { 2.0 },
        },
        single_submission: true,
        build: Box::new(move |be, rng| {
            let x = random(be.as_ref(), rng, &[n], 3.0)?;
            let dy = random(be.as_ref(), rng, &[n], 1.0)?;
            let be = be.clone();
            Ok(Box::new(move || {
                let b = be.as_ref();
                match op {
                    "relu_forward" => ops::relu_forward(b, &x).map(drop),
                    "relu_backward" => ops::relu_backward(b, &x, &dy).map(drop),
                    "gelu_forward" => ops::gelu_forward(b, &x).map(drop),
                    _ => ops::gelu_backward(b, &x, &dy).map(drop),
                }
            }))
        }),
    }
}

fn softmax_case(op: &'static str, k: usize, m: usize, c: usize) -> OpCase {
    let n = (k * m * c) as f64;
    let xent = op == "softmax_xent";
    OpCase {
        op,
        shape: format!("K={k} M={m} C={c}"),
        // A max, an exp, a sum and a divide per logit (plus a log and a product for entropies).
        work: Work {
            flops: if xent { 5.0 * n } else { 8.0 * n },
            bytes: F32
                * if xent {
                    2.0 * n
                } else {
                    n + 4.0 * (m * c) as f64
                },
        },
        single_submission: true,
        build: Box::new(move |be, rng| {
            let logits = random(be.as_ref(), rng, &[k, m, c], 8.0)?;
            let labels: Vec<u32> = (0..m).map(|_| rng.below(c) as u32).collect();
            let be = be.clone();
            Ok(Box::new(move || {
                if xent {
                    ops::softmax_xent(be.as_ref(), &logits, &labels).map(drop)
                } else {
                    ops::ensemble_stats(be.as_ref(), &logits).map(drop)
                }
            }))
        }),
    }
}

/// The LoRA shape of the targets: K=8 particles, M=256 rows, I=O=1024, r=8 on a CPU;
/// M=I=O=4096, r=16 on a GPU.
pub fn target_lora_shape(scale: Scale, x_shared: bool) -> LoraShape {
    let (k, m, i, o, r) = match scale {
        Scale::Small => (2, 16, 64, 64, 4),
        Scale::Cpu => (8, 256, 1024, 1024, 8),
        Scale::Gpu => (8, 4096, 4096, 4096, 16),
    };
    LoraShape {
        k,
        m,
        i,
        o,
        r,
        x_shared,
    }
}

/// `(K, D)` of the SVGD target: 16 particles of 2^20 parameters (2^22 on a GPU).
pub fn target_svgd_shape(scale: Scale) -> (usize, usize) {
    match scale {
        Scale::Small => (4, 1 << 12),
        Scale::Cpu => (16, 1 << 20),
        Scale::Gpu => (16, 1 << 22),
    }
}

/// The ops `bella bench --dtype bf16|f16` times (those that take 16-bit operands).
pub const HALF_OPS: [&str; 3] = ["lora_forward", "lora_backward", "matmul"];

/// Every case of `op` at this scale (`quick`: smaller shapes where they take long).
pub fn cases(op: &str, scale: Scale, quick: bool) -> Vec<OpCase> {
    cases_in(op, scale, quick, DType::F32)
}

/// [`cases`] with the 16-bit-capable ops' operands in `dtype` ([`HALF_OPS`]; no case of
/// another op for a 16-bit dtype).
pub fn cases_in(op: &str, scale: Scale, quick: bool, dtype: DType) -> Vec<OpCase> {
    if dtype.is_half() && !HALF_OPS.contains(&op) {
        return Vec::new();
    }
    let lora = |shared| {
        let mut s = target_lora_shape(scale, shared);
        if quick && scale == Scale::Cpu {
            s.m = 128;
        }
        s
    };
    let (k, d) = target_svgd_shape(scale);
    let d = if quick && scale != Scale::Small {
        d / 4
    } else {
        d
    };
    let n = k * d;
    let (sk, sm, sc) = match scale {
        Scale::Small => (2, 8, 100),
        Scale::Cpu if quick => (8, 64, 4096),
        Scale::Cpu => (8, 128, 8192),
        Scale::Gpu => (8, 512, 32000),
    };
    match op {
        "lora_forward" => vec![
            lora_forward_case(lora(true), dtype),
            lora_forward_case(lora(false), dtype),
        ],
        "lora_backward" => vec![
            lora_backward_case(lora(true), dtype),
            lora_backward_case(lora(false), dtype),
        ],
        "matmul" => {
            let s = lora(true);
            vec![matmul_case_in(s.k, s.m, s.o, s.i, dtype)]
        }
        "pairwise_sqdist" | "rbf_kernel" | "svgd_direction" | "svgd_step" | "svgd_step_fused" => {
            let op = BENCH_OPS
                .iter()
                .find(|o| **o == op)
                .copied()
                .unwrap_or("svgd_step");
            vec![svgd_case(op, k, d)]
        }
        "adamw_step" => vec![adamw_case(n)],
        "relu_forward" | "relu_backward" | "gelu_forward" | "gelu_backward" => {
            let op = BENCH_OPS
                .iter()
                .find(|o| **o == op)
                .copied()
                .unwrap_or("relu_forward");
            vec![activation_case(op, n)]
        }
        "softmax_xent" => vec![softmax_case("softmax_xent", sk, sm, sc)],
        "ensemble_stats" => vec![softmax_case("ensemble_stats", sk, sm, sc)],
        _ => Vec::new(),
    }
}
