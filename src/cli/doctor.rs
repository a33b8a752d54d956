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
    let ops: Vec<&str> = match &a.op {
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
    }
    if failed > 0 {
        println!("\n{failed} op(s) failed");
        return Ok(1);
    }
    Ok(0)
}

/// The largest of one error over every output of every case (0 when there are none).
fn worst(comps: &[Comparison], err: impl Fn(&Comparison) -> f64) -> f64 {
    comps.iter().map(err).fold(0.0, f64::max)
}
