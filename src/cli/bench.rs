//! `bella bench`: timings per op, shape and backend (see `bella::bench`). Prints the table
//! as it measures; writes JSON and an SVG chart on request.

use bella::backend::{self, BackendKind};
use bella::bench::{self, cases::BENCH_OPS, report};
use bella::rng::Rng;
use bella::{BellaError, Result};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Backends: `auto` (CUDA, else a real wgpu GPU, else the CPU), `all` (every one that
    /// opens, the PTX simulator excepted), or a comma list of cpu | wgpu | cuda | ptx-sim.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Only these ops (comma list); `svgd_step` is rbf_kernel + svgd_direction + adamw_step,
    /// `svgd_step_fused` rbf_kernel + the op svgd_step (direction and AdamW as one).
    /// The comparisons run with `lora_forward` and `svgd_step`. Default: every op.
    #[arg(long)]
    op: Option<String>,
    /// Fewer runs and smaller shapes (the comparisons keep their target shapes): a smoke test.
    #[arg(long)]
    quick: bool,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Write an SVG chart of roofline shares and comparison ratios.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<String>,
    /// Seed of the random inputs.
    #[arg(long)]
    seed: Option<u64>,
    /// Shapes: `small`, `cpu` or `gpu` (default: each backend's own: gpu on CUDA and a
    /// hardware wgpu adapter, cpu on the CPU, small on the simulator and lavapipe).
    #[arg(long)]
    scale: Option<String>,
    /// f32 | bf16 | f16: the operands of matmul, lora_forward and lora_backward (their outputs
    /// f32); with bf16/f16 only those ops run. On PTX they run on the tensor-core kernels
    /// where the shapes are aligned (README, "Half precision"); elsewhere the operands are
    /// widened on the device. [default: f32]
    #[arg(long, default_value = "f32")]
    dtype: bella::DType,
}

fn backends(spec: &str) -> Result<Vec<BackendKind>> {
    match spec {
        "auto" => Ok(vec![backend::open_auto().kind()]),
        "all" => Ok(bench::available_backends()),
        list => list.split(',').map(|s| s.trim().parse()).collect(),
    }
}

pub fn run(a: BenchArgs) -> Result<i32> {
    let ops: Vec<String> = match &a.op {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        None => BENCH_OPS.iter().map(|s| s.to_string()).collect(),
    };
    let scale = a.scale.as_deref().map(str::parse).transpose()?;
    let opts = bench::Options {
        backends: backends(&a.backend)?,
        ops,
        quick: a.quick,
        seed: a.seed.unwrap_or_else(Rng::fresh_seed),
        scale,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        dtype: a.dtype,
    };
    opts.check()?;
    if opts.backends.is_empty() {
        return Err(BellaError::invalid("bench: no backend to measure"));
    }
    println!(
        "bella bench{} — median of repeated synchronised runs; roofline = time at the measured ceilings / measured time",
        if a.quick { " --quick" } else { "" }
    );
    let report = bench::run(&opts, &mut |line| println!("{line}"))?;
    if !report.comparisons.is_empty() {
        println!("\n{}", report::comparison_table(&report.comparisons));
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    if let Some(path) = &a.json {
        report.write_json(path)?;
        println!("wrote {path}");
    }
    if let Some(path) = &a.plot {
        bench::plot::write_svg(&report, path)?;
        println!("wrote {path}");
    }
    let missed = report
        .comparisons
        .iter()
        .filter(|c| c.met() == Some(false))
        .count();
    if missed > 0 {
        println!("{missed} target(s) missed (ratios, not pass/fail: see benches/RESULTS.md)");
    }
    Ok(0)
}
