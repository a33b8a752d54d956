//! Command-line interface. Each subcommand lives in its own file with its arguments.

mod bench;
mod doctor;
mod op;
mod predict;
mod profile;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bella",
    version,
    about = "Bayesian low-rank learning kernels: LoRA particles, ensembles and SVGD on CPU, wgpu and CUDA"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train particles on a frozen base (no arguments: the embedded default task).
    Train(Box<train::TrainArgs>),
    /// Evaluate saved particles on the run's splits.
    Eval(train::EvalArgs),
    /// Predictions with uncertainty from saved particles on new inputs.
    Predict(predict::PredictArgs),
    /// Saved LoRA particles as PEFT adapters (one directory per particle) plus the base.
    Export(predict::ExportArgs),
    /// Run one op on named tensors from a safetensors file.
    Op(op::OpArgs),
    /// Every op on every available backend (cpu included) against the float64 oracle.
    Doctor(doctor::DoctorArgs),
    /// Time every op per shape and backend.
    Bench(bench::BenchArgs),
    /// Simulator counters per launch and modelled A100/H100/H200 times (feature ptx-sim).
    Profile(profile::ProfileArgs),
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => train::eval(a),
        Command::Predict(a) => predict::predict(a),
        Command::Export(a) => predict::export(a),
        Command::Op(a) => op::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Profile(a) => profile::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
