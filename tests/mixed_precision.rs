//! `bella train --dtype bf16|f16` (mixed precision: 16-bit operands for the LoRA methods'
//! frozen-weight products, f32 master parameters, gradients, SVGD and AdamW) against the same
//! run in f32: the final metrics of the default task's methods within a stated tolerance,
//! and not identical (the 16-bit path really ran).
//!
//! Tolerance (absolute, per method and split): accuracy 0.03, NLL 2 % of the f32 run's,
//! ECE 0.03, Brier 0.02. At the README's full-size comparison (release build) the
//! differences were ten times smaller; see the README's "Half precision" notes.

use bella::backend::cpu::CpuBackend;
use bella::train::{self, Method, RunOptions, TrainConfig};
use bella::DType;

fn run(dtype: DType) -> train::Report {
    let cfg = TrainConfig {
        particles: 3,
        rank: 2,
        epochs: 6,
        batch_size: 16,
        per_class: 8,
        widths: vec![64, 48, 32, 8],
        pretrain_epochs: 4,
        dtype,
        ..TrainConfig::default()
    };
    let opts = RunOptions {
        cfg,
        methods: vec![Method::SingleLora, Method::BellaEnsemble, Method::BellaSvgd],
        checkpoint: None,
        resume: false,
        base: None,
        data: None,
        init_from_peft: Vec::new(),
        quiet: true,
        plots: None,
    };
    train::run(&CpuBackend::new(), &opts).unwrap()
}

#[test]
fn half_precision_training_tracks_f32() {
    let base = run(DType::F32);
    for d in [DType::BF16, DType::F16] {
        let r = run(d);
        let mut any_difference = false;
        for (a, b) in base.methods.iter().zip(&r.methods) {
            assert_eq!(a.method, b.method);
            for (x, y) in [(a.in_dist, b.in_dist), (a.shifted, b.shifted)] {
                let (x, y) = (x.unwrap(), y.unwrap());
                let what = format!("{d} {}: {y:?} vs f32 {x:?}", a.method);
                assert!((x.accuracy - y.accuracy).abs() <= 0.03, "{what}");
                assert!((x.nll - y.nll).abs() <= 0.02 * x.nll, "{what}");
                assert!((x.ece - y.ece).abs() <= 0.03, "{what}");
                assert!((x.brier - y.brier).abs() <= 0.02, "{what}");
                any_difference |= x.nll != y.nll;
            }
        }
        assert!(
            any_difference,
            "{d}: every metric equals the f32 run's: the 16-bit path did not run"
        );
    }
}
