//! Training on wgpu and on the PTX simulator against the same run on the CPU, on a tiny
//! version of the default task: every method's trained parameters and loss curve, and the
//! whole `bella train` pipeline's report (pre-training, safetensors round trip, evaluation).
//!
//! Tolerances. Backends sum in different orders, so the same f32 run drifts apart by
//! rounding, ~1e-7 relative per op; AdamW can amplify it (a coordinate whose gradient is
//! near 0 gets a step of ±lr whose sign is noise), more so over long runs. Measured here
//! (16 steps, wgpu/lavapipe vs CPU): parameters ~1e-6 of the distance training moved them,
//! losses, NLL, Brier ~1e-7 relative. A kernel bug (a wrong term, index, sign, scale or a
//! missed tile) moves parameters by O(1) of that distance and losses by percents, so the
//! bounds sit ~100x over the drift and far under a bug.
//! Unavailable backends are skipped with a notice unless `BELLA_REQUIRE` names them.

use bella::backend::cpu::CpuBackend;
use bella::backend::{Backend, BackendKind};
use bella::nn::{Activation, DenseParticles, FrozenMlp};
use bella::testing::backend_for_test;
use bella::train::data::{digits_task, DigitsTask};
use bella::train::task::build_model;
use bella::train::trainer::{train, RunState, StepSettings};
use bella::train::{self, Method, Report, RunOptions, TrainConfig};
use std::sync::Arc;

/// Relative parameter error allowed after training (see the module docs).
const PARAM_TOL: f64 = 1e-4;
/// Relative error allowed on epoch losses, NLL and Brier.
const LOSS_TOL: f64 = 1e-5;

fn tiny() -> TrainConfig {
    TrainConfig {
        particles: 3,
        rank: 2,
        epochs: 4,
        batch_size: 16,
        // Large learning rates so that a few steps really train (a run that barely moves
        // would agree even with a broken gradient).
        lr: 2e-2,
        full_lr: 5e-3,
        pretrain_lr: 1e-2,
        per_class: 8,
        widths: vec![64, 20, 12, 8],
        pretrain_epochs: 2,
        ..TrainConfig::default()
    }
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
        dtype: cfg.dtype,
    }
}

/// Starting and trained arena and per-epoch mean losses of `method` on a fixed random
/// frozen base.
fn trained(
    be: &dyn Backend,
    task: &DigitsTask,
    method: Method,
    cfg: &TrainConfig,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let spec = DenseParticles::random_spec(&cfg.widths, Activation::Relu, 7);
    let base = Arc::new(FrozenMlp::upload(be, spec).unwrap());
    let (model, init) = build_model(method, &base, cfg).unwrap();
    let mut state = RunState::fresh(be, model.k(), model.d(), &init).unwrap();

    let mut losses = Vec::new();
    train(
        be,
        model.as_ref(),
        &task.target_train,
        &settings(method, cfg),
        &mut state,
        &indicatif::ProgressBar::hidden(),
        &mut |_, loss| {
            losses.push(loss);
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{} on {}: {e}", method.name(), be.kind()));
    (init, be.download(&state.arena).unwrap(), losses)
}

/// `‖a − b‖`.
fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-6)
}

/// Every method, a few epochs: parameters and loss curve as the CPU's (products in
/// `dtype`: with bf16 the LoRA methods train in mixed precision on both sides, the same
/// 16-bit operands, so the drift is f32 accumulation's as before; on ptx-sim the shared-x
/// LoRA forward of bella_svgd runs the tensor-core kernels).
fn parameters_match_cpu(kind: BackendKind, dtype: bella::DType) {
    let Some(be) = backend_for_test(kind) else {
        return;
    };
    let cfg = TrainConfig { dtype, ..tiny() };
    let task = digits_task(cfg.per_class).unwrap();
    let cpu = CpuBackend::new();
    for method in Method::ALL {
        let (init, want, want_loss) = trained(&cpu, &task, method, &cfg);
        let (_, got, got_loss) = trained(be.as_ref(), &task, method, &cfg);
        // Relative to how far training moved the parameters, so a wrong update is seen
        // even where it is small next to the (frozen-base or initial) parameters.
        let err = dist(&got, &want) / dist(&want, &init);
        eprintln!(
            "{kind} {}: parameter error {err:.2e} of the training step, \
             losses {got_loss:?} vs cpu {want_loss:?}",
            method.name()
        );
        assert!(
            err <= PARAM_TOL,
            "{kind} {}: trained parameters differ from the CPU's by {err:.3e} of how far \
             training moved them (tolerance {PARAM_TOL})",
            method.name()
        );
        for (e, (g, w)) in got_loss.iter().zip(&want_loss).enumerate() {
            assert!(
                close(*g as f64, *w as f64, LOSS_TOL),
                "{kind} {}: epoch {} loss {g} vs cpu {w}",
                method.name(),
                e + 1
            );
        }
    }
}

fn run(be: &dyn Backend) -> Report {
    let opts = RunOptions {
        cfg: tiny(),
        methods: Method::ALL.to_vec(),
        checkpoint: None,
        resume: false,
        base: None,
        data: None,
        init_from_peft: Vec::new(),
        quiet: true,
        plots: None,
    };
    train::run(be, &opts).unwrap_or_else(|e| panic!("bella train on {}: {e}", be.kind()))
}

/// `bella train` end to end (pre-training included): the report agrees with the CPU's.
fn report_matches_cpu(kind: BackendKind) {
    let Some(be) = backend_for_test(kind) else {
        return;
    };
    let want = run(&CpuBackend::new());
    let got = run(be.as_ref());
    assert_eq!(got.backend, kind.name());
    assert_eq!(got.methods.len(), want.methods.len());
    for (g, w) in got.methods.iter().zip(&want.methods) {
        let m = &w.method;
        assert_eq!(g.method, *m);
        assert_eq!(g.trainable_params, w.trainable_params, "{m}");
        for (split, gs, ws) in [
            ("in_dist", g.in_dist.unwrap(), w.in_dist.unwrap()),
            ("shifted", g.shifted.unwrap(), w.shifted.unwrap()),
        ] {
            eprintln!("{kind} {m} {split}: {gs:?} vs cpu {ws:?}");
            // One image may flip where the top two logits tie to rounding (test splits have
            // several hundred images).
            assert!(
                (gs.accuracy - ws.accuracy).abs() <= 0.005,
                "{kind} {m} {split}: accuracy {} vs cpu {}",
                gs.accuracy,
                ws.accuracy
            );
            assert!(
                close(gs.nll, ws.nll, LOSS_TOL),
                "{kind} {m} {split}: NLL {} vs cpu {}",
                gs.nll,
                ws.nll
            );
            assert!(
                close(gs.brier, ws.brier, LOSS_TOL),
                "{kind} {m} {split}: Brier {} vs cpu {}",
                gs.brier,
                ws.brier
            );
            assert!(
                (gs.ece - ws.ece).abs() <= 1e-3,
                "{kind} {m} {split}: ECE {} vs cpu {}",
                gs.ece,
                ws.ece
            );
        }
        assert!(
            (g.ood_auroc_entropy.unwrap() - w.ood_auroc_entropy.unwrap()).abs() <= 1e-3,
            "{kind} {m}: AUROC(H) {} vs cpu {}",
            g.ood_auroc_entropy.unwrap(),
            w.ood_auroc_entropy.unwrap()
        );
        match (g.ood_auroc_mi, w.ood_auroc_mi) {
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-3,
                "{kind} {m}: AUROC(MI) {a} vs cpu {b}"
            ),
            (a, b) => assert_eq!(a.is_some(), b.is_some(), "{kind} {m}: AUROC(MI)"),
        }
    }
}

#[test]
fn wgpu_parameters_match_cpu() {
    parameters_match_cpu(BackendKind::Wgpu, bella::DType::F32);
}

#[test]
fn wgpu_bf16_parameters_match_cpu() {
    parameters_match_cpu(BackendKind::Wgpu, bella::DType::BF16);
}

#[test]
fn wgpu_report_matches_cpu() {
    report_matches_cpu(BackendKind::Wgpu);
}

#[test]
fn ptx_sim_parameters_match_cpu() {
    parameters_match_cpu(BackendKind::PtxSim, bella::DType::F32);
}

#[test]
fn ptx_sim_bf16_parameters_match_cpu() {
    parameters_match_cpu(BackendKind::PtxSim, bella::DType::BF16);
}

#[test]
fn ptx_sim_report_matches_cpu() {
    report_matches_cpu(BackendKind::PtxSim);
}
