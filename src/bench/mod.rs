//! Internal: benchmark helpers for `bella bench` and `benches/`, no stability promise.
//!
//! `bella bench`: timings per op, shape and backend, against ceilings measured in the same
//! run, and the baselines the library exists to beat.
//!
//! - [`cases`]: what runs (shapes, counted FLOPs and bytes); shared with `benches/ops.rs`.
//! - [`timer`], [`mod@measure`]: how it is timed (warm-up, repeated synchronised runs, median).
//! - [`roofline`]: copy bandwidth and large-GEMM ceilings, and each op's share of them.
//! - [`baselines`]: fused `lora_forward` vs the per-particle loop and the merged ensemble;
//!   the SVGD step vs its memory floor; (CUDA) cuBLAS for the base product.
//! - [`report`], `plot`: JSON, the table, the SVG chart.

pub mod baselines;
pub mod cases;
#[cfg(feature = "cuda")]
pub mod cublas;
pub mod machine;
pub mod measure;
#[cfg(feature = "cli")]
pub mod plot;
pub mod report;
pub mod roofline;
#[cfg(any(feature = "cuda", feature = "ptx-sim"))]
pub mod tensor_core;
pub mod timer;

use crate::backend::{self, Backend, BackendKind};
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::rng::Rng;
use baselines::Comparison;
use cases::{Scale, BENCH_OPS};
use measure::{measure, Budget};
use report::{BackendReport, OpResult, Report};
use std::sync::Arc;
use timer::{op_timer, Timer, WallClock};

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    pub backends: Vec<BackendKind>,
    /// Ops from [`BENCH_OPS`]; the comparisons run with `lora_forward` and `svgd_step`.
    pub ops: Vec<String>,
    pub quick: bool,
    pub seed: u64,
    /// The shapes: `None` = each backend's own ([`Scale::for_backend`]).
    pub scale: Option<Scale>,
    /// The command line, recorded in the report.
    pub command: String,
    /// The operand dtype of the ops that take 16-bit operands ([`cases::HALF_OPS`]); with
    /// bf16/f16 only those are timed.
    pub dtype: DType,
}

impl Options {
    pub fn check(&self) -> Result<()> {
        match self.ops.iter().find(|o| !BENCH_OPS.contains(&o.as_str())) {
            Some(o) => Err(BellaError::Unknown {
                what: "bench op",
                name: o.clone(),
            }),
            None => Ok(()),
        }
    }
    fn wants(&self, op: &str) -> bool {
        self.ops.iter().any(|o| o == op)
    }
}

/// The targets (ratios measured in one run), for the CPU backend at CPU sizes.
pub mod targets {
    pub const FUSED_VS_LOOP_SHARED_X: f64 = 5.0;
    pub const FUSED_VS_MERGED_ENSEMBLE: f64 = 5.0;
    pub const FUSED_VS_LOOP_PER_PARTICLE_X: f64 = 1.0;
    pub const SVGD_STEP_VS_MEMORY_FLOOR: f64 = 0.5;
    /// GPU: fused `lora_forward` (shared x, K=8) within 1.25× of cuBLAS's base product alone.
    pub const FUSED_VS_CUBLAS_BASE_PRODUCT: f64 = 1.0 / 1.25;
}

fn budget(scale: Scale, quick: bool) -> Budget {
    match scale {
        // Interpreters and software rasterisers: a few runs are all they can afford.
        Scale::Small => Budget {
            warmup_runs: 1,
            min_runs: 1,
            max_runs: 3,
            min_time: std::time::Duration::from_millis(300),
        },
        _ if quick => Budget::quick(),
        _ => Budget::full(),
    }
}

/// Measure everything `opts` asks for. `progress` receives each table line as it is measured.
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    opts.check()?;
    let mut report = Report {
        bella_version: env!("CARGO_PKG_VERSION").into(),
        date: machine::utc_now(),
        command: opts.command.clone(),
        quick: opts.quick,
        machine: machine::Machine::describe(),
        backends: Vec::new(),
        results: Vec::new(),
        comparisons: Vec::new(),
        notes: Vec::new(),
    };
    for &kind in &opts.backends {
        let be = match backend::open(kind) {
            Ok(b) => b,
            Err(e) => {
                let b = BackendReport {
                    name: kind.name().into(),
                    device: String::new(),
                    ceilings: None,
                    skipped: Some(e.to_string()),
                };
                progress(&format!("\n{}", report::backend_header(&b)));
                report.notes.push(format!("{kind}: not measured ({e})"));
                report.backends.push(b);
                continue;
            }
        };
        run_backend(opts, &be, &mut report, progress)?;
    }
    Ok(report)
}

fn run_backend(
    opts: &Options,
    be: &Arc<dyn Backend>,
    report: &mut Report,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let kind = be.kind();
    let scale = opts.scale.unwrap_or(Scale::for_backend(kind));
    let budget = budget(scale, opts.quick);
    let ceilings = roofline::measure_ceilings(be, &budget, scale, opts.quick)?;
    let header = BackendReport {
        name: kind.name().into(),
        device: be.describe(),
        ceilings: Some(ceilings.clone()),
        skipped: None,
    };
    progress(&format!("\n{}", report::backend_header(&header)));
    progress(&report::row_header());
    report.backends.push(header);

    let mut rng = Rng::new(opts.seed);
    let wall = WallClock::new(be.clone());
    let device_clock = op_timer(be);
    for op in &opts.ops {
        for case in cases::cases_in(op, scale, opts.quick, opts.dtype) {
            let mut body = case.prepare(be, &mut rng)?;
            let timer: &dyn Timer = if case.single_submission {
                device_clock.as_ref()
            } else {
                &wall
            };
            let stats = measure(timer, &budget, &mut body)?;
            drop(body);
            let t = stats.median_s;
            let r = OpResult {
                op: case.op.into(),
                backend: kind.name().into(),
                shape: case.shape.clone(),
                clock: timer.clock().into(),
                flops: case.work.flops,
                bytes: case.work.bytes,
                gflops: case.work.flops / t / 1e9,
                gbs: case.work.bytes / t / 1e9,
                bound: ceilings.bound(&case.work).into(),
                roofline_pct: ceilings.roofline_pct(&case.work, t),
                stats,
            };
            progress(&report::row(&r));
            report.results.push(r);
        }
    }

    let cpu_targets = kind == BackendKind::Cpu;
    let t = |v: f64| cpu_targets.then_some(v);
    // The comparisons are f32 baselines (the tensor-core one pairs both dtypes itself).
    let f32_run = opts.dtype == DType::F32;
    if opts.wants("lora_forward") && f32_run {
        for shared in [true, false] {
            let shape = cases::target_lora_shape(scale, shared);
            let targets = if shared {
                (
                    t(targets::FUSED_VS_LOOP_SHARED_X),
                    t(targets::FUSED_VS_MERGED_ENSEMBLE),
                )
            } else {
                (t(targets::FUSED_VS_LOOP_PER_PARTICLE_X), None)
            };
            let cs = baselines::lora_forward_baselines(be, &budget, shape, targets)?;
            report.comparisons.extend(cs);
        }
        if kind == BackendKind::Cuda {
            match cublas_anchor(be, &budget, scale) {
                Ok(c) => report.comparisons.push(c),
                Err(e) => report
                    .notes
                    .push(format!("cuBLAS anchor not measured: {e}")),
            }
        }
    }
    if opts.wants("lora_forward") && opts.dtype.is_half() {
        for shared in [true, false] {
            let shape = cases::target_lora_shape(scale, shared);
            let c = baselines::half_lora_forward_vs_widened(be, &budget, shape, opts.dtype)?;
            report.comparisons.push(c);
        }
    }
    if opts.wants("matmul") && kind == BackendKind::Cuda {
        match tensor_core_comparisons(&budget, scale) {
            Ok(cs) => report.comparisons.extend(cs),
            Err(e) => report
                .notes
                .push(format!("tensor-core GEMM not measured: {e}")),
        }
    }
    if opts.wants("svgd_step") && f32_run {
        let (k, d) = cases::target_svgd_shape(scale);
        let c = baselines::svgd_step_vs_floor(
            be,
            &budget,
            scale,
            k,
            d,
            t(targets::SVGD_STEP_VS_MEMORY_FLOOR),
        )?;
        report.comparisons.push(c);
    }
    Ok(())
}

/// Fused `lora_forward` (shared x) on the CUDA backend vs cuBLAS's base product alone.
#[cfg(feature = "cuda")]
fn cublas_anchor(be: &Arc<dyn Backend>, budget: &Budget, scale: Scale) -> Result<Comparison> {
    let s = cases::target_lora_shape(scale, true);
    let anchor = cublas::base_product(s.m, s.i, s.o, budget)?;
    let fused = cases::cases("lora_forward", scale, false).remove(0);
    let mut body = fused.prepare(be, &mut Rng::new(13))?;
    let ours = measure(&WallClock::new(be.clone()), budget, &mut body)?;
    Ok(Comparison {
        name: "fused_vs_cublas_base_product".into(),
        backend: be.kind().name().into(),
        shape: s.label(),
        ratio: anchor.median_s / ours.median_s,
        ours_ms: ours.median_s * 1e3,
        baseline_ms: anchor.median_s * 1e3,
        target: Some(targets::FUSED_VS_CUBLAS_BASE_PRODUCT),
        note: "cuBLAS SGEMM for x·Wᵀ alone (CUDA events) vs our fused K-particle forward (wall clock, synchronised)".into(),
    })
}

#[cfg(not(feature = "cuda"))]
fn cublas_anchor(_: &Arc<dyn Backend>, _: &Budget, _: Scale) -> Result<Comparison> {
    Err(BellaError::unavailable(
        "cuda",
        "built without the `cuda` feature",
    ))
}

/// The tensor-core GEMMs (bf16, f16) against the f32 matmul of the same shape, on a CUDA
/// backend of their own (the launch function on its concrete type, no op layer in between).
#[cfg(feature = "cuda")]
fn tensor_core_comparisons(budget: &Budget, scale: Scale) -> Result<Vec<Comparison>> {
    use crate::backend::ptx::gemm_mma::HalfType;
    let cuda = crate::backend::cuda::open_cuda()?;
    let n = tensor_core::size(scale);
    [HalfType::Bf16, HalfType::F16]
        .into_iter()
        .map(|dt| tensor_core::tensor_core_vs_f32_gemm(cuda.clone(), dt, n, budget))
        .collect()
}

#[cfg(not(feature = "cuda"))]
fn tensor_core_comparisons(_: &Budget, _: Scale) -> Result<Vec<Comparison>> {
    Err(BellaError::unavailable(
        "cuda",
        "built without the `cuda` feature",
    ))
}

/// Every backend that opens here, for `--backend all` (the simulator only when named).
pub fn available_backends() -> Vec<BackendKind> {
    BackendKind::ALL
        .into_iter()
        .filter(|k| *k != BackendKind::PtxSim && backend::open(*k).is_ok())
        .collect()
}
