//! A run end to end. The embedded task: pre-train the base on the source domain, save it as
//! safetensors and load it back frozen through the same loader users use, adapt every method
//! on the target domain, evaluate, report. A user's run: their model file and dataset
//! (`--model`, `--data`), optionally particles started from PEFT adapters. Also `bella eval`
//! on a checkpoint directory.

use super::checkpoint::{base_fingerprint, CheckpointDir, RunRecord};
use super::data::{CLASSES, FEATURES};
use super::dataset::Dataset;
use super::eval::{evaluate, Evaluation};
use super::method::{Method, TrainConfig};
use super::progress::bar;
use super::report::{MethodReport, Report};
use super::split::Split;
use super::task_data::{TaskData, DIGITS_TASK};
use super::trainer::{train, RunState, StepSettings};
use crate::autograd::Activation;
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::nn::peft::{self, PeftAdapter};
use crate::nn::{
    load_model, save_model, BInit, DenseParticles, FrozenMlp, LoraParticles, MlpSpec, Particles,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The name of the embedded digits task, as reports and `run.json` record it.
pub const TASK_NAME: &str = DIGITS_TASK;

/// What one `bella train` run does: configuration, methods, files.
pub struct RunOptions {
    /// The run configuration; on resume it must agree with `run.json`'s in everything that
    /// shapes the run (an error says what differs).
    pub cfg: TrainConfig,
    /// Empty: every method on a fresh run, on `resume` the methods `run.json` records.
    pub methods: Vec<Method>,
    /// Where checkpoints go; `None`: no checkpoints.
    pub checkpoint: Option<PathBuf>,
    /// Continue the run in `checkpoint` instead of starting one.
    pub resume: bool,
    /// The user's model (`--model`): with `data`, any MLP the loader accepts; without, it
    /// replaces the pre-trained base of the digits task (64 inputs, 8 outputs).
    pub base: Option<PathBuf>,
    /// The user's dataset (`--data`, safetensors or `.npz`; see [`Dataset`]); needs `base`.
    /// On resume and eval: the recorded one unless given.
    pub data: Option<PathBuf>,
    /// PEFT LoRA adapter directories the LoRA particles start from (fresh runs only): K of
    /// them for the K-particle methods, the first for `single_lora`. The run's rank, alpha
    /// and target modules must be the adapters' (see [`peft_settings`]).
    pub init_from_peft: Vec<PathBuf>,
    /// No progress output.
    pub quiet: bool,
    /// A directory for the reliability diagrams (SVG, one per method; needs the `cli`
    /// feature); `None`: none.
    pub plots: Option<PathBuf>,
}

fn note(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("{msg}");
    }
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
            let m = LoraParticles::with_targets(
                base.clone(),
                k,
                cfg.rank,
                cfg.alpha,
                &cfg.target_modules,
            )?;
            let init = m.init(cfg.seed, BInit::parse(&cfg.b_init)?);
            (Box::new(m), init)
        }
    })
}

/// `build_model`, with the LoRA particles started from PEFT adapters when there are any:
/// all of them for a K-particle method, the first for `single_lora`.
pub(crate) fn build_started(
    method: Method,
    base: &Arc<FrozenMlp>,
    cfg: &TrainConfig,
    adapters: &[PeftAdapter],
) -> Result<(Box<dyn Particles>, Vec<f32>)> {
    if adapters.is_empty() {
        return build_model(method, base, cfg);
    }
    if method == Method::FullEnsemble {
        return Err(BellaError::invalid(
            "full_ensemble fine-tunes whole weights and cannot start from PEFT adapters; leave it out of --methods",
        ));
    }
    let k = method.particles(cfg.particles);
    let m = LoraParticles::with_targets(base.clone(), k, cfg.rank, cfg.alpha, &cfg.target_modules)?;
    let arena = peft::arena_from_adapters(&m, &adapters[..k.min(adapters.len())])?;
    Ok((Box::new(m), arena))
}

/// The rank, alpha and target modules that PEFT adapter directories imply for a run on the
/// model in `model_path`, after checking each adapter against the model.
pub fn peft_settings(model_path: &Path, dirs: &[PathBuf]) -> Result<(usize, f32, Vec<String>)> {
    let spec = load_model(model_path)?;
    let adapters = read_adapters(&spec, dirs)?;
    peft::common_settings(&adapters, &spec)
}

fn read_adapters(spec: &MlpSpec, dirs: &[PathBuf]) -> Result<Vec<PeftAdapter>> {
    dirs.iter().map(|d| peft::read_adapter(d, spec)).collect()
}

pub(crate) fn settings(method: Method, cfg: &TrainConfig) -> StepSettings {
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
        dtype: cfg.dtype,
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
pub fn pretrain(
    be: &dyn Backend,
    source: &Split,
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
        dtype: crate::dtype::DType::F32,
    };
    let n = source.len().div_ceil(cfg.batch_size.min(source.len()));
    let pb = bar(quiet, (n * cfg.pretrain_epochs) as u64, "pretrain base");
    train(
        be,
        &model,
        source,
        &set,
        &mut state,
        pb.as_ref(),
        &mut |_, _| Ok(()),
    )?;
    pb.finish();
    Ok(model.particle_spec(&be.download(&state.arena)?, 0))
}

/// Accuracy of the base alone on a split (before any adaptation).
pub fn base_accuracy(be: &dyn Backend, base: &FrozenMlp, split: &Split) -> Result<f64> {
    let classes = base.spec.out_features();
    let x = be.upload(&[split.len(), split.features], &split.x)?;
    let logits = base.logits(be, &x)?.reshape(&[1, split.len(), classes])?;
    let stats = crate::ops::ensemble_stats(be, &logits)?;
    let probs = be.download(&stats.probs)?;
    Ok(super::metrics::calibration(&probs, &split.y, classes)?.accuracy)
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
        train: ev.train,
        in_dist: ev.in_dist,
        shifted: ev.shifted,
        ood_auroc_entropy: ev.ood_auroc_entropy,
        ood_auroc_mi: ev.ood_auroc_mi,
    }
}

/// The run's report: the task, the backend and the methods' results.
fn report(
    be: &dyn Backend,
    task: &TaskData,
    cfg: &TrainConfig,
    methods: Vec<MethodReport>,
) -> Report {
    Report {
        task: task.name.clone(),
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
    let ece = |c: &Option<super::metrics::Calibration>| {
        c.map_or("-".to_string(), |c| format!("{:.3}", c.ece))
    };
    let title = format!(
        "{}: ECE in-dist {}, shifted {}",
        method.name(),
        ece(&ev.in_dist),
        ece(&ev.shifted)
    );
    let path = dir.join(format!("reliability_{}.svg", method.name()));
    #[cfg(feature = "cli")]
    return super::plot::reliability_svg(&path, &title, &ev.in_dist_bins, &ev.shifted_bins);
    #[cfg(not(feature = "cli"))]
    return Err(BellaError::invalid(format!(
        "cannot draw {} ({title}): reliability diagrams need bella's `cli` feature",
        path.display()
    )));
}

/// Save a pre-trained base and load it back through the users' loader: the frozen base is
/// what a file says.
fn through_file(spec: &MlpSpec) -> Result<MlpSpec> {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bella-base-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BellaError::io(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join("base.safetensors");
    let loaded = save_model(&path, spec).and_then(|()| load_model(&path));
    let _ = std::fs::remove_dir_all(&dir);
    loaded
}

/// A method trained by a run: its particles and their state (fresh or loaded).
type Trainee = (Method, Box<dyn Particles>, RunState);

/// Everything a run needs, found and checked before it writes anything.
struct Prepared {
    task: TaskData,
    ck: Option<CheckpointDir>,
    base: Arc<FrozenMlp>,
    /// `run.json` as this run leaves it.
    record: RunRecord,
    /// On resume: `run.json` differs from the stored one and is rewritten just before the
    /// first checkpoint of a newly trained epoch (so a run that trains nothing, or fails
    /// before its first epoch is done, leaves the directory as it found it).
    record_pending: bool,
    trainees: Vec<Trainee>,
}

/// `methods` in order, without repeats.
fn dedup(methods: &[Method]) -> Vec<Method> {
    let mut out = Vec::new();
    for &m in methods {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

fn names(methods: &[Method]) -> String {
    methods
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name a user's data file is reported under.
fn data_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A user's dataset for `spec`, checked against it (and, when given, its recorded
/// fingerprint).
fn user_task(path: &Path, spec: &MlpSpec, fingerprint: Option<&str>) -> Result<(TaskData, String)> {
    let data = Dataset::load(path)?;
    data.check_model(spec.in_features(), spec.out_features())
        .map_err(|e| BellaError::invalid(format!("{}: {e}", path.display())))?;
    let got = data.fingerprint();
    if let Some(want) = fingerprint {
        if got != want {
            return Err(BellaError::invalid(format!(
                "{} is not the dataset this run was trained on (fingerprint {got}, run.json records {want})",
                path.display()
            )));
        }
    }
    Ok((
        TaskData::user(&data_name(path), data, spec.out_features()),
        got,
    ))
}

/// A fresh run: the base from the user's file or pre-training, the data (the user's or the
/// digits task), every method's starting state; then (all checks passed) the base,
/// `run.json` and every method's starting state are written, so a resume always finds one.
fn prepare_fresh(be: &dyn Backend, opts: &RunOptions) -> Result<Prepared> {
    let cfg = &opts.cfg;
    if let Some(dir) = &opts.checkpoint {
        if CheckpointDir::open(dir).record_path().exists() {
            return Err(BellaError::invalid(format!(
                "{} already holds a run (run.json): add --resume to continue it, or give a new directory",
                dir.display()
            )));
        }
    }
    let methods = if !opts.methods.is_empty() {
        dedup(&opts.methods)
    } else if !opts.init_from_peft.is_empty() {
        // Full fine-tunes cannot start from adapters.
        Method::ALL
            .into_iter()
            .filter(|&m| m != Method::FullEnsemble)
            .collect()
    } else {
        Method::ALL.to_vec()
    };
    let (task, spec, data_fingerprint) = match (&opts.base, &opts.data) {
        (None, Some(_)) => {
            return Err(BellaError::invalid(
                "--data needs --model: the base model the particles adapt",
            ))
        }
        (Some(p), Some(d)) => {
            let spec = load_model(p)?;
            let (task, fp) = user_task(d, &spec, None)?;
            (task, spec, Some(fp))
        }
        (Some(p), None) => {
            let spec = load_model(p)?;
            check_base(&spec, p)?;
            (TaskData::digits(cfg.per_class)?, spec, None)
        }
        (None, None) => {
            let task = TaskData::digits(cfg.per_class)?;
            note(opts.quiet, "pre-training the base MLP on the source domain");
            let source = task
                .source
                .as_ref()
                .expect("the digits task has a source domain");
            let spec = through_file(&pretrain(be, source, cfg, opts.quiet)?)?;
            (task, spec, None)
        }
    };
    let adapters = read_adapters(&spec, &opts.init_from_peft)?;
    if !adapters.is_empty() {
        let needs = methods
            .iter()
            .map(|m| m.particles(cfg.particles))
            .max()
            .unwrap_or(1);
        if adapters.len() != needs {
            return Err(BellaError::invalid(format!(
                "--init-from-peft gives {} adapters; the run trains {needs} particles (--particles {})",
                adapters.len(),
                cfg.particles
            )));
        }
    }
    let base = Arc::new(FrozenMlp::upload(be, spec.clone())?);
    let mut trainees = Vec::new();
    for &method in &methods {
        let (model, arena) = build_started(method, &base, cfg, &adapters)?;
        let state = RunState::fresh(be, model.k(), model.d(), &arena)?;
        trainees.push((method, model, state));
    }
    let record = RunRecord {
        cfg: cfg.clone(),
        methods: Some(methods),
        base_fingerprint: Some(base_fingerprint(&spec)),
        // Absolute, so a resume or eval from another directory finds it.
        data: opts
            .data
            .as_ref()
            .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())),
        data_fingerprint,
        init_from_peft: (!opts.init_from_peft.is_empty()).then(|| opts.init_from_peft.clone()),
    };
    let ck = match &opts.checkpoint {
        Some(dir) => {
            let ck = CheckpointDir::new(dir)?;
            save_model(&ck.base_path(), &spec)?;
            ck.save_record(&record)?;
            for (method, model, state) in &trainees {
                ck.save(be, *method, model.as_ref(), state)?;
            }
            Some(ck)
        }
        None => None,
    };
    Ok(Prepared {
        task,
        ck,
        base,
        record,
        record_pending: false,
        trainees,
    })
}

/// The data of a saved run: the dataset `data` names (else the one `run.json` records),
/// checked against the recorded fingerprint; or the digits task.
fn saved_task(
    ck: &CheckpointDir,
    record: &RunRecord,
    spec: &MlpSpec,
    data: &Option<PathBuf>,
) -> Result<(TaskData, Option<PathBuf>)> {
    let path = data.clone().or_else(|| record.data.clone());
    match path {
        Some(p) => {
            if record.data.is_none() {
                return Err(BellaError::invalid(format!(
                    "the run in {} was trained on the embedded digits task, not on a dataset; leave out --data",
                    ck.dir.display()
                )));
            }
            let (task, _) = user_task(&p, spec, record.data_fingerprint.as_deref())?;
            Ok((task, Some(p)))
        }
        None => {
            check_base(spec, &ck.base_path())?;
            Ok((TaskData::digits(record.cfg.per_class)?, None))
        }
    }
}

/// `--resume`: every check (settings, methods, base, data, every method's saved state) before
/// anything is written. The methods are those `run.json` records unless `opts.methods`
/// names some of them.
fn prepare_resume(be: &dyn Backend, opts: &RunOptions) -> Result<Prepared> {
    let cfg = &opts.cfg;
    let Some(dir) = &opts.checkpoint else {
        return Err(BellaError::invalid("--resume needs --checkpoint DIR"));
    };
    if !opts.init_from_peft.is_empty() {
        return Err(BellaError::invalid(
            "--init-from-peft starts a fresh run; a resumed run continues from its checkpoint",
        ));
    }
    let ck = CheckpointDir::open(dir);
    let stored = ck.load_record()?;
    if let Some(why) = cfg.structural_mismatch(&stored.cfg) {
        return Err(BellaError::invalid(format!(
            "cannot resume with different settings: {why}"
        )));
    }
    let cannot = |e: BellaError| BellaError::io(format!("cannot resume: {e}"));
    let recorded = ck.methods(&stored).map_err(cannot)?;
    let methods = if opts.methods.is_empty() {
        recorded.clone()
    } else {
        if let Some(m) = opts.methods.iter().find(|m| !recorded.contains(m)) {
            return Err(BellaError::invalid(format!(
                "cannot resume {}: the run in {} trains {}",
                m.name(),
                dir.display(),
                names(&recorded)
            )));
        }
        dedup(&opts.methods)
    };
    let spec = ck.load_base(&stored).map_err(cannot)?;
    let fingerprint = base_fingerprint(&spec);
    if let Some(p) = &opts.base {
        if base_fingerprint(&load_model(p)?) != fingerprint {
            return Err(BellaError::invalid(format!(
                "cannot resume: --model {} is not the base this run was trained on ({})",
                p.display(),
                ck.base_path().display()
            )));
        }
    }
    let (task, data) = saved_task(&ck, &stored, &spec, &opts.data).map_err(cannot)?;
    let base = Arc::new(FrozenMlp::upload(be, spec)?);
    let mut trainees = Vec::new();
    for &method in &methods {
        let (model, _) = build_model(method, &base, cfg)?;
        let state = ck.load(be, method, model.as_ref()).map_err(cannot)?;
        trainees.push((method, model, state));
    }
    let record = RunRecord {
        cfg: cfg.clone(),
        methods: Some(recorded),
        base_fingerprint: Some(fingerprint),
        data,
        data_fingerprint: stored.data_fingerprint.clone(),
        init_from_peft: stored.init_from_peft.clone(),
    };
    Ok(Prepared {
        task,
        ck: Some(ck),
        base,
        record_pending: record != stored,
        record,
        trainees,
    })
}

/// `bella train`.
pub fn run(be: &dyn Backend, opts: &RunOptions) -> Result<Report> {
    let cfg = &opts.cfg;
    cfg.check()?;
    let Prepared {
        task,
        ck,
        base,
        record,
        mut record_pending,
        trainees,
    } = if opts.resume {
        prepare_resume(be, opts)?
    } else {
        prepare_fresh(be, opts)?
    };
    let base_msg = match (&task.source, &task.test) {
        (Some(source), Some(test)) => format!(
            "base model: accuracy {:.3} on the target domain before adaptation, {:.3} on the source images",
            base_accuracy(be, &base, test)?,
            base_accuracy(be, &base, source)?
        ),
        (None, Some(test)) => format!(
            "base model: accuracy {:.3} on the training split and {:.3} on the test split before adaptation",
            base_accuracy(be, &base, &task.train)?,
            base_accuracy(be, &base, test)?
        ),
        _ => format!(
            "base model: accuracy {:.3} on the training split before adaptation",
            base_accuracy(be, &base, &task.train)?
        ),
    };
    note(opts.quiet, &base_msg);
    let mut reports = Vec::new();
    for (method, model, mut state) in trainees {
        let set = settings(method, cfg);
        let batches = task
            .train
            .len()
            .div_ceil(cfg.batch_size.min(task.train.len()));
        let pb = bar(opts.quiet, (batches * cfg.epochs) as u64, method.name());
        pb.set_position((batches * state.epoch.min(cfg.epochs)) as u64);
        let mut save = |s: &RunState, _loss: f32| match &ck {
            Some(ck) => {
                if record_pending {
                    ck.save_record(&record)?;
                    record_pending = false;
                }
                ck.save(be, method, model.as_ref(), s)
            }
            None => Ok(()),
        };
        let trained = train(
            be,
            model.as_ref(),
            &task.train,
            &set,
            &mut state,
            pb.as_ref(),
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
    Ok(report(be, &task, cfg, reports))
}

/// `bella eval`: evaluate the adapters saved in a checkpoint directory (every method of
/// the run when `methods` is empty) on the run's data (`data`, else the dataset `run.json`
/// records, else the digits task).
pub fn eval_saved(
    be: &dyn Backend,
    dir: &Path,
    methods: &[Method],
    data: &Option<PathBuf>,
    plots: &Option<PathBuf>,
) -> Result<Report> {
    let ck = CheckpointDir::open(dir);
    let record = ck.load_record()?;
    let cfg = &record.cfg;
    let spec = ck.load_base(&record)?;
    let (task, _) = saved_task(&ck, &record, &spec, data)?;
    let base = Arc::new(FrozenMlp::upload(be, spec)?);
    let methods = if methods.is_empty() {
        ck.methods(&record)?
    } else {
        dedup(methods)
    };
    let mut reports = Vec::new();
    for method in methods {
        let (model, _) = build_model(method, &base, cfg)?;
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
    Ok(report(be, &task, cfg, reports))
}
