//! `bella profile`: simulator counters per launch and modelled GPU times per op (see
//! `bella::profile`). Needs the `ptx-sim` feature.

use bella::{BellaError, Result};

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// Only these ops (comma list, `bella bench`'s names). Default: every op.
    #[arg(long)]
    op: Option<String>,
    /// `bella bench`'s quick shapes.
    #[arg(long)]
    quick: bool,
    /// Shapes: `small` (what `bella bench` runs on ptx-sim), `cpu` or `gpu` (cases past the
    /// simulator's budget are skipped, saying so).
    #[arg(long, default_value = "small")]
    scale: String,
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
        None => BENCH_OPS.iter().map(|s| s.to_string()).collect(),
    };
    let scale = bella::profile::parse_scale(&a.scale).ok_or_else(|| BellaError::Unknown {
        what: "profile scale (small, cpu, gpu)",
        name: a.scale.clone(),
    })?;
    let opts = bella::profile::Options {
        ops,
        quick: a.quick,
        scale,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    println!(
        "bella profile{} — counted on the PTX simulator; times are modelled from public peaks (A100, H100 SXM, H200), not measured",
        if a.quick { " --quick" } else { "" }
    );
    let start = std::time::Instant::now();
    let report = bella::profile::run(&opts, &mut |line| println!("{line}"))?;
    println!(
        "\nmodel: {}\nprofiled {} case(s), skipped {}, in {:.1} s",
        report.model,
        report.profiles.len(),
        report.skipped.len(),
        start.elapsed().as_secs_f64()
    );
    if let Some(path) = &a.json {
        report.write_json(path)?;
        println!("wrote {path}");
    }
    Ok(0)
}
