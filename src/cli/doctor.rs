//! `bella doctor`: every op on every backend built in and available (the CPU backend
//! included), against the float64 oracle on random inputs; a table of op, backend, worst
//! norm-wise and element-wise errors, pass/fail.

use bella::backend::{open, BackendKind};
use bella::ops::OP_NAMES;
use bella::rng::Rng;
use bella::testing::{compare_op, Comparison, Sizes, ATOL, RTOL, TOLERANCE};
use bella::Result;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Only this backend (cpu | wgpu | cuda | ptx-sim); default: every one.
    #[arg(long)]
    backend: Option<String>,
    /// Only this op.
    #[arg(long)]
    op: Option<String>,
    /// Random seed (default: fresh).
    #[arg(long)]
    seed: Option<u64>,
    /// Include the largest cases (past the 65535-workgroup limit) on every backend.
    #[arg(long)]
    full: bool,
}

pub fn run(a: DoctorArgs) -> Result<i32> {
    let kinds: Vec<BackendKind> = match &a.backend {
        Some(b) => vec![b.parse()?],
        None => BackendKind::ALL.to_vec(),
    };
    let mma_only = a.op.as_deref().is_some_and(|o| MMA_KERNELS.contains(&o));
    let half_rows =
        a.op.as_deref()
            .is_none_or(|o| matches!(o, "cast" | "matmul" | "lora_forward" | "lora_backward"));
    let ops: Vec<&str> = match &a.op {
        Some(_) if mma_only => Vec::new(),
        Some(o) if o == "cast" => Vec::new(),
        Some(o) if OP_NAMES.contains(&o.as_str()) => vec![o.as_str()],
        Some(o) => {
            return Err(bella::BellaError::Unknown {
                what: "op",
                name: o.clone(),
            })
        }
        None => OP_NAMES.to_vec(),
    };
    let seed = a.seed.unwrap_or_else(Rng::fresh_seed);
    println!("bella doctor — seed {seed}, against the float64 oracle");
    println!(
        "  norm err = ‖out − ref‖/‖ref‖ ≤ {TOLERANCE:.0e}; elem err = max|out − ref|/max|ref| ≤ {RTOL:.0e} (+ {ATOL:.0e} absolute)"
    );
    let mut failed = 0;
    for kind in kinds {
        let be = match open(kind) {
            Ok(b) => b,
            // Asked for by name, a missing backend is a failure; in the overview, a note.
            Err(e) if a.backend.is_some() => return Err(e),
            Err(e) => {
                println!("\n{kind}: not available — {e}");
                continue;
            }
        };
        println!("\n{kind}: {}", be.describe());
        println!(
            "{:<18} {:>8} {:>12} {:>12}  result",
            "op", "outputs", "norm err", "elem err"
        );
        let sizes = if a.full {
            Sizes::Huge
        } else {
            Sizes::for_backend(kind)
        };
        for op in &ops {
            match compare_op(be.as_ref(), op, sizes, seed) {
                Ok(comps) => {
                    let norm = worst(&comps, |c| c.rel_err);
                    let elem = worst(&comps, Comparison::elem_err);
                    let bad: Vec<&Comparison> = comps.iter().filter(|c| !c.passed()).collect();
                    let ok = !comps.is_empty() && bad.is_empty();
                    if !ok {
                        failed += 1;
                    }
                    println!(
                        "{:<18} {:>8} {:>12.3e} {:>12.3e}  {}",
                        op,
                        comps.len(),
                        norm,
                        elem,
                        if ok { "pass" } else { "FAIL" },
                    );
                    if comps.is_empty() {
                        println!("    no cases");
                    }
                    for c in bad {
                        println!("    {}", c.describe());
                    }
                }
                Err(e) => {
                    failed += 1;
                    println!("{op:<18} {:>8} {:>12} {:>12}  FAIL  {e}", "-", "-", "-");
                }
            }
        }
        if half_rows {
            failed += half_precision_rows(be.as_ref(), seed);
        }
        if a.op.is_none() || mma_only {
            failed += tensor_core_rows(kind, a.op.as_deref(), seed);
        }
    }
    if failed > 0 {
        println!("\n{failed} op(s) or kernel(s) failed");
        return Ok(1);
    }
    Ok(0)
}

/// The bf16/f16 checks of `bella::testing::half` on `be`, one row each; returns the failures.
fn half_precision_rows(be: &dyn bella::Backend, seed: u64) -> usize {
    use bella::testing::half;
    type Row<'a> = (&'a str, Box<dyn Fn() -> half::Check + 'a>);
    let rows: [Row; 6] = [
        (
            "cast",
            Box::new(|| {
                half::check_bits_round_trip(be)?;
                half::check_cast(be, seed)
            }),
        ),
        (
            "matmul bf16/f16",
            Box::new(|| {
                half::check_matmul(be, seed).map(|e| {
                    format!(
                        "{} products x 2 dtypes, worst norm err {e:.1e}, each element within \
                         the f32-accumulation bound of the float64 sums",
                        half::products().len()
                    )
                })
            }),
        ),
        (
            "lora_forward bf16/f16",
            Box::new(|| {
                half::check_lora(be, "lora_forward", seed).map(|e| {
                    format!("4 shapes x 2 dtypes against the oracle, worst norm err {e:.1e}")
                })
            }),
        ),
        (
            "lora_backward bf16/f16",
            Box::new(|| {
                half::check_lora(be, "lora_backward", seed).map(|e| {
                    format!("4 shapes x 2 dtypes against the oracle, worst norm err {e:.1e}")
                })
            }),
        ),
        (
            "lora_backward dy16",
            Box::new(|| {
                half::check_lora_backward_rounded(be, seed).map(|e| {
                    format!(
                        "8 shapes x 2 dtypes, dy and h 16-bit (rounded g and dy sum), against \
                         float64 with the same rounding, worst norm err {e:.1e}"
                    )
                })
            }),
        ),
        ("16-bit refusals", Box::new(|| half::check_refusals(be))),
    ];
    let mut failed = 0;
    for (name, check) in rows {
        match check() {
            Ok(what) => println!(
                "{name:<18} {:>8} {:>12} {:>12}  ok    ({what})",
                "-", "-", "-"
            ),
            Err(e) => {
                failed += 1;
                println!("{name:<18} {:>8} {:>12} {:>12}  FAIL  {e}", "-", "-", "-");
            }
        }
    }
    failed
}

/// The tensor-core GEMM kernels on their own (ops::matmul reaches them for bf16/f16 `a · bᵀ`): checked
/// by `bella doctor` where they run.
const MMA_KERNELS: [&str; 2] = ["gemm_mma_bf16", "gemm_mma_f16"];

/// Built without a PTX backend: nothing to check.
#[cfg(not(any(feature = "cuda", feature = "ptx-sim")))]
fn tensor_core_rows(_: BackendKind, _: Option<&str>, _: u64) -> usize {
    0
}

/// The tensor-core GEMMs on `kind` (cuda and ptx-sim) against a float64 loop over their
/// rounded inputs, one table row each (`only`: just that kernel); returns the failures.
#[cfg(any(feature = "cuda", feature = "ptx-sim"))]
fn tensor_core_rows(kind: BackendKind, only: Option<&str>, seed: u64) -> usize {
    use bella::backend::ptx::gemm_mma::check::{check, MmaCheck};
    use bella::backend::ptx::gemm_mma::HalfType;
    // odd sizes past one 128 × 128 tile, k past one 32-deep tile and not a multiple of it
    let shape = (257, 130, 264);
    let run = |dtype: HalfType| -> Result<MmaCheck> {
        match kind {
            #[cfg(feature = "ptx-sim")]
            BackendKind::PtxSim => {
                let be = bella::backend::ptx::PtxBackend::new(
                    bella::backend::ptx_sim::SimDriver::new(),
                )?;
                check(&be, dtype, shape, seed)
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => check(&*bella::backend::cuda::open_cuda()?, dtype, shape, seed),
            _ => unreachable!("only called for PTX backends"),
        }
    };
    if !matches!(kind, BackendKind::PtxSim | BackendKind::Cuda) {
        if only.is_some() {
            println!("    (the tensor-core GEMMs are PTX kernels: checked on cuda and ptx-sim)");
        }
        return 0;
    }
    let mut failed = 0;
    for dtype in [HalfType::Bf16, HalfType::F16] {
        let name = dtype.kernel();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        match run(dtype) {
            Ok(c) => {
                let ok = c.passed();
                failed += usize::from(!ok);
                println!(
                    "{:<18} {:>8} {:>12.3e} {:>12.3e}  {}  (the kernel itself: {} against the rounded inputs' float64 sums)",
                    name,
                    c.outputs,
                    c.norm_err,
                    c.elem_err,
                    if ok { "pass" } else { "FAIL" },
                    c.shape
                );
                if !ok {
                    println!(
                        "    {} of {} outputs past the f32-accumulation bound",
                        c.outside_bound, c.outputs
                    );
                }
            }
            Err(e) => {
                failed += 1;
                println!("{name:<18} {:>8} {:>12} {:>12}  FAIL  {e}", "-", "-", "-");
            }
        }
    }
    failed
}

/// The largest of one error over every output of every case (0 when there are none).
fn worst(comps: &[Comparison], err: impl Fn(&Comparison) -> f64) -> f64 {
    comps.iter().map(err).fold(0.0, f64::max)
}
