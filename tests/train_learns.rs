//! Training must learn: on the embedded task's target domain (digits rotated by 90°) the
//! frozen base is near chance (12.6% of 8 classes with the default pre-training), and
//! every method, adapted for 20 epochs (half the default), must beat it by a wide margin
//! in distribution and on the shifted split. A broken gradient, optimizer step or
//! particle layout leaves accuracy near the base's; the default run reaches 0.86–0.95 in
//! distribution and 0.59–0.70 shifted after 20 epochs (CPU, seed 0).
//!
//! About 2 s on a 2-core CPU in the release profile, 5 s in the test profile.

use bella::backend::cpu::CpuBackend;
use bella::nn::{save_model, FrozenMlp};
use bella::train::data::digits_task;
use bella::train::task::{base_accuracy, pretrain};
use bella::train::{self, Method, RunOptions, TrainConfig};

/// Adapted accuracy must exceed the base's by this much in distribution...
const IN_DIST_MARGIN: f64 = 0.5;
/// ...and on the shifted split (noise and moved pixels no method trained on).
const SHIFTED_MARGIN: f64 = 0.3;

#[test]
fn adapted_particles_beat_the_frozen_base() {
    let be = CpuBackend::new();
    let cfg = TrainConfig {
        epochs: 20,
        ..TrainConfig::default()
    };
    let task = digits_task(cfg.per_class).unwrap();
    let spec = pretrain(&be, &task.source, &cfg, true).unwrap();
    let dir = std::env::temp_dir().join(format!("bella-learns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base_path = dir.join("base.safetensors");
    save_model(&base_path, &spec).unwrap();
    let base = FrozenMlp::upload(&be, spec).unwrap();
    let base_in = base_accuracy(&be, &base, &task.in_dist).unwrap();
    let base_shifted = base_accuracy(&be, &base, &task.shifted).unwrap();
    let base_source = base_accuracy(&be, &base, &task.source).unwrap();
    println!("base: target {base_in:.3}, shifted {base_shifted:.3}, source {base_source:.3}");
    // The premise: the base learned its source domain and fails on the target domain.
    assert!(base_source > 0.95, "pre-training failed: {base_source}");
    assert!(
        base_in < 0.3,
        "the target domain is not new to the base: {base_in}"
    );

    let report = train::run(
        &be,
        &RunOptions {
            cfg,
            methods: Method::ALL.to_vec(),
            checkpoint: None,
            resume: false,
            base: Some(base_path),
            data: None,
            init_from_peft: Vec::new(),
            quiet: true,
            plots: None,
        },
    )
    .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(report.methods.len(), Method::ALL.len());
    for m in &report.methods {
        let (acc, sh) = (m.in_dist.unwrap().accuracy, m.shifted.unwrap().accuracy);
        println!("{}: target {acc:.3}, shifted {sh:.3}", m.method);
        assert!(
            acc > base_in + IN_DIST_MARGIN,
            "{}: accuracy {acc:.3} on the target domain, the frozen base gets {base_in:.3}",
            m.method
        );
        assert!(
            sh > base_shifted + SHIFTED_MARGIN,
            "{}: accuracy {sh:.3} on the shifted split, the frozen base gets {base_shifted:.3}",
            m.method
        );
    }
}
