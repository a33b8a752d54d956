//! The training task on a tiny configuration: every method runs and reports sane metrics,
//! `--resume` continues a run exactly, and bad checkpoints or a diverging loss stop with a
//! clear error that keeps the last good checkpoint.

use bella::backend::cpu::CpuBackend;
use bella::train::{self, Method, RunOptions, TrainConfig};
use std::path::{Path, PathBuf};

fn tiny(epochs: usize) -> TrainConfig {
    TrainConfig {
        particles: 2,
        rank: 2,
        epochs,
        batch_size: 16,
        per_class: 5,
        widths: vec![64, 24, 16, 8],
        pretrain_epochs: 2,
        ..TrainConfig::default()
    }
}

fn opts(cfg: TrainConfig, dir: Option<&Path>, resume: bool) -> RunOptions {
    RunOptions {
        cfg,
        methods: Method::ALL.to_vec(),
        checkpoint: dir.map(Path::to_path_buf),
        resume,
        base: None,
        data: None,
        init_from_peft: Vec::new(),
        quiet: true,
        plots: None,
    }
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bella-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn every_method_trains_and_reports() {
    let be = CpuBackend::new();
    let report = train::run(&be, &opts(tiny(2), None, false)).unwrap();
    assert_eq!(report.methods.len(), 4);
    // Trainable parameters: K·D, D = Σ r(I+O) for LoRA, Σ (O·I + O) for full fine-tunes.
    let lora_d = 2 * (64 + 24) + 2 * (24 + 16) + 2 * (16 + 8);
    let full_d = 64 * 24 + 24 + 24 * 16 + 16 + 16 * 8 + 8;
    let params: Vec<usize> = report.methods.iter().map(|m| m.trainable_params).collect();
    assert_eq!(params, vec![lora_d, 2 * lora_d, 2 * lora_d, 2 * full_d]);
    for m in &report.methods {
        for c in [m.in_dist.unwrap(), m.shifted.unwrap()] {
            assert!(
                (0.0..=1.0).contains(&c.accuracy) && (0.0..=1.0).contains(&c.ece),
                "{m:?}"
            );
            assert!(
                c.nll.is_finite() && c.nll > 0.0 && (0.0..=2.0).contains(&c.brier),
                "{m:?}"
            );
        }
        assert!((0.0..=1.0).contains(&m.ood_auroc_entropy.unwrap()));
        assert_eq!(m.ood_auroc_mi.is_some(), m.method != "single_lora");
    }
}

fn tensors(path: &Path) -> bella::ops::named::Named {
    bella::io::safetensors::read(path).unwrap()
}

#[test]
fn resume_continues_exactly() {
    let be = CpuBackend::new();
    let (a, b) = (temp("straight"), temp("resumed"));
    let straight = train::run(&be, &opts(tiny(3), Some(&a), false)).unwrap();
    train::run(&be, &opts(tiny(1), Some(&b), false)).unwrap();
    let resumed = train::run(&be, &opts(tiny(3), Some(&b), true)).unwrap();
    for m in Method::ALL {
        let f = format!("{}.safetensors", m.name());
        assert_eq!(
            tensors(&a.join(&f)),
            tensors(&b.join(&f)),
            "{f}: parameters or optimizer state differ"
        );
    }
    for (x, y) in straight.methods.iter().zip(&resumed.methods) {
        assert_eq!(
            (x.in_dist, x.shifted),
            (y.in_dist, y.shifted),
            "{}",
            x.method
        );
    }
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

#[test]
fn bad_checkpoints_and_divergence_are_clear_errors() {
    let be = CpuBackend::new();
    let dir = temp("errors");
    // Nothing to resume.
    let e = train::run(&be, &opts(tiny(2), Some(&dir), true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no run to resume"), "{e}");

    train::run(&be, &opts(tiny(1), Some(&dir), false)).unwrap();
    let svgd = dir.join("bella_svgd.safetensors");
    let good = std::fs::read(&svgd).unwrap();

    // A loss that blows up: stop, say where, keep the last good checkpoint as it was.
    let mut cfg = tiny(3);
    cfg.lr = 1e30;
    cfg.full_lr = 1e30;
    let mut o = opts(cfg, Some(&dir), true);
    o.methods = vec![Method::BellaSvgd];
    let e = train::run(&be, &o).unwrap_err().to_string();
    assert!(
        e.contains("bella_svgd loss is") && e.contains("epoch 2"),
        "{e}"
    );
    assert!(
        e.contains("last good checkpoint") && e.contains("bella_svgd.safetensors"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&svgd).unwrap(),
        good,
        "the last good checkpoint changed"
    );

    // Different settings on resume.
    let mut cfg = tiny(2);
    cfg.rank = 3;
    let e = train::run(&be, &opts(cfg, Some(&dir), true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("different settings"), "{e}");

    // A corrupt, then a missing method checkpoint.
    std::fs::write(&svgd, &good[..good.len() / 2]).unwrap();
    let e = train::run(&be, &opts(tiny(2), Some(&dir), true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bella_svgd.safetensors"), "{e}");
    std::fs::remove_file(&svgd).unwrap();
    let e = train::run(&be, &opts(tiny(2), Some(&dir), true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Particles whose predictions are NaN (here: adapters of ±1e30, so the logits overflow)
/// make evaluation a `NonFinite` error naming the split, not a hang in AUROC or an NLL
/// that looks plausible.
#[test]
fn non_finite_predictions_are_an_error() {
    use bella::nn::{Activation, DenseParticles, FrozenMlp};
    let be = CpuBackend::new();
    let cfg = tiny(1);
    let task = bella::train::task_data::TaskData::digits(cfg.per_class).unwrap();
    let spec = DenseParticles::random_spec(&cfg.widths, Activation::Relu, 3);
    let base = std::sync::Arc::new(FrozenMlp::upload(&be, spec).unwrap());
    let (model, _) = bella::train::task::build_model(Method::BellaSvgd, &base, &cfg).unwrap();
    let huge: Vec<f32> = (0..model.k() * model.d())
        .map(|i| if i % 2 == 0 { 1e30 } else { -1e30 })
        .collect();
    let arena = bella::Backend::upload(&be, &[model.k(), model.d()], &huge).unwrap();
    let e = bella::train::eval::evaluate(&be, model.as_ref(), &arena, &task)
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&e, bella::BellaError::NonFinite(m) if m.contains("evaluation on train")),
        "{e:?}"
    );
}
