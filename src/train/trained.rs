//! Trained particles as a library user holds them: trained in memory on their own model and
//! arrays ([`fit`]) or loaded from a checkpoint ([`Trained::load`]); predictions with
//! uncertainty ([`Trained::predict`]); PEFT LoRA adapters ([`Trained::export_peft`]).
//!
//! ```
//! use bella::backend::cpu::CpuBackend;
//! use bella::nn::{HostLinear, MlpSpec, Activation};
//! use bella::train::{fit, Method, Split, TrainConfig};
//!
//! // A 3 → 4 → 2 MLP (PyTorch layout, weight [out, in]) and eight labelled rows.
//! let spec = MlpSpec {
//!     layers: vec![
//!         HostLinear { name: "0".into(), out_features: 4, in_features: 3,
//!                      weight: (0..12).map(|i| (i as f32 * 0.37).sin()).collect(), bias: None },
//!         HostLinear { name: "2".into(), out_features: 2, in_features: 4,
//!                      weight: (0..8).map(|i| (i as f32 * 0.71).cos()).collect(), bias: Some(vec![0.0; 2]) },
//!     ],
//!     activation: Activation::Relu,
//! };
//! let mut train = Split::new(3);
//! for i in 0..8 {
//!     let v = i as f32 / 8.0;
//!     train.push(&[v, 1.0 - v, 0.5], (i % 2) as u32);
//! }
//! let be = CpuBackend::new();
//! let cfg = TrainConfig { particles: 3, rank: 2, epochs: 5, batch_size: 4, ..TrainConfig::default() };
//! let trained = fit(&be, spec, &train, Method::BellaSvgd, &cfg)?;
//!
//! // Predictions with uncertainty for new rows.
//! let mut x = Split::new(3);
//! x.x = vec![0.1, 0.9, 0.5, 0.7, 0.3, 0.5];
//! let p = trained.predict(&be, &x)?;
//! assert_eq!((p.k, p.len(), p.classes), (3, 2, 2));
//! assert!(p.mutual_info.iter().all(|&mi| mi >= -1e-6));
//!
//! // One PEFT LoRA adapter per particle, plus the base.
//! let out = std::env::temp_dir().join(format!("bella-doc-export-{}", std::process::id()));
//! trained.export_peft(&be, &out)?;
//! assert!(out.join("particle_2/adapter_config.json").exists());
//! # std::fs::remove_dir_all(&out).ok();
//! # Ok::<(), bella::BellaError>(())
//! ```

use super::checkpoint::CheckpointDir;
use super::eval::{predict, Prediction};
use super::method::{Method, TrainConfig};
use super::split::Split;
use super::task::{build_started, settings};
use super::trainer::{train, RunState};
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::io::safetensors as st;
use crate::nn::peft::{self, PeftAdapter};
use crate::nn::{save_model, FrozenMlp, MlpSpec, Particles};
use crate::ops::named::HostTensor;
use crate::tensor::Tensor;
use std::path::Path;
use std::sync::Arc;

/// Particles of one method on a frozen base, their parameters on a backend.
pub struct Trained {
    /// The method they were trained with.
    pub method: Method,
    /// The frozen base, on the same backend.
    pub base: Arc<FrozenMlp>,
    /// The particles' layout (LoRA or dense) over the arena.
    pub model: Box<dyn Particles>,
    /// The `[K, D]` parameter arena.
    pub arena: Tensor,
}

/// Train `method`'s particles on `spec` (frozen) with the rows and labels of `train`, in
/// memory (no checkpoints, no progress output), with `cfg`'s settings (`cfg.particles`,
/// `rank`, `alpha`, `target_modules`, epochs, optimizer, SVGD prior and bandwidth).
pub fn fit(
    be: &dyn Backend,
    spec: MlpSpec,
    train: &Split,
    method: Method,
    cfg: &TrainConfig,
) -> Result<Trained> {
    fit_from(be, spec, train, method, cfg, &[])
}

/// [`fit`], with the LoRA particles started from PEFT adapters (read with
/// [`peft::read_adapter`]; K of them, or one for `single_lora`). `cfg`'s rank, alpha and
/// target modules must be the adapters' ([`peft::common_settings`] gives them).
pub fn fit_from(
    be: &dyn Backend,
    spec: MlpSpec,
    data: &Split,
    method: Method,
    cfg: &TrainConfig,
    adapters: &[PeftAdapter],
) -> Result<Trained> {
    cfg.check()?;
    if data.features != spec.in_features() {
        return Err(BellaError::invalid(format!(
            "the data has {} features per row, the model takes {} inputs",
            data.features,
            spec.in_features()
        )));
    }
    if !data.is_labeled() {
        return Err(BellaError::invalid("the training rows need one label each"));
    }
    let classes = spec.out_features();
    if let Some((row, &y)) = data
        .y
        .iter()
        .enumerate()
        .find(|(_, &y)| y as usize >= classes)
    {
        return Err(BellaError::invalid(format!(
            "label {y} at row {row}; the model has {classes} outputs (labels 0..{})",
            classes - 1
        )));
    }
    let base = Arc::new(FrozenMlp::upload(be, spec)?);
    let (model, init) = build_started(method, &base, cfg, adapters)?;
    let mut state = RunState::fresh(be, model.k(), model.d(), &init)?;
    let set = settings(method, cfg);
    train(
        be,
        model.as_ref(),
        data,
        &set,
        &mut state,
        &super::progress::Silent,
        &mut |_, _| Ok(()),
    )?;
    Ok(Trained {
        method,
        base,
        model,
        arena: state.arena,
    })
}

impl Trained {
    /// `method`'s particles as saved in the checkpoint directory `dir` (by `bella train
    /// --checkpoint DIR`), on `be`.
    pub fn load(be: &dyn Backend, dir: &Path, method: Method) -> Result<Self> {
        let ck = CheckpointDir::open(dir);
        let record = ck.load_record()?;
        let methods = ck.methods(&record)?;
        if !methods.contains(&method) {
            let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
            return Err(BellaError::invalid(format!(
                "the run in {} trained {}, not {}",
                dir.display(),
                names.join(", "),
                method.name()
            )));
        }
        let base = Arc::new(FrozenMlp::upload(be, ck.load_base(&record)?)?);
        let (model, _) = super::task::build_model(method, &base, &record.cfg)?;
        let state = ck.load(be, method, model.as_ref())?;
        Ok(Trained {
            method,
            base,
            model,
            arena: state.arena,
        })
    }

    /// Every particle's logits on the rows of `x` and the predictive distribution with its
    /// uncertainty (see [`Prediction`]).
    pub fn predict(&self, be: &dyn Backend, x: &Split) -> Result<Prediction> {
        let want = self.base.spec.in_features();
        if x.features != want {
            return Err(BellaError::invalid(format!(
                "the inputs have {} features per row, the model takes {want}",
                x.features
            )));
        }
        predict(be, self.model.as_ref(), &self.arena, x)
    }

    /// Write `out/base.safetensors` (the frozen base under its own names) and, per particle
    /// k, `out/particle_{k}/` as PEFT saves a LoRA adapter (see [`crate::nn::peft`]). `out`
    /// must not exist or be empty.
    pub fn export_peft(&self, be: &dyn Backend, out: &Path) -> Result<()> {
        let Some(lora) = self.model.as_lora() else {
            return Err(BellaError::invalid(format!(
                "{} has no adapters to export (its particles are full fine-tunes)",
                self.method.name()
            )));
        };
        if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
            return Err(BellaError::invalid(format!(
                "{} exists and is not empty; export into a new directory",
                out.display()
            )));
        }
        std::fs::create_dir_all(out)
            .map_err(|e| BellaError::io(format!("cannot create {}: {e}", out.display())))?;
        save_model(&out.join("base.safetensors"), &self.base.spec)?;
        let arena = be.download(&self.arena)?;
        for k in 0..lora.k {
            peft::write_adapter(&out.join(format!("particle_{k}")), lora, &arena, k)?;
        }
        Ok(())
    }
}

/// Write a prediction as f32 safetensors: `logits [K, N, C]`, `probs [N, C]`, `entropy [N]`,
/// `expected_entropy [N]`, `mutual_info [N]`.
pub fn write_prediction(path: &Path, p: &Prediction) -> Result<()> {
    let (k, n, c) = (p.k, p.len(), p.classes);
    let tensors = vec![
        (
            "logits".to_string(),
            HostTensor::float(&[k, n, c], p.logits.clone()),
        ),
        (
            "probs".to_string(),
            HostTensor::float(&[n, c], p.probs.clone()),
        ),
        (
            "entropy".to_string(),
            HostTensor::float(&[n], p.entropy.clone()),
        ),
        (
            "expected_entropy".to_string(),
            HostTensor::float(&[n], p.expected_entropy.clone()),
        ),
        (
            "mutual_info".to_string(),
            HostTensor::float(&[n], p.mutual_info.clone()),
        ),
    ];
    st::write(path, &tensors)
}
