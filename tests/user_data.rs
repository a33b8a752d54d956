//! A user's own model and data through the command line: a NumPy-written MLP and dataset
//! (safetensors and `.npz`), `bella train --model --data`, `eval`, `predict`, `--resume`,
//! `--target-modules`, and every bad input a one-line error that leaves an existing
//! checkpoint byte-identical. Without python3 + numpy + safetensors it prints a notice and
//! skips, unless `BELLA_REQUIRE` contains `numpy`.

use bella::backend::cpu::CpuBackend;
use bella::io::safetensors as st;
use bella::nn::{load_model, FrozenMlp};
use bella::ops::named::HostTensor;
use bella::rng::Rng;
use bella::train::{dataset, Dataset, Method, Trained};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/user_data/make_user_data.py"
);
const BIN: &str = env!("CARGO_BIN_EXE_bella");

/// A fresh directory with the NumPy-written files, or `None` (skip) without NumPy.
fn fixture(tag: &str) -> Option<PathBuf> {
    if !bella::testing::python_with("numpy, safetensors", "numpy", "the user-data tests") {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("bella-userdata-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let seed = Rng::fresh_seed() % 1_000_000;
    println!("data seed {seed}");
    let o = Command::new(bella::testing::python())
        .arg(SCRIPT)
        .arg(&dir)
        .arg(seed.to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "make_user_data.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(dir)
}

fn bella(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = bella(dir, args);
    assert!(
        o.status.success(),
        "bella {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// `bella train` on the fixture's model with these methods and epochs.
fn train<'a>(methods: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        "model.safetensors",
        "--methods",
        methods,
        "--particles",
        "3",
        "--epochs",
        epochs,
        "--lr",
        "0.01",
        "--backend",
        "cpu",
        "--quiet",
    ]
}

const ALL_LORA: &str = "single_lora,bella_ensemble,bella_svgd";

fn train_args<'a>(data: &'a str, ck: &'a str, rep: &'a str) -> Vec<&'a str> {
    let mut a = train(ALL_LORA, "30");
    a.extend(["--data", data, "--checkpoint", ck, "--report", rep]);
    a
}

/// A report's methods without their wall times.
fn results(r: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut ms = r["methods"].as_array().unwrap().clone();
    for m in &mut ms {
        m.as_object_mut().unwrap().remove("train_seconds");
    }
    ms
}

#[test]
fn trains_evaluates_and_predicts_on_numpy_data_in_both_formats() {
    let Some(dir) = fixture("train") else { return };
    let be = CpuBackend::new();
    let spec = load_model(&dir.join("model.safetensors")).unwrap();
    let base = FrozenMlp::upload(&be, spec).unwrap();
    let data = Dataset::load(&dir.join("data.safetensors")).unwrap();
    let base_acc =
        bella::train::task::base_accuracy(&be, &base, data.test.as_ref().unwrap()).unwrap();

    let mut reports = Vec::new();
    for (file, ck) in [("data.safetensors", "ck_st"), ("data.npz", "ck_npz")] {
        let rep = format!("{ck}.json");
        let table = ok(&dir, &train_args(file, ck, &rep));
        assert!(
            table.contains("test") && table.contains("bella_svgd"),
            "{table}"
        );
        let r = report(&dir.join(&rep));
        assert_eq!(r["task"], file);
        for m in r["methods"].as_array().unwrap() {
            for split in ["train", "in_dist", "shifted"] {
                assert!(m[split]["accuracy"].is_number(), "{split} missing: {m}");
            }
            assert!(m["ood_auroc_entropy"].is_number());
            assert_eq!(m["ood_auroc_mi"].is_number(), m["method"] != "single_lora");
            // Adapters learn the teacher's labels, which the random base does not know.
            let acc = m["in_dist"]["accuracy"].as_f64().unwrap();
            assert!(
                acc > base_acc + 0.15,
                "{}: test accuracy {acc} vs the base's {base_acc}",
                m["method"]
            );
        }
        reports.push(r);
    }
    // The same arrays in two formats: the same run.
    assert_eq!(results(&reports[0]), results(&reports[1]));

    // eval on the recorded dataset (from another working directory) reproduces the report.
    let ck = dir.join("ck_st");
    let ck_s = ck.to_str().unwrap();
    let other = std::env::temp_dir();
    let rep2 = dir.join("eval.json");
    ok(
        &other,
        &[
            "eval",
            "--checkpoint",
            ck_s,
            "--backend",
            "cpu",
            "--report",
            rep2.to_str().unwrap(),
        ],
    );
    let (a, b) = (&reports[0]["methods"], &report(&rep2)["methods"]);
    for (ma, mb) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        assert_eq!(ma["in_dist"], mb["in_dist"]);
        assert_eq!(ma["shifted"], mb["shifted"]);
    }

    // predict: shapes, the decomposition H = E[H] + MI, and the library's own prediction.
    let out = dir.join("pred.safetensors");
    ok(
        &dir,
        &[
            "predict",
            "--checkpoint",
            ck_s,
            "--method",
            "bella_svgd",
            "--in",
            "x.safetensors",
            "--out",
            out.to_str().unwrap(),
            "--backend",
            "cpu",
        ],
    );
    let p = st::read(&out).unwrap();
    assert_eq!(p["logits"].shape, [3, 37, 4]);
    assert_eq!(p["probs"].shape, [37, 4]);
    for name in ["entropy", "expected_entropy", "mutual_info"] {
        assert_eq!(p[name].shape, [37], "{name}");
    }
    let (h, eh, mi) = (
        p["entropy"].to_f32(),
        p["expected_entropy"].to_f32(),
        p["mutual_info"].to_f32(),
    );
    for i in 0..37 {
        assert!((h[i] - eh[i] - mi[i]).abs() <= 1e-5, "row {i}");
    }
    let trained = Trained::load(&be, &ck, Method::BellaSvgd).unwrap();
    let x = dataset::load_inputs(&dir.join("x.safetensors"), "x").unwrap();
    let lib = trained.predict(&be, &x).unwrap();
    assert_eq!(lib.logits, p["logits"].to_f32());

    // --resume continues the user's run on its recorded data.
    ok(
        &other,
        &[
            "train",
            "--checkpoint",
            ck_s,
            "--resume",
            "--epochs",
            "32",
            "--backend",
            "cpu",
            "--quiet",
        ],
    );
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["epochs"], 32);
    assert!(Path::new(run["data"].as_str().unwrap()).is_absolute());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn target_modules_choose_the_adapted_layers() {
    let Some(dir) = fixture("targets") else {
        return;
    };
    let mut a = train("bella_ensemble", "2");
    a.extend([
        "--data",
        "data.npz",
        "--target-modules",
        "net.0,net.4",
        "--report",
        "r.json",
        "--rank",
        "2",
    ]);
    ok(&dir, &a);
    let r = report(&dir.join("r.json"));
    // K · r · ((12 + 24) + (24 + 4)) for layers net.0 and net.4 only.
    assert_eq!(r["methods"][0]["trainable_params"], 3 * 2 * (36 + 28));
    let mut bad = train("bella_ensemble", "1");
    bad.extend(["--data", "data.npz", "--target-modules", "net.1"]);
    let o = bella(&dir, &bad);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("`net.1`") && err.contains("net.0, net.2, net.4"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy of the fixture's training data with one tensor replaced (or removed, or renamed).
fn write_variant(dir: &Path, name: &str, edit: impl FnOnce(&mut BTreeMap<String, HostTensor>)) {
    let mut named = st::read(&dir.join("data.safetensors")).unwrap();
    edit(&mut named);
    let list: Vec<(String, HostTensor)> = named.into_iter().collect();
    st::write(&dir.join(name), &list).unwrap();
}

#[test]
fn bad_user_input_is_one_line_and_leaves_the_checkpoint_alone() {
    let Some(dir) = fixture("bad") else { return };
    let mut a = train(ALL_LORA, "1");
    a.extend(["--data", "data.safetensors", "--checkpoint", "ck"]);
    ok(&dir, &a);
    let before = snapshot(&dir.join("ck"));

    write_variant(&dir, "renamed.safetensors", |n| {
        let x = n.remove("train.x").unwrap();
        n.insert("train.X".into(), x);
    });
    write_variant(&dir, "label.safetensors", |n| {
        let y = n.get_mut("train.y").unwrap();
        if let bella::ops::named::HostData::Int(v) = &mut y.data {
            v[5] = 4;
        }
    });
    write_variant(&dir, "width.safetensors", |n| {
        for s in ["train", "test", "shifted", "ood"] {
            let x = n.get_mut(&format!("{s}.x")).unwrap();
            let (rows, f) = (x.shape[0], x.shape[1]);
            let v = x.to_f32();
            let cut: Vec<f32> = (0..rows)
                .flat_map(|r| v[r * f..r * f + f - 1].to_vec())
                .collect();
            *x = HostTensor::float(&[rows, f - 1], cut);
        }
    });
    write_variant(&dir, "nan.safetensors", |n| {
        let x = n.get_mut("train.x").unwrap();
        let mut v = x.to_f32();
        v[3 * 12 + 7] = f32::NAN;
        *x = HostTensor::float(&x.shape.clone(), v);
    });
    std::fs::write(dir.join("notzip.npz"), b"this is not a zip archive").unwrap();
    // A PEFT adapter whose A does not fit the model's first layer.
    let peft = dir.join("peft_bad");
    std::fs::create_dir_all(&peft).unwrap();
    std::fs::write(
        peft.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["net.0"]}"#,
    )
    .unwrap();
    st::write(
        &peft.join("adapter_model.safetensors"),
        &[
            (
                "base_model.model.net.0.lora_A.weight".into(),
                HostTensor::float(&[2, 11], vec![0.0; 22]),
            ),
            (
                "base_model.model.net.0.lora_B.weight".into(),
                HostTensor::float(&[24, 2], vec![0.0; 48]),
            ),
        ],
    )
    .unwrap();
    let no_config = dir.join("peft_empty");
    std::fs::create_dir_all(&no_config).unwrap();

    let resume = |data: &str| -> Vec<String> {
        [
            "train",
            "--checkpoint",
            "ck",
            "--resume",
            "--epochs",
            "3",
            "--backend",
            "cpu",
            "--quiet",
            "--data",
            data,
        ]
        .map(String::from)
        .to_vec()
    };
    let fresh = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--model",
            "model.safetensors",
            "--backend",
            "cpu",
            "--quiet",
            "--epochs",
            "1",
            "--checkpoint",
            "ck2",
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (resume("renamed.safetensors"), &["train.X", "train.x"]),
        (resume("label.safetensors"), &["label 4", "train.y"]),
        (resume("width.safetensors"), &["11", "12"]),
        (resume("nan.safetensors"), &["train.x", "row 3"]),
        (resume("notzip.npz"), &["notzip.npz", "not a .npz file"]),
        (
            ["train", "--data", "data.safetensors", "--quiet"]
                .map(String::from)
                .to_vec(),
            &["--model"],
        ),
        (
            fresh(&["--data", "data.safetensors", "--init-from-peft", "peft_bad"]),
            &["net.0.lora_A", "[2, 11]"],
        ),
        (
            fresh(&[
                "--data",
                "data.safetensors",
                "--init-from-peft",
                "peft_empty",
            ]),
            &["adapter_config.json"],
        ),
        (
            [
                "train",
                "--model",
                "model.safetensors",
                "--data",
                "data.safetensors",
                "--checkpoint",
                "ck",
                "--quiet",
            ]
            .map(String::from)
            .to_vec(),
            &["already holds a run", "--resume"],
        ),
    ];
    for (args, must) in cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = bella(&dir, &argv);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{argv:?} succeeded");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{argv:?}: not one line: {err}"
        );
        assert!(err.starts_with("error: "), "{argv:?}: {err}");
        for m in must {
            assert!(err.contains(m), "{argv:?}: `{m}` not in: {err}");
        }
        assert_eq!(
            before,
            snapshot(&dir.join("ck")),
            "{argv:?} changed the checkpoint"
        );
        assert!(!dir.join("ck2").exists(), "{argv:?} created a checkpoint");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bella predict` on every backend present agrees with the CPU's prediction (the same
/// checkpoint, the same inputs), norm-wise and element-wise.
#[test]
fn predict_agrees_on_every_backend() {
    let Some(dir) = fixture("backends") else {
        return;
    };
    let mut a = train("bella_ensemble", "3");
    a.extend(["--data", "data.safetensors", "--checkpoint", "ck"]);
    ok(&dir, &a);
    let predict = |backend: &str| {
        let out = format!("pred-{backend}.safetensors");
        ok(
            &dir,
            &[
                "predict",
                "--checkpoint",
                "ck",
                "--method",
                "bella_ensemble",
                "--in",
                "x.safetensors",
                "--out",
                &out,
                "--backend",
                backend,
            ],
        );
        st::read(&dir.join(out)).unwrap()
    };
    let want = predict("cpu");
    for kind in [bella::BackendKind::Wgpu, bella::BackendKind::PtxSim] {
        if bella::testing::backend_for_test(kind).is_none() {
            continue;
        }
        let got = predict(kind.name());
        for name in [
            "logits",
            "probs",
            "entropy",
            "expected_entropy",
            "mutual_info",
        ] {
            let r: Vec<f64> = want[name].to_f32().iter().map(|&v| v as f64).collect();
            let scale = if name == "mutual_info" {
                bella::testing::Scale::Range(4f64.ln())
            } else {
                bella::testing::Scale::Own
            };
            let c = bella::testing::compare(&got[name].to_f32(), &r, scale);
            assert!(c.passed(), "{kind} {name}: {}", c.describe());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
