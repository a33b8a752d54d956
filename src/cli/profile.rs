//! `bella profile`: simulator counters per launch and modelled GPU times per launch and per
//! op (see `bella::profile`). Needs the `ptx-sim` feature.

use bella::{BellaError, Result};

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// Only these ops (comma list, `bella bench`'s names, plus the tensor-core GEMM kernels
    /// `gemm_mma_bf16` and `gemm_mma_f16`). Default: every one.
    #[arg(long)]
    op: Option<String>,
    /// `bella bench`'s quick shapes.
    #[arg(long)]
    quick: bool,
    /// Shapes: `small` (what `bella bench` runs on ptx-sim), `cpu` or `gpu` (cases past the
    /// simulator's budget run a sample of each launch's CTAs, saying so).
    #[arg(long, default_value = "small")]
    scale: String,
    /// The SM count the simulated device reports, so grids are sized as on that card
    /// (132: H100 SXM and H200; 108: A100).
    #[arg(long, default_value_t = bella::profile::DEFAULT_SM_COUNT)]
    sm_count: u32,
    /// Run at most N CTAs of every launch (an evenly strided sample, counters scaled to the
    /// grid), whatever the case's size.
    #[arg(long, value_name = "N")]
    max_ctas: Option<u64>,
    /// Simulated thread instructions a sampled case may take.
    #[arg(long, value_name = "INST", default_value_t = bella::profile::SAMPLE_BUDGET_INST)]
    budget: u64,
    /// The particle count K of the SVGD cases (default: `bella bench`'s); D stays the scale's.
    #[arg(long, value_name = "K")]
    particles: Option<usize>,
    /// f32 | bf16 | f16: the operands of matmul, lora_forward and lora_backward (as `bella
    /// bench --dtype`); with bf16/f16 only those run, modelled against the `mma.sync` peak.
    #[arg(long, default_value = "f32")]
    dtype: bella::DType,
    /// Only the cases whose shape label contains TEXT (e.g. "shared x", "per-particle x").
    #[arg(long, value_name = "TEXT")]
    shape: Option<String>,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
}

#[cfg(not(feature = "ptx-sim"))]
pub fn run(_: ProfileArgs) -> Result<i32> {
    Err(BellaError::invalid(
        "bella profile runs the PTX simulator: build with `--features ptx-sim`",
    ))
}

#[cfg(feature = "ptx-sim")]
pub fn run(a: ProfileArgs) -> Result<i32> {
    use bella::bench::cases::BENCH_OPS;
    let ops: Vec<String> = match &a.op {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        None => BENCH_OPS
            .iter()
            .chain(&bella::bench::tensor_core::TENSOR_CORE_OPS)
            .map(|s| s.to_string())
            .collect(),
    };
    let scale = bella::profile::parse_scale(&a.scale).ok_or_else(|| BellaError::Unknown {
        what: "profile scale (small, cpu, gpu)",
        name: a.scale.clone(),
    })?;
    if a.max_ctas == Some(0) || a.sm_count == 0 {
        return Err(BellaError::invalid(
            "--max-ctas and --sm-count are at least 1",
        ));
    }
    let mut opts = bella::profile::Options::new(
        ops,
        a.quick,
        scale,
        std::env::args().collect::<Vec<_>>().join(" "),
    );
    opts.sm_count = a.sm_count;
    opts.max_ctas = a.max_ctas;
    opts.budget_inst = a.budget;
    if a.particles == Some(0) {
        return Err(BellaError::invalid("--particles is at least 1"));
    }
    opts.particles = a.particles;
    opts.dtype = a.dtype;
    opts.shape_filter = a.shape.clone();
    println!(
        "bella profile{} — counted on the PTX simulator; times are modelled from public peaks (A100, H100 SXM, H200), not measured",
        if a.quick { " --quick" } else { "" }
    );
    let start = std::time::Instant::now();
    let report = bella::profile::run(&opts, &mut |line| println!("{line}"))?;
    let sampled = report
        .profiles
        .iter()
        .filter(|p| p.sampling.sampled_launches > 0)
        .count();
    println!(
        "\nmodel: {}\nprofiled {} case(s), {sampled} of them sampled, in {:.1} s",
        report.model,
        report.profiles.len(),
        start.elapsed().as_secs_f64()
    );
    if let Some(path) = &a.json {
        report.write_json(path)?;
        println!("wrote {path}");
    }
    Ok(0)
}
