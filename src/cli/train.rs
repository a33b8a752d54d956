//! `bella train` and `bella eval`.

use bella::train::{self, Method, RunOptions, TrainConfig};
use bella::{BellaError, Result};
use std::path::PathBuf;

/// Train Bella particles and print a method × metric table. Without --model/--data: the
/// embedded digits task (pre-train a base MLP on upright digits, adapt on digits rotated by
/// 90°, evaluate on a noisier shifted split and on held-out classes 8 and 9). With
/// `--model BASE.safetensors --data DATA`: the user's MLP and dataset.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// cpu, wgpu, cuda, ptx-sim or auto (CUDA, then a real wgpu GPU, then the CPU).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Seed of initialisation and batch orders (the data splits are fixed). [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Particles K of bella_ensemble, bella_svgd and full_ensemble. [default: 4]
    #[arg(long)]
    particles: Option<usize>,
    /// LoRA rank r. [default: 4]
    #[arg(long)]
    rank: Option<usize>,
    /// LoRA alpha (scale = alpha / rank). [default: 8]
    #[arg(long)]
    alpha: Option<f32>,
    /// Adaptation epochs (on --resume: the total to reach). [default: 40]
    #[arg(long)]
    epochs: Option<usize>,
    /// Mini-batch size. [default: 32]
    #[arg(long)]
    batch_size: Option<usize>,
    /// AdamW learning rate of the LoRA methods. [default: 0.003]
    #[arg(long)]
    lr: Option<f32>,
    /// AdamW learning rate of full_ensemble. [default: 0.001]
    #[arg(long)]
    full_lr: Option<f32>,
    /// Initial LoRA B: `zero` (PEFT: particles start as the base) or `small` (Gaussian,
    /// std 0.02: particles also start as different functions). [default: zero]
    #[arg(long)]
    b_init: Option<String>,
    /// SVGD Gaussian prior standard deviation on adapter parameters. [default: 1]
    #[arg(long)]
    prior_std: Option<f32>,
    /// SVGD RBF bandwidth h (default: the median heuristic).
    #[arg(long)]
    bandwidth: Option<f32>,
    /// Target-domain training images per class (few-shot adaptation). [default: 25]
    #[arg(long)]
    per_class: Option<usize>,
    /// Epochs of base pre-training. [default: 30]
    #[arg(long)]
    pretrain_epochs: Option<usize>,
    /// f32 | bf16 | f16: operand dtype of the LoRA methods' products with the frozen
    /// weights (mixed precision as PyTorch autocast: 16-bit layer inputs, W0 and adapters,
    /// f32 accumulation, f32 master parameters, gradients, SVGD and AdamW; pre-training,
    /// full_ensemble and evaluation stay f32). [default: f32]
    #[arg(long)]
    dtype: Option<bella::DType>,
    /// Comma list of methods: single_lora,bella_ensemble,bella_svgd,full_ensemble [default:
    /// all; on --resume, the methods the run trains, as run.json records them].
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// The frozen base: a safetensors MLP (`<layer>.weight [out, in]`, optional
    /// `<layer>.bias`; see README). With --data any such MLP; without, it replaces the
    /// digits task's pre-trained base (64 inputs, 8 outputs). On --resume: must be the
    /// checkpoint's base.
    #[arg(long, visible_alias = "base")]
    model: Option<PathBuf>,
    /// The training data: safetensors or .npz with `train.x [N, I]` (float), `train.y [N]`
    /// (integer labels in 0..C), optionally `test.x`/`test.y`, `shifted.x`/`shifted.y` and
    /// `ood.x`. Needs --model. On --resume: the recorded dataset unless given.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Comma list of the layers (module names of the model file, e.g. `0,4` or
    /// `net.0,net.4`) that get adapters [default: every layer].
    #[arg(long, value_delimiter = ',')]
    target_modules: Vec<String>,
    /// Comma list of PEFT LoRA adapter directories (`adapter_config.json` +
    /// `adapter_model.safetensors`) to start the particles from: as many as particles (the
    /// first one for single_lora). Rank, alpha and target modules come from the adapters.
    /// Needs --model.
    #[arg(long, value_delimiter = ',')]
    init_from_peft: Vec<PathBuf>,
    /// Write the report as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write a reliability diagram (SVG) per method into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Save the base, the run settings and every method's particles and optimizer state
    /// here after every epoch.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue the run saved in --checkpoint (exactly, unless --epochs or a learning rate
    /// is changed): every check is made before anything is written, so a resume that
    /// cannot start leaves the checkpoint as it was.
    #[arg(long)]
    resume: bool,
    /// No progress bars or notes (the table still goes to stdout).
    #[arg(long)]
    quiet: bool,
}

/// Evaluate the adapters saved by `bella train --checkpoint DIR`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// The checkpoint directory of a training run.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Comma list of methods (default: every method with a checkpoint).
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Evaluate on this dataset instead of the one the run recorded (same fingerprint).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long)]
    plots: Option<PathBuf>,
}

fn methods(names: &[String]) -> Result<Vec<Method>> {
    names.iter().map(|n| Method::parse(n.trim())).collect()
}

/// The defaults (or, on resume, the stored run's settings) with the flags given applied.
fn config(a: &TrainArgs) -> Result<TrainConfig> {
    let mut c = match (&a.checkpoint, a.resume) {
        (Some(dir), true) => {
            train::checkpoint::CheckpointDir::open(dir)
                .load_record()?
                .cfg
        }
        _ => TrainConfig::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$f = v; } )* };
    }
    set!(
        seed,
        particles,
        rank,
        alpha,
        epochs,
        batch_size,
        lr,
        full_lr,
        b_init,
        prior_std,
        per_class,
        pretrain_epochs,
        dtype
    );
    if a.bandwidth.is_some() {
        c.bandwidth = a.bandwidth;
    }
    if !a.target_modules.is_empty() {
        c.target_modules = a
            .target_modules
            .iter()
            .map(|t| t.trim().to_string())
            .collect();
    }
    if !a.init_from_peft.is_empty() {
        from_peft(a, &mut c)?;
    }
    Ok(c)
}

/// Rank, alpha, target modules and particle count from the PEFT adapters; a flag that says
/// otherwise is an error.
fn from_peft(a: &TrainArgs, c: &mut TrainConfig) -> Result<()> {
    let Some(model) = &a.model else {
        return Err(BellaError::invalid(
            "--init-from-peft needs --model: the base the adapters were made for",
        ));
    };
    let (r, alpha, targets) = train::peft_settings(model, &a.init_from_peft)?;
    let n = a.init_from_peft.len();
    let clash = |flag: &str, given: String, theirs: String| {
        Err(BellaError::invalid(format!(
            "{flag} {given} disagrees with the PEFT adapters ({theirs}); leave it out"
        )))
    };
    if let Some(g) = a.rank.filter(|&g| g != r) {
        return clash("--rank", g.to_string(), format!("r = {r}"));
    }
    if let Some(g) = a.alpha.filter(|&g| g != alpha) {
        return clash("--alpha", g.to_string(), format!("lora_alpha = {alpha}"));
    }
    if !a.target_modules.is_empty() && c.target_modules != targets {
        return clash(
            "--target-modules",
            c.target_modules.join(","),
            format!("target_modules {}", targets.join(",")),
        );
    }
    let only_single = !a.methods.is_empty() && a.methods.iter().all(|m| m.trim() == "single_lora");
    if !only_single {
        if let Some(g) = a.particles.filter(|&g| g != n) {
            return clash(
                "--particles",
                g.to_string(),
                format!("{n} adapter directories"),
            );
        }
        c.particles = n;
    }
    c.rank = r;
    c.alpha = alpha;
    c.target_modules = targets;
    Ok(())
}

pub fn run(a: TrainArgs) -> Result<i32> {
    let cfg = config(&a)?;
    // Empty: the library picks (all methods, or on --resume the run's own).
    let methods = methods(&a.methods)?;
    let be = bella::backend::open_named(&a.backend)?;
    if !a.quiet {
        eprintln!("backend: {} ({})", be.kind(), be.describe());
    }
    let opts = RunOptions {
        cfg,
        methods,
        checkpoint: a.checkpoint,
        resume: a.resume,
        base: a.model,
        data: a.data,
        init_from_peft: a.init_from_peft,
        quiet: a.quiet,
        plots: a.plots,
    };
    let report = train::run(be.as_ref(), &opts)?;
    print!("{}", report.table());
    if let Some(p) = &a.report {
        report.write(p)?;
    }
    Ok(0)
}

pub fn eval(a: EvalArgs) -> Result<i32> {
    let be = bella::backend::open_named(&a.backend)?;
    let report = train::eval_saved(
        be.as_ref(),
        &a.checkpoint,
        &methods(&a.methods)?,
        &a.data,
        &a.plots,
    )?;
    print!("{}", report.table());
    if let Some(p) = &a.report {
        report.write(p)?;
    }
    if report.methods.is_empty() {
        return Err(BellaError::io("nothing evaluated"));
    }
    Ok(0)
}
