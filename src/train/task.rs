//! The default task end to end: pre-train the base on the source domain, save it as
//! safetensors and load it back frozen through the same loader users use, adapt every method
//! on the target domain, evaluate, report. Also `bella eval` on a checkpoint directory.

use super::checkpoint::CheckpointDir;
use super::data::{digits_task, DigitsTask, CLASSES, FEATURES};
use super::eval::{evaluate, Evaluation};
use super::method::{Method, TrainConfig};
use super::report::{MethodReport, Report};
use super::trainer::{train, RunState, StepSettings};
use crate::autograd::Activation;
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::nn::{
    load_model, save_model, BInit, DenseParticles, FrozenMlp, LoraParticles, MlpSpec, Particles,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const TASK_NAME: &str = "digits-rot90";

pub struct RunOptions {
    pub cfg: TrainConfig,
    pub methods: Vec<Method>,
    pub checkpoint: Option<PathBuf>,
    pub resume: bool,
    /// A user's base model instead of pre-training one (64 inputs, 8 outputs).
    pub base: Option<PathBuf>,
    pub quiet: bool,
    pub plots: Option<PathBuf>,
}

fn note(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("{msg}");
    }
}

fn bar(quiet: bool, len: u64, prefix: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix:>15} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("the template is valid")
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(prefix.to_string());
    pb
}

/// The particles a method trains on the frozen base, and their starting arena.
pub fn build_model(
    method: Method,
    base: &Arc<FrozenMlp>,
    cfg: &TrainConfig,
) -> Result<(Box<dyn Particles>, Vec<f32>)> {
    let k = method.particles(cfg.particles);
    Ok(match method {
        // Full fine-tunes all start at the pre-trained weights; batch order makes them differ.
        Method::FullEnsemble => {
            let m = DenseParticles::new(base.spec.clone(), k);
            let init = m.init();
            (Box::new(m), init)
        }
        _ => {
            let m = LoraParticles::new(base.clone(), k, cfg.rank, cfg.alpha)?;
            let init = m.init(cfg.seed, BInit::parse(&cfg.b_init)?);
            (Box::new(m), init)
        }
    })
}

fn settings(method: Method, cfg: &TrainConfig) -> StepSettings {
    StepSettings {
        label: method.name(),
        method,
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        lr: if method == Method::FullEnsemble {
            cfg.full_lr
        } else {
            cfg.lr
        },
        weight_decay: cfg.weight_decay,
        seed: cfg.seed,
        prior_std: cfg.prior_std,
        bandwidth: cfg.bandwidth,
    }
}

fn check_base(spec: &MlpSpec, path: &Path) -> Result<()> {
    if spec.in_features() != FEATURES || spec.out_features() != CLASSES {
        return Err(BellaError::invalid(format!(
            "{}: the digits task needs a model with {FEATURES} inputs and {CLASSES} outputs, this one has {} and {}",
            path.display(),
            spec.in_features(),
            spec.out_features()
        )));
    }
    Ok(())
}

/// Pre-train the base MLP on the source domain (a dense K = 1 run on the same ops).
fn pretrain(
    be: &dyn Backend,
    task: &DigitsTask,
    cfg: &TrainConfig,
    quiet: bool,
) -> Result<MlpSpec> {
    let spec = DenseParticles::random_spec(&cfg.widths, Activation::Relu, cfg.seed);
    let model = DenseParticles::new(spec, 1);
    let mut state = RunState::fresh(be, 1, model.d(), &model.init())?;
    let set = StepSettings {
        label: "pretrain",
        method: Method::FullEnsemble,
        epochs: cfg.pretrain_epochs,
        batch_size: cfg.batch_size,
        lr: cfg.pretrain_lr,
        weight_decay: cfg.weight_decay,
        seed: cfg.seed ^ 0xBA5E,
        prior_std: cfg.prior_std,
        bandwidth: None,
    };
    let n = task
        .source
        .len()
        .div_ceil(cfg.batch_size.min(task.source.len()));
    let pb = bar(quiet, (n * cfg.pretrain_epochs) as u64, "pretrain base");
    train(
        be,
        &model,
        &task.source,
        &set,
        &mut state,
        &pb,
        &mut |_, _| Ok(()),
    )?;
    pb.finish();
    Ok(model.particle_spec(&be.download(&state.arena)?, 0))
}

/// Accuracy of the base alone on a split (before any adaptation).
fn base_accuracy(be: &dyn Backend, base: &FrozenMlp, split: &super::data::Split) -> Result<f64> {
    let x = be.upload(&[split.len(), FEATURES], &split.x)?;
    let logits = base.logits(be, &x)?.reshape(&[1, split.len(), CLASSES])?;
    let stats = crate::ops::ensemble_stats(be, &logits)?;
    let probs = be.download(&stats.probs)?;
    Ok(super::metrics::calibration(&probs, &split.y, CLASSES).accuracy)
}

fn method_report(
    method: Method,
    model: &dyn Particles,
    seconds: f64,
    ev: &Evaluation,
) -> MethodReport {
    MethodReport {
        method: method.name().to_string(),
        trainable_params: model.trainable_params(),
        train_seconds: seconds,
        in_dist: ev.in_dist,
        shifted: ev.shifted,
        ood_auroc_entropy: ev.ood_auroc_entropy,
        ood_auroc_mi: ev.ood_auroc_mi,
    }
}

/// The run's report: the task, the backend and the methods' results.
fn report(be: &dyn Backend, cfg: &TrainConfig, methods: Vec<MethodReport>) -> Report {
    Report {
        task: TASK_NAME.to_string(),
        backend: be.kind().name().to_string(),
        particles: cfg.particles,
        rank: cfg.rank,
        methods,
    }
}

fn plot(dir: &Option<PathBuf>, method: Method, ev: &Evaluation) -> Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir)
        .map_err(|e| BellaError::io(format!("cannot create {}: {e}", dir.display())))?;
    let title = format!(
        "{}: ECE in-dist {:.3}, shifted {:.3}",
        method.name(),
        ev.in_dist.ece,
        ev.shifted.ece
    );
    let path = dir.join(format!("reliability_{}.svg", method.name()));
    super::plot::reliability_svg(&path, &title, &ev.in_dist_bins, &ev.shifted_bins)
}

/// Obtain the frozen base: from the checkpoint (resume), a user's file, or pre-training.
fn base_model(
    be: &dyn Backend,
    opts: &RunOptions,
    ck: &Option<CheckpointDir>,
    task: &DigitsTask,
) -> Result<MlpSpec> {
    if opts.resume {
        let p = ck
            .as_ref()
            .expect("resume has a checkpoint dir")
            .base_path();
        if !p.exists() {
            return Err(BellaError::io(format!(
                "cannot resume: {} does not exist",
                p.display()
            )));
        }
        return load_model(&p);
    }
    if let Some(p) = &opts.base {
        let spec = load_model(p)?;
        check_base(&spec, p)?;
        if let Some(ck) = ck {
            save_model(&ck.base_path(), &spec)?;
        }
        return Ok(spec);
    }
    note(opts.quiet, "pre-training the base MLP on the source domain");
    let spec = pretrain(be, task, &opts.cfg, opts.quiet)?;
    // Save, then load back through the users' loader: the frozen base is what the file says.
    let (path, temp) = match ck {
        Some(ck) => (ck.base_path(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("bella-base-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            (dir.join("base.safetensors"), Some(dir))
        }
    };
    save_model(&path, &spec)?;
    let loaded = load_model(&path);
    if let Some(dir) = temp {
        let _ = std::fs::remove_dir_all(dir);
    }
    loaded
}

/// `bella train`.
pub fn run(be: &dyn Backend, opts: &RunOptions) -> Result<Report> {
    let cfg = &opts.cfg;
    cfg.check()?;
    if opts.methods.is_empty() {
        return Err(BellaError::invalid("no methods to train"));
    }
    let ck = opts
        .checkpoint
        .as_deref()
        .map(CheckpointDir::new)
        .transpose()?;
    if opts.resume {
        let Some(ck) = &ck else {
            return Err(BellaError::invalid("--resume needs --checkpoint DIR"));
        };
        let stored = ck.load_config()?;
        if let Some(why) = cfg.structural_mismatch(&stored) {
            return Err(BellaError::invalid(format!(
                "cannot resume with different settings: {why}"
            )));
        }
    }
    let task = digits_task(cfg.per_class)?;
    let spec = base_model(be, opts, &ck, &task)?;
    let base = Arc::new(FrozenMlp::upload(be, spec)?);
    if let Some(ck) = &ck {
        ck.save_config(cfg)?;
    }
    note(
        opts.quiet,
        &format!(
            "base model: accuracy {:.3} on the target domain before adaptation, {:.3} on the source images",
            base_accuracy(be, &base, &task.in_dist)?,
            base_accuracy(be, &base, &task.source)?
        ),
    );
    // Fresh runs write every method's starting state first, so a resume always finds one.
    let mut models = Vec::new();
    for &method in &opts.methods {
        let (model, arena) = build_model(method, &base, cfg)?;
        let state = match (&ck, opts.resume) {
            (Some(ck), true) => ck.load(be, method, model.as_ref())?,
            (ck, _) => {
                let state = RunState::fresh(be, model.k(), model.d(), &arena)?;
                if let Some(ck) = ck {
                    ck.save(be, method, model.as_ref(), &state)?;
                }
                state
            }
        };
        models.push((method, model, state));
    }
    let mut reports = Vec::new();
    for (method, model, mut state) in models {
        let set = settings(method, cfg);
        let batches = task
            .target_train
            .len()
            .div_ceil(cfg.batch_size.min(task.target_train.len()));
        let pb = bar(opts.quiet, (batches * cfg.epochs) as u64, method.name());
        pb.set_position((batches * state.epoch.min(cfg.epochs)) as u64);
        let mut save = |s: &RunState, _loss: f32| match &ck {
            Some(ck) => ck.save(be, method, model.as_ref(), s),
            None => Ok(()),
        };
        let trained = train(
            be,
            model.as_ref(),
            &task.target_train,
            &set,
            &mut state,
            &pb,
            &mut save,
        );
        pb.finish();
        if let Err(e) = trained {
            let kept = match &ck {
                Some(ck) => format!(
                    "; the last good checkpoint is kept at {}",
                    ck.method_path(method).display()
                ),
                None => String::new(),
            };
            return Err(BellaError::invalid(format!("training stopped: {e}{kept}")));
        }
        let ev = evaluate(be, model.as_ref(), &state.arena, &task)?;
        plot(&opts.plots, method, &ev)?;
        reports.push(method_report(
            method,
            model.as_ref(),
            state.train_seconds,
            &ev,
        ));
    }
    Ok(report(be, cfg, reports))
}

/// `bella eval`: evaluate the adapters saved in a checkpoint directory.
pub fn eval_saved(
    be: &dyn Backend,
    dir: &Path,
    methods: &[Method],
    plots: &Option<PathBuf>,
) -> Result<Report> {
    let ck = CheckpointDir {
        dir: dir.to_path_buf(),
    };
    let cfg = ck.load_config()?;
    let task = digits_task(cfg.per_class)?;
    let base_path = ck.base_path();
    let base = Arc::new(FrozenMlp::upload(be, load_model(&base_path)?)?);
    let methods: Vec<Method> = if methods.is_empty() {
        Method::ALL
            .into_iter()
            .filter(|m| ck.method_path(*m).exists())
            .collect()
    } else {
        methods.to_vec()
    };
    if methods.is_empty() {
        return Err(BellaError::io(format!(
            "no method checkpoints in {}",
            dir.display()
        )));
    }
    let mut reports = Vec::new();
    for method in methods {
        let (model, _) = build_model(method, &base, &cfg)?;
        let state = ck.load(be, method, model.as_ref())?;
        let ev = evaluate(be, model.as_ref(), &state.arena, &task)?;
        plot(plots, method, &ev)?;
        reports.push(method_report(
            method,
            model.as_ref(),
            state.train_seconds,
            &ev,
        ));
    }
    Ok(report(be, &cfg, reports))
}
