//! Model loading: the name rules, f32/f16/bf16 conversion, and clear errors (never panics)
//! for files that are not safetensors, unsupported dtypes, unknown names and layers whose
//! shapes do not chain.

use bella::nn::{load_model, save_model, Activation, DenseParticles};
use bella::rng::Rng;
use safetensors::tensor::{Dtype, TensorView};
use std::path::PathBuf;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bella-model-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Write raw tensors `(name, dtype, shape, little-endian bytes)`.
fn write_raw(path: &std::path::Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn err_of(path: &std::path::Path) -> String {
    load_model(path)
        .expect_err("loading should fail")
        .to_string()
}

#[test]
fn round_trip_keeps_names_values_and_activation() {
    let spec = DenseParticles::random_spec(&[5, 7, 3], Activation::Gelu, 9);
    let p = temp("round.safetensors");
    save_model(&p, &spec).unwrap();
    assert_eq!(load_model(&p).unwrap(), spec);
}

#[test]
fn half_precision_weights_convert_on_load() {
    let mut rng = Rng::new(3);
    let (w0, b0, w1) = (
        rng.normal_vec(4 * 3),
        rng.normal_vec(4),
        rng.normal_vec(2 * 4),
    );
    let half = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect()
    };
    let bf = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect()
    };
    let p = temp("half.safetensors");
    // Mixed dtypes, a Sequential with an activation at index 1 (no parameters), no last bias.
    write_raw(
        &p,
        &[
            ("model.0.weight", Dtype::F16, vec![4, 3], half(&w0)),
            ("model.0.bias", Dtype::BF16, vec![4], bf(&b0)),
            ("model.2.weight", Dtype::F32, vec![2, 4], f32_bytes(&w1)),
        ],
    );
    let spec = load_model(&p).unwrap();
    assert_eq!(spec.activation, Activation::Relu);
    assert_eq!(spec.layers[0].name, "model.0");
    let want_w0: Vec<f32> = w0
        .iter()
        .map(|x| half::f16::from_f32(*x).to_f32())
        .collect();
    let want_b0: Vec<f32> = b0
        .iter()
        .map(|x| half::bf16::from_f32(*x).to_f32())
        .collect();
    assert_eq!(spec.layers[0].weight, want_w0);
    assert_eq!(spec.layers[0].bias.as_ref().unwrap(), &want_b0);
    assert_eq!(spec.layers[1].weight, w1);
    assert!(spec.layers[1].bias.is_none());
}

#[test]
fn layers_are_ordered_numerically() {
    // 10 must come after 2, not before it as a string sort would put it.
    let p = temp("order.safetensors");
    write_raw(
        &p,
        &[
            ("fc10.weight", Dtype::F32, vec![2, 5], f32_bytes(&[0.5; 10])),
            ("fc2.weight", Dtype::F32, vec![5, 3], f32_bytes(&[0.25; 15])),
        ],
    );
    let spec = load_model(&p).unwrap();
    assert_eq!(spec.layers[0].name, "fc2");
    assert_eq!((spec.in_features(), spec.out_features()), (3, 2));
}

#[test]
fn bad_files_are_clear_errors() {
    let not = temp("not.safetensors");
    std::fs::write(&not, b"this is a text file, not a model").unwrap();
    assert!(
        err_of(&not).contains("not a valid safetensors"),
        "{}",
        err_of(&not)
    );

    let missing = temp("missing.safetensors");
    assert!(err_of(&missing).contains("cannot open"));

    let int = temp("int.safetensors");
    write_raw(&int, &[("0.weight", Dtype::I32, vec![2, 2], vec![0; 16])]);
    assert!(err_of(&int).contains("dtype I32"), "{}", err_of(&int));
    let f64f = temp("f64.safetensors");
    write_raw(&f64f, &[("0.weight", Dtype::F64, vec![1, 1], vec![0; 8])]);
    assert!(
        err_of(&f64f).contains("F32, F16 or BF16"),
        "{}",
        err_of(&f64f)
    );

    let chain = temp("chain.safetensors");
    write_raw(
        &chain,
        &[
            ("0.weight", Dtype::F32, vec![4, 3], f32_bytes(&[0.0; 12])),
            ("2.weight", Dtype::F32, vec![2, 5], f32_bytes(&[0.0; 10])),
        ],
    );
    let e = err_of(&chain);
    assert!(
        e.contains("do not chain") && e.contains("`0`") && e.contains("`2`"),
        "{e}"
    );

    let names = temp("names.safetensors");
    write_raw(
        &names,
        &[("embedding", Dtype::F32, vec![2, 2], f32_bytes(&[0.0; 4]))],
    );
    assert!(err_of(&names).contains("`embedding`"));

    let two = temp("two.safetensors");
    write_raw(
        &two,
        &[
            ("enc.0.weight", Dtype::F32, vec![2, 2], f32_bytes(&[0.0; 4])),
            ("dec.0.weight", Dtype::F32, vec![2, 2], f32_bytes(&[0.0; 4])),
        ],
    );
    assert!(err_of(&two).contains("two prefixes"));

    let bias = temp("bias.safetensors");
    write_raw(
        &bias,
        &[
            ("0.weight", Dtype::F32, vec![2, 2], f32_bytes(&[0.0; 4])),
            ("0.bias", Dtype::F32, vec![3], f32_bytes(&[0.0; 3])),
        ],
    );
    assert!(err_of(&bias).contains("expected [2]"));
}
