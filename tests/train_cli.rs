//! `bella train` and `bella eval` as a user runs them: the report's JSON schema, the
//! reliability diagrams, evaluation of saved adapters, and clear errors (non-zero exit, no
//! panic) for bad input.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bella(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bella"))
        .args(args)
        .output()
        .expect("running bella")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bella-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

const TINY: [&str; 12] = [
    "train",
    "--quiet",
    "--backend",
    "cpu",
    "--epochs",
    "1",
    "--pretrain-epochs",
    "1",
    "--per-class",
    "5",
    "--particles",
    "2",
];

#[test]
fn train_writes_report_plots_and_eval_reads_adapters() {
    let dir = temp("run");
    let (report, plots, ck) = (dir.join("r.json"), dir.join("plots"), dir.join("ck"));
    let mut args: Vec<&str> = TINY.to_vec();
    let (r, p, c) = (
        report.to_str().unwrap(),
        plots.to_str().unwrap(),
        ck.to_str().unwrap(),
    );
    args.extend(["--report", r, "--plots", p, "--checkpoint", c]);
    let out = bella(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("bella_svgd") && table.contains("ECE"),
        "{table}"
    );

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        keys(&v),
        ["backend", "methods", "particles", "rank", "task"]
    );
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["particles"], 2);
    let methods = v["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "single_lora",
            "bella_ensemble",
            "bella_svgd",
            "full_ensemble"
        ]
    );
    for m in methods {
        assert_eq!(
            keys(m),
            [
                "in_dist",
                "method",
                "ood_auroc_entropy",
                "ood_auroc_mi",
                "shifted",
                "train",
                "train_seconds",
                "trainable_params"
            ]
        );
        for split in ["train", "in_dist", "shifted"] {
            assert_eq!(keys(&m[split]), ["accuracy", "brier", "ece", "nll"]);
        }
        let svg = plots.join(format!("reliability_{}.svg", m["method"].as_str().unwrap()));
        assert!(
            std::fs::read_to_string(&svg).unwrap().contains("<svg"),
            "{}",
            svg.display()
        );
    }
    assert!(methods[0]["ood_auroc_mi"].is_null());

    // `bella eval` on the saved adapters gives the numbers training reported.
    let report2 = dir.join("r2.json");
    let out = bella(&[
        "eval",
        "--backend",
        "cpu",
        "--checkpoint",
        c,
        "--report",
        report2.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report2).unwrap()).unwrap();
    for (a, b) in methods.iter().zip(v2["methods"].as_array().unwrap()) {
        assert_eq!(
            (&a["in_dist"], &a["shifted"]),
            (&b["in_dist"], &b["shifted"])
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn assert_clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error:") && err.contains(needle), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_exits_cleanly() {
    let dir = temp("bad");
    let text = dir.join("model.safetensors");
    std::fs::write(&text, "not a model").unwrap();
    let mut args = TINY.to_vec();
    args.extend(["--base", text.to_str().unwrap()]);
    assert_clean_error(&bella(&args), "not a valid safetensors");

    let mut args = TINY.to_vec();
    args.extend(["--resume", "--checkpoint", dir.to_str().unwrap()]);
    assert_clean_error(&bella(&args), "no run to resume");

    let mut args = TINY.to_vec();
    args.extend(["--methods", "single_lora,nope"]);
    assert_clean_error(&bella(&args), "unknown method `nope`");

    assert_clean_error(
        &bella(&["eval", "--checkpoint", dir.to_str().unwrap()]),
        "run.json",
    );
    std::fs::remove_dir_all(&dir).ok();
}
