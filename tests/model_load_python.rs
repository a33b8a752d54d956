//! A model written by Python (safetensors + NumPy, f32 and f16) loads through `nn::load_model`
//! and gives the logits of an independent float64 NumPy forward of the same weights.
//! Without python3 + numpy + safetensors it prints a notice and skips, unless
//! `BELLA_REQUIRE` contains `numpy`.

use bella::backend::cpu::CpuBackend;
use bella::nn::{load_model, Activation, FrozenMlp};
use bella::rng::Rng;
use bella::Backend;
use std::process::Command;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python_model/make_model.py"
);

#[test]
fn python_written_model_matches_numpy_forward() {
    if !bella::testing::python_with("numpy, safetensors", "numpy", "the Python model test") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bella-pymodel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = Rng::fresh_seed() % 1_000_000;
    println!("seed {seed}");
    let o = Command::new(bella::testing::python())
        .arg(SCRIPT)
        .arg(&dir)
        .arg(seed.to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "make_model.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let be = CpuBackend::new();
    let expected = bella::io::safetensors::read(&dir.join("expected.safetensors")).unwrap();
    let x = expected["x"].to_f32();
    let xt = be.upload(&expected["x"].shape, &x).unwrap();
    for (dtype, act) in [("float32", Activation::Relu), ("float16", Activation::Gelu)] {
        let spec = load_model(&dir.join(format!("model_{dtype}.safetensors"))).unwrap();
        assert_eq!(
            spec.activation, act,
            "{dtype}: activation from metadata (or the ReLU default)"
        );
        assert_eq!(spec.layers.len(), 3);
        assert!(spec.layers[2].bias.is_none());
        let model = FrozenMlp::upload(&be, spec).unwrap();
        let got = be.download(&model.logits(&be, &xt).unwrap()).unwrap();
        let want = expected[&format!("logits_{dtype}")].to_f32();
        let err = bella::testing::rel_err(&got, &want);
        assert!(err < 1e-5, "{dtype}: relative error {err} against NumPy");
    }
    std::fs::remove_dir_all(&dir).ok();
}
