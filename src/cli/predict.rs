//! `bella predict` and `bella export`: a trained checkpoint's predictions on new inputs, and
//! its particles as PEFT LoRA adapters.

use bella::train::{self, Method, Trained};
use bella::Result;
use std::path::PathBuf;

/// Predictions with uncertainty from saved particles: writes `logits [K, N, C]`,
/// `probs [N, C]`, `entropy [N]`, `expected_entropy [N]` and `mutual_info [N]` (f32).
#[derive(clap::Args)]
pub struct PredictArgs {
    /// The checkpoint directory of a training run (`bella train --checkpoint DIR`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The method whose particles predict (single_lora, bella_ensemble, bella_svgd,
    /// full_ensemble).
    #[arg(long)]
    method: String,
    /// Inputs: safetensors or .npz holding `x [N, I]` (a float dtype).
    #[arg(long = "in")]
    input: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// cpu, wgpu, cuda, ptx-sim or auto (CUDA, then a real wgpu GPU, then the CPU).
    #[arg(long, default_value = "auto")]
    backend: String,
}

/// Write each particle of a saved LoRA method as a PEFT adapter
/// (`OUT/particle_{k}/adapter_config.json`, `adapter_model.safetensors`) and the frozen base
/// as `OUT/base.safetensors`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The checkpoint directory of a training run.
    #[arg(long)]
    checkpoint: PathBuf,
    /// A LoRA method of the run: single_lora, bella_ensemble or bella_svgd.
    #[arg(long)]
    method: String,
    /// A new (or empty) directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn predict(a: PredictArgs) -> Result<i32> {
    let method = Method::parse(a.method.trim())?;
    let be = bella::backend::open_named(&a.backend)?;
    let trained = Trained::load(be.as_ref(), &a.checkpoint, method)?;
    let x = train::dataset::load_inputs(&a.input, "x")?;
    let p = trained.predict(be.as_ref(), &x)?;
    train::write_prediction(&a.out, &p)?;
    eprintln!(
        "{} particles of {} on {} rows: {} written",
        p.k,
        method.name(),
        p.len(),
        a.out.display()
    );
    Ok(0)
}

pub fn export(a: ExportArgs) -> Result<i32> {
    let method = Method::parse(a.method.trim())?;
    // Export moves no numbers: the CPU backend reads the checkpoint.
    let be = bella::backend::cpu::CpuBackend::new();
    let trained = Trained::load(&be, &a.checkpoint, method)?;
    trained.export_peft(&be, &a.out)?;
    eprintln!(
        "{} particles of {} exported as PEFT LoRA adapters to {}",
        trained.model.k(),
        method.name(),
        a.out.display()
    );
    Ok(0)
}
