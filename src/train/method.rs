//! The methods and the run configuration.

use crate::dtype::DType;
use crate::error::{BellaError, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
/// A training method: how many particles and how they move.
pub enum Method {
    /// One LoRA adapter (K = 1).
    SingleLora,
    /// K independent LoRA particles, each with its own initialisation and batch order.
    BellaEnsemble,
    /// K LoRA particles moved together by SVGD (shared batches, RBF kernel, Gaussian prior).
    BellaSvgd,
    /// K full fine-tunes of every weight and bias: the expensive reference.
    FullEnsemble,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 4] = [
        Method::SingleLora,
        Method::BellaEnsemble,
        Method::BellaSvgd,
        Method::FullEnsemble,
    ];
    /// The name used on the command line, in reports and checkpoint files.
    pub fn name(self) -> &'static str {
        match self {
            Method::SingleLora => "single_lora",
            Method::BellaEnsemble => "bella_ensemble",
            Method::BellaSvgd => "bella_svgd",
            Method::FullEnsemble => "full_ensemble",
        }
    }
    /// The inverse of [`Method::name`]; [`BellaError::Unknown`] for another name.
    pub fn parse(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| BellaError::Unknown {
                what: "method",
                name: s.to_string(),
            })
    }
    /// Particles this method trains for a run with `k` particles.
    pub fn particles(self, k: usize) -> usize {
        if self == Method::SingleLora {
            1
        } else {
            k
        }
    }
    /// SVGD moves all particles on the same batch; the others give each particle its own.
    pub fn shared_batches(self) -> bool {
        self == Method::BellaSvgd
    }
}

/// Everything that decides a run's numbers. Stored in `run.json` beside checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Particles K of the multi-particle methods.
    pub particles: usize,
    /// LoRA rank r.
    pub rank: usize,
    /// LoRA scale is `alpha / rank`.
    pub alpha: f32,
    /// Passes over the training set.
    pub epochs: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// AdamW learning rate of the LoRA methods.
    pub lr: f32,
    /// Learning rate of the full fine-tunes (all weights move, so smaller).
    pub full_lr: f32,
    /// AdamW decoupled weight decay of the non-SVGD methods.
    pub weight_decay: f32,
    /// `zero` (PEFT) or `small`.
    pub b_init: String,
    /// Seeds initialisation and batch order.
    pub seed: u64,
    /// SVGD prior: θ ~ N(0, prior_std² I) over the adapter parameters.
    pub prior_std: f32,
    /// SVGD kernel bandwidth; `None` = the median heuristic of `rbf_kernel`.
    pub bandwidth: Option<f32>,
    /// Target-domain images per class used for adaptation.
    pub per_class: usize,
    /// Base MLP widths, input to output.
    pub widths: Vec<usize>,
    /// Epochs of pre-training the base on the source domain (embedded task only).
    pub pretrain_epochs: usize,
    /// Learning rate of that pre-training.
    pub pretrain_lr: f32,
    /// The layers that get adapters, by the base file's module names; empty: every layer.
    #[serde(default)]
    pub target_modules: Vec<String>,
    /// The operand dtype of the LoRA methods' frozen-weight products (mixed precision,
    /// [`Tape::with_dtype`](crate::autograd::Tape::with_dtype)); f32 everywhere else.
    #[serde(default)]
    pub dtype: DType,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            particles: 4,
            rank: 4,
            alpha: 8.0,
            epochs: 40,
            batch_size: 32,
            lr: 3e-3,
            full_lr: 1e-3,
            weight_decay: 1e-2,
            b_init: "zero".into(),
            seed: 0,
            prior_std: 1.0,
            bandwidth: None,
            per_class: 25,
            widths: vec![64, 512, 512, 8],
            pretrain_epochs: 30,
            pretrain_lr: 1e-3,
            target_modules: Vec::new(),
            dtype: DType::F32,
        }
    }
}

impl TrainConfig {
    /// Every field in range (sizes ≥ 1, rates positive and finite, ...); otherwise
    /// [`BellaError::Invalid`] saying which.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(BellaError::invalid(m));
        if self.particles == 0 || self.rank == 0 || self.batch_size == 0 || self.per_class == 0 {
            return bad("particles, rank, batch size and images per class must be ≥ 1".into());
        }
        for (name, v) in [
            ("lr", self.lr),
            ("full_lr", self.full_lr),
            ("pretrain_lr", self.pretrain_lr),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(format!("{name} must be positive and finite, got {v}"));
            }
        }
        if !(self.prior_std > 0.0 && self.prior_std.is_finite()) {
            return bad(format!(
                "prior std must be positive, got {}",
                self.prior_std
            ));
        }
        if self.widths.len() < 2 {
            return bad("the MLP needs at least an input and an output width".into());
        }
        crate::nn::BInit::parse(&self.b_init)?;
        Ok(())
    }

    /// Settings that may not change on `--resume` (they change the model or the data).
    /// Epochs and learning rates may: a resumed run can be extended.
    pub fn structural_mismatch(&self, stored: &TrainConfig) -> Option<String> {
        let mine = (
            self.particles,
            self.rank,
            self.alpha,
            &self.b_init,
            self.seed,
            self.batch_size,
        );
        let theirs = (
            stored.particles,
            stored.rank,
            stored.alpha,
            &stored.b_init,
            stored.seed,
            stored.batch_size,
        );
        if self.target_modules != stored.target_modules {
            let list = |t: &[String]| {
                if t.is_empty() {
                    "every layer".to_string()
                } else {
                    t.join(",")
                }
            };
            return Some(format!(
                "the checkpoint adapts {}, not {}",
                list(&stored.target_modules),
                list(&self.target_modules)
            ));
        }
        if mine != theirs || self.per_class != stored.per_class || self.widths != stored.widths {
            return Some(format!(
                "the checkpoint was made with particles {}, rank {}, alpha {}, b-init {}, seed {}, batch {}, {} images/class, widths {:?}",
                stored.particles, stored.rank, stored.alpha, stored.b_init, stored.seed, stored.batch_size, stored.per_class, stored.widths
            ));
        }
        None
    }
}
