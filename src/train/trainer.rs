//! The training loop, the same for every method and backend: forward on the tape, backward
//! into the `[K, D]` gradient arena, (for SVGD) the score and `svgd_direction` over the
//! whole arena, then one `adamw_step` over the arena. Only the mean loss leaves the device.

use super::method::Method;
use super::split::Split;
use crate::autograd::Tape;
use crate::backend::{AdamW, Backend};
use crate::dtype::DType;
use crate::error::{BellaError, Result};
use crate::nn::Particles;
use crate::ops;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// The state a checkpoint holds: parameters, AdamW moments, progress.
pub struct RunState {
    /// The `[K, D]` parameter arena.
    pub arena: Tensor,
    /// AdamW first moments, `[K, D]`.
    pub m: Tensor,
    /// AdamW second moments, `[K, D]`.
    pub v: Tensor,
    /// Optimizer steps taken.
    pub step: u32,
    /// Epochs completed.
    pub epoch: usize,
    /// Wall-clock seconds spent training so far (across resumes).
    pub train_seconds: f64,
}

impl RunState {
    /// A run at step 0: the `[k, d]` arena uploaded from `arena` (`k · d` values), zero moments.
    pub fn fresh(be: &dyn Backend, k: usize, d: usize, arena: &[f32]) -> Result<Self> {
        Ok(RunState {
            arena: be.upload(&[k, d], arena)?,
            m: be.zeros(&[k, d])?,
            v: be.zeros(&[k, d])?,
            step: 0,
            epoch: 0,
            train_seconds: 0.0,
        })
    }
}

/// Optimizer and SVGD settings of one training run.
#[derive(Clone, Copy, Debug)]
pub struct StepSettings {
    /// Names the run in errors and progress.
    pub label: &'static str,
    /// Which method's step (SVGD or independent particles).
    pub method: Method,
    /// Passes over the training set.
    pub epochs: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f32,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Seeds the batch order ([`batch_order`]).
    pub seed: u64,
    /// SVGD: standard deviation of the Gaussian prior on every parameter.
    pub prior_std: f32,
    /// SVGD: RBF bandwidth; `None` = the median heuristic of `rbf_kernel`.
    pub bandwidth: Option<f32>,
    /// The tape's product dtype ([`Tape::with_dtype`]).
    pub dtype: DType,
}

/// Called after every completed epoch (checkpointing); gets the state and the epoch's mean loss.
pub type EpochHook<'a> = dyn FnMut(&RunState, f32) -> Result<()> + 'a;

/// The order in which particle `k` sees the training set in `epoch`. It depends only on
/// (seed, particle, epoch), so a resumed run sees exactly the batches it would have seen.
pub fn batch_order(seed: u64, k: usize, epoch: usize, n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed ^ 0x5EED_0000 ^ ((k as u64) << 40) ^ ((epoch as u64) << 8));
    rng.shuffle(&mut idx);
    idx
}

/// Train `model` from `state` until `set.epochs` epochs are done.
pub fn train(
    be: &dyn Backend,
    model: &dyn Particles,
    data: &Split,
    set: &StepSettings,
    state: &mut RunState,
    progress: &dyn super::progress::Progress,
    on_epoch: &mut EpochHook,
) -> Result<()> {
    let (k, d, n) = (model.k(), model.d(), data.len());
    if n == 0 {
        return Err(BellaError::invalid("the training split is empty"));
    }
    let bs = set.batch_size.min(n);
    let batches = n.div_ceil(bs);
    let shared = set.method.shared_batches();
    for epoch in state.epoch..set.epochs {
        let start = std::time::Instant::now();
        let orders: Vec<Vec<usize>> = if shared {
            vec![batch_order(set.seed, 0, epoch, n)]
        } else {
            (0..k).map(|p| batch_order(set.seed, p, epoch, n)).collect()
        };
        let mut loss_sum = 0.0;
        for b in 0..batches {
            let range = b * bs..((b + 1) * bs).min(n);
            let m = range.len();
            let mut x = Vec::with_capacity(orders.len() * m * data.features);
            let mut labels = Vec::with_capacity(orders.len() * m);
            for order in &orders {
                for &i in &order[range.clone()] {
                    x.extend_from_slice(data.row(i));
                    labels.push(data.y[i]);
                }
            }
            let shape: Vec<usize> = if shared {
                vec![m, data.features]
            } else {
                vec![k, m, data.features]
            };
            let mut tape = Tape::with_dtype(be, set.dtype);
            let xv = tape.input(be.upload(&shape, &x)?, false);
            let logits = model.forward(&mut tape, xv, &state.arena)?;
            let loss = tape.softmax_xent(logits, &labels)?;
            let value = loss.mean(be)?;
            if !value.is_finite() {
                return Err(BellaError::NonFinite(format!(
                    "{} loss is {value} at epoch {}, batch {} of {batches} (step {})",
                    set.label,
                    epoch + 1,
                    b + 1,
                    state.step + 1
                )));
            }
            loss_sum += value;
            let mut grad = be.zeros(&[k, d])?;
            tape.backward(loss, &mut grad)?;
            if set.method == Method::BellaSvgd {
                let svgd = Svgd {
                    n,
                    prior_std: set.prior_std,
                    bandwidth: set.bandwidth,
                };
                svgd_update(be, state, &grad, &svgd, set.lr, None)?;
            } else {
                adamw_update(be, state, &grad, set.lr, set.weight_decay)?;
            }
            progress.inc(1);
            progress.set_message(format!("epoch {} loss {value:.4}", epoch + 1));
        }
        state.epoch = epoch + 1;
        state.train_seconds += start.elapsed().as_secs_f64();
        on_epoch(state, loss_sum / batches as f32)?;
    }
    Ok(())
}

/// One AdamW step (β = 0.9, 0.999, ε = 1e-8, as PyTorch's defaults) over the whole arena
/// with `grad` as the gradient; counts the step.
pub fn adamw_update(
    be: &dyn Backend,
    state: &mut RunState,
    grad: &Tensor,
    lr: f32,
    weight_decay: f32,
) -> Result<()> {
    let hp = next_step(state, lr, weight_decay);
    ops::adamw_step(be, &mut state.arena, grad, &mut state.m, &mut state.v, &hp)
}

/// Counts the step and returns its AdamW hyper-parameters (β = 0.9, 0.999, ε = 1e-8).
fn next_step(state: &mut RunState, lr: f32, weight_decay: f32) -> AdamW {
    state.step += 1;
    AdamW {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay,
        step: state.step,
    }
}

/// The posterior an SVGD step targets: `N` data points whose mean negative log-likelihood
/// the gradient is taken of, and a Gaussian prior `N(0, prior_std² I)` on every parameter.
#[derive(Clone, Copy, Debug)]
pub struct Svgd {
    /// Training-set size N: the score is `−N · ∇(mean NLL) − θ / prior_std²`.
    pub n: usize,
    /// Standard deviation of the Gaussian prior.
    pub prior_std: f32,
    /// RBF bandwidth; `None` = the median heuristic of `rbf_kernel`.
    pub bandwidth: Option<f32>,
}

/// How `φ` is formed from `(theta, score, kernel, bandwidth)`, when not by the op (see
/// [`svgd_update`]): a parameter so that tests can show a wrong direction fails them.
pub type Direction = dyn Fn(&dyn Backend, &Tensor, &Tensor, &Tensor, f32) -> Result<Tensor>;

/// The SVGD step of `bella_svgd`, on any `[K, D]` particle arena.
///
/// `grad` is `∇L̄_i` per particle, `L̄` the mean negative log-likelihood of the batch (an
/// unbiased estimate of the full-data term over N points). Score of particle i:
/// `∇ log p(θ_i | data) = −N ∇L̄_i − θ_i / σ²`. Then `φ = svgd_direction(θ, score, kernel, h)`
/// with the RBF kernel (median heuristic unless a bandwidth is given), and AdamW (no weight
/// decay) takes `−φ / N` as its gradient: dividing by N keeps the step size comparable to
/// the other methods (AdamW is nearly scale-free) while the balance of attraction and
/// repulsion stays that of the posterior. With `direction = None` the direction and AdamW
/// are one op ([`ops::svgd_step`]: fused where the backend has a kernel for it, the same
/// bits as the two ops); a given `direction` replaces `svgd_direction` (the ops run apart).
pub fn svgd_update(
    be: &dyn Backend,
    state: &mut RunState,
    grad: &Tensor,
    svgd: &Svgd,
    lr: f32,
    direction: Option<&Direction>,
) -> Result<()> {
    let nf = svgd.n as f32;
    let prior_precision = 1.0 / (svgd.prior_std * svgd.prior_std);
    let theta = &state.arena;
    let score = ops::axpby(be, -nf, grad, -prior_precision, theta)?;
    let (kernel, h) = ops::rbf_kernel(be, theta, svgd.bandwidth)?;
    let Some(direction) = direction else {
        let hp = next_step(state, lr, 0.0);
        let (arena, m, v) = (&mut state.arena, &mut state.m, &mut state.v);
        return ops::svgd_step(be, arena, &score, &kernel, h, -1.0 / nf, m, v, &hp);
    };
    let phi = direction(be, theta, &score, &kernel, h)?;
    let descent = ops::axpby(be, -1.0 / nf, &phi, 0.0, &phi)?;
    adamw_update(be, state, &descent, lr, 0.0)
}
