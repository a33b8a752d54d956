//! `bella doctor`: every op on every backend built in and available, against the CPU
//! reference on random inputs; a table of op, backend, worst relative error, pass/fail.

use bella::backend::{open, BackendKind};
use bella::ops::OP_NAMES;
use bella::rng::Rng;
use bella::testing::{compare_op, Sizes, TOLERANCE};
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
        None => BackendKind::ALL
            .into_iter()
            .filter(|k| *k != BackendKind::Cpu)
            .collect(),
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
    println!("bella doctor — seed {seed}, tolerance {TOLERANCE:.0e} (relative error vs the CPU reference)");
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
        println!("{:<18} {:>8} {:>12}  result", "op", "outputs", "worst err");
        let sizes = if a.full {
            Sizes::Huge
        } else {
            Sizes::for_backend(kind)
        };
        for op in &ops {
            match compare_op(be.as_ref(), op, sizes, seed) {
                Ok(comps) => {
                    let worst = comps.iter().max_by(|x, y| x.rel_err.total_cmp(&y.rel_err));
                    let (err, ok) = match worst {
                        Some(w) => (w.rel_err, w.rel_err <= TOLERANCE),
                        None => (0.0, false),
                    };
                    if !ok {
                        failed += 1;
                    }
                    let detail = match worst {
                        Some(w) if !ok => format!("  worst: [{}] `{}`", w.case, w.output),
                        _ => String::new(),
                    };
                    println!(
                        "{:<18} {:>8} {:>12.3e}  {}{}",
                        op,
                        comps.len(),
                        err,
                        if ok { "pass" } else { "FAIL" },
                        detail
                    );
                }
                Err(e) => {
                    failed += 1;
                    println!("{op:<18} {:>8} {:>12}  FAIL  {e}", "-", "-");
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
