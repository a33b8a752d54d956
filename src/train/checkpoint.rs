//! Checkpoints: one safetensors file per method in the checkpoint directory, written
//! atomically after every epoch (and once before the first), holding the particles under
//! PEFT-style names (see `nn::Particles::to_named`), the AdamW moments as
//! `optimizer.exp_avg` / `optimizer.exp_avg_sq` (`[K, D]`, the arena layout) and, in the
//! header metadata, the epoch, step and training time. `run.json` ([`RunRecord`]) holds
//! the run's configuration, the methods it trains and a fingerprint of its base, and
//! `base.safetensors` the frozen base, so `--resume` and `bella eval` rebuild exactly the
//! same model.

use super::method::{Method, TrainConfig};
use super::trainer::RunState;
use crate::backend::Backend;
use crate::error::{BellaError, Result};
use crate::io::safetensors as st;
use crate::nn::{MlpSpec, Particles};
use crate::ops::named::HostTensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FORMAT: &str = "bella-checkpoint-1";

/// `run.json`: the configuration's fields at the top level, then what the run is made of.
/// Files written before `methods` and `base_fingerprint` were recorded lack them and still
/// load (as `None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    /// The run configuration, stored flat at the top level of `run.json`.
    pub cfg: TrainConfig,
    /// The methods this run trains, in training order; a plain `--resume` continues exactly
    /// these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<Method>>,
    /// [`base_fingerprint`] of `base.safetensors` when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_fingerprint: Option<String>,
    /// The user's dataset (`--data`), as given; absent for the embedded digits task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// `Dataset::fingerprint` of that dataset when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
    /// The PEFT adapter directories the particles started from (`--init-from-peft`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from_peft: Option<Vec<PathBuf>>,
}

/// A 64-bit FNV-1a hash (hex) of a model's layer names, shapes, weights, biases and
/// activation: what decides the frozen base's function and the adapters' names.
pub fn base_fingerprint(spec: &MlpSpec) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(format!("{:?}", spec.activation).as_bytes());
    for l in &spec.layers {
        eat(l.name.as_bytes());
        eat(&[0]);
        eat(&(l.out_features as u64).to_le_bytes());
        eat(&(l.in_features as u64).to_le_bytes());
        for w in &l.weight {
            eat(&w.to_bits().to_le_bytes());
        }
        match &l.bias {
            Some(b) => {
                eat(&[1]);
                for x in b {
                    eat(&x.to_bits().to_le_bytes());
                }
            }
            None => eat(&[0]),
        }
    }
    format!("{h:016x}")
}

/// A checkpoint directory: `run.json`, `base.safetensors` and one
/// `{method}.safetensors` per trained method (parameters, AdamW moments, progress).
pub struct CheckpointDir {
    /// The directory.
    pub dir: PathBuf,
}

impl CheckpointDir {
    /// A checkpoint directory to write into, created if it is not there (fresh runs).
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            BellaError::io(format!(
                "cannot create checkpoint directory {}: {e}",
                dir.display()
            ))
        })?;
        Ok(CheckpointDir {
            dir: dir.to_path_buf(),
        })
    }
    /// An existing checkpoint directory, not touched (resume, eval).
    pub fn open(dir: &Path) -> Self {
        CheckpointDir {
            dir: dir.to_path_buf(),
        }
    }
    /// `base.safetensors`: the frozen base.
    pub fn base_path(&self) -> PathBuf {
        self.dir.join("base.safetensors")
    }
    /// `{method}.safetensors`: that method's arena, moments and progress.
    pub fn method_path(&self, method: Method) -> PathBuf {
        self.dir.join(format!("{}.safetensors", method.name()))
    }
    /// `run.json`: the [`RunRecord`].
    pub fn record_path(&self) -> PathBuf {
        self.dir.join("run.json")
    }

    /// Write `record` to `run.json` (atomically: a crash leaves the old file).
    pub fn save_record(&self, record: &RunRecord) -> Result<()> {
        let text =
            serde_json::to_string_pretty(record).map_err(|e| BellaError::io(e.to_string()))?;
        write_atomic(&self.record_path(), (text + "\n").as_bytes())
    }

    /// Read `run.json`; [`BellaError::Io`] if it is missing or corrupt.
    pub fn load_record(&self) -> Result<RunRecord> {
        let p = self.record_path();
        let text = std::fs::read_to_string(&p).map_err(|e| {
            BellaError::io(format!(
                "no run to resume in {}: cannot read {}: {e}",
                self.dir.display(),
                p.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| BellaError::io(format!("{}: corrupt run configuration: {e}", p.display())))
    }

    /// The methods of the run `record` describes: as recorded, or for a `run.json` from
    /// before methods were recorded, every method with a checkpoint file here.
    pub fn methods(&self, record: &RunRecord) -> Result<Vec<Method>> {
        let methods = match &record.methods {
            Some(m) => m.clone(),
            None => Method::ALL
                .into_iter()
                .filter(|m| self.method_path(*m).exists())
                .collect(),
        };
        if methods.is_empty() {
            return Err(BellaError::io(format!(
                "no method checkpoints in {}",
                self.dir.display()
            )));
        }
        Ok(methods)
    }

    /// The frozen base of the run `record` describes, checked against the fingerprint
    /// recorded when the run started (when there is one).
    pub fn load_base(&self, record: &RunRecord) -> Result<MlpSpec> {
        let p = self.base_path();
        if !p.exists() {
            return Err(BellaError::io(format!("{} does not exist", p.display())));
        }
        let spec = crate::nn::load_model(&p)?;
        if let Some(want) = &record.base_fingerprint {
            let got = base_fingerprint(&spec);
            if &got != want {
                return Err(BellaError::io(format!(
                    "{} is not the base this run was trained on (fingerprint {got}, {} records {want})",
                    p.display(),
                    self.record_path().display()
                )));
            }
        }
        Ok(spec)
    }

    /// Save `method`'s state: the arena as the model's named tensors, the AdamW moments
    /// (`optimizer.exp_avg`, `optimizer.exp_avg_sq`) and the epoch, step and time as
    /// metadata (atomically, as [`CheckpointDir::save_record`]).
    pub fn save(
        &self,
        be: &dyn Backend,
        method: Method,
        model: &dyn Particles,
        state: &RunState,
    ) -> Result<()> {
        let (k, d) = (model.k(), model.d());
        let mut tensors = model.to_named(&be.download(&state.arena)?);
        tensors.push((
            "optimizer.exp_avg".into(),
            HostTensor::float(&[k, d], be.download(&state.m)?),
        ));
        tensors.push((
            "optimizer.exp_avg_sq".into(),
            HostTensor::float(&[k, d], be.download(&state.v)?),
        ));
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("method".to_string(), method.name().to_string()),
            ("epoch".to_string(), state.epoch.to_string()),
            ("step".to_string(), state.step.to_string()),
            ("train_seconds".to_string(), state.train_seconds.to_string()),
        ]);
        st::write_with_metadata(&self.method_path(method), &tensors, Some(meta))
    }

    /// The state saved for `method`; any problem (missing file, not safetensors, another
    /// method's file, missing or mis-shaped tensors) is an error naming the file.
    pub fn load(
        &self,
        be: &dyn Backend,
        method: Method,
        model: &dyn Particles,
    ) -> Result<RunState> {
        let p = self.method_path(method);
        if !p.exists() {
            return Err(BellaError::io(format!(
                "checkpoint {} does not exist",
                p.display()
            )));
        }
        let ctx = |e: BellaError| BellaError::io(format!("checkpoint {}: {e}", p.display()));
        let named = st::read(&p).map_err(ctx)?;
        let meta = st::read_metadata(&p).map_err(ctx)?;
        let field = |key: &str| -> Result<&String> {
            meta.get(key).ok_or_else(|| {
                BellaError::io(format!(
                    "checkpoint {}: metadata `{key}` missing",
                    p.display()
                ))
            })
        };
        if field("format")? != FORMAT || field("method")? != method.name() {
            return Err(BellaError::io(format!(
                "checkpoint {} is not a {} checkpoint of this format",
                p.display(),
                method.name()
            )));
        }
        let num = |key: &str| -> Result<f64> {
            field(key)?.parse::<f64>().map_err(|e| {
                BellaError::io(format!("checkpoint {}: metadata `{key}`: {e}", p.display()))
            })
        };
        let (k, d) = (model.k(), model.d());
        let arena = model.arena_from_named(&named).map_err(ctx)?;
        let moment = |name: &str| crate::nn::lora::take(&named, name, &[k, d]).map_err(ctx);
        let (m, v) = (
            moment("optimizer.exp_avg")?,
            moment("optimizer.exp_avg_sq")?,
        );
        if arena.iter().chain(&m).chain(&v).any(|x| !x.is_finite()) {
            return Err(BellaError::io(format!(
                "checkpoint {} holds non-finite values",
                p.display()
            )));
        }
        Ok(RunState {
            arena: be.upload(&[k, d], &arena)?,
            m: be.upload(&[k, d], &m)?,
            v: be.upload(&[k, d], &v)?,
            step: num("step")? as u32,
            epoch: num("epoch")? as usize,
            train_seconds: num("train_seconds")?,
        })
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = st::temp_path(path);
    std::fs::write(&tmp, bytes)
        .map_err(|e| BellaError::io(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| BellaError::io(format!("cannot move {} into place: {e}", tmp.display())))
}
