//! bella against the real PyTorch + HuggingFace PEFT (scripts in `tests/peft/`):
//! - `bella export` writes LoRA adapters that `PeftModel.from_pretrained` loads completely, on a
//!   torch module built from the exported base, and whose float64 PEFT logits are `bella
//!   predict`'s; the ensemble statistics of `bella predict` are NumPy's (`check_peft.py`);
//! - adapters PEFT itself saved start a bella run exactly (`--init-from-peft`, `--epochs 0`):
//!   `bella predict` gives PEFT's logits, `bella export` gives PEFT's tensors back bit for bit;
//! - adapters that do not fit the model, or lack their config, are a one-line error that leaves
//!   an existing checkpoint byte-identical;
//! - the checker itself passes PEFT's own adapters and catches planted faults (`selftest.py`).
//!
//! Without python3 + torch + peft + safetensors + numpy it prints a notice and skips, unless
//! `BELLA_REQUIRE` contains `peft`. The fixture's seed is printed; temp dirs are kept (and
//! named) when a test fails.

use bella::rng::Rng;
use bella::testing::{compare, Scale};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peft");

/// A temp dir named with the process id, removed on drop unless the test is failing.
struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str) -> Temp {
        let d = std::env::temp_dir().join(format!("bella-peft-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Temp(d)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn s(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_string()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn bella(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bella"))
        .args(args)
        .output()
        .expect("running bella")
}

fn bella_ok(args: &[&str]) {
    let o = bella(args);
    assert!(o.status.success(), "bella {}\n{}", args.join(" "), text(&o));
}

fn script_ok(script: &str, args: &[&str]) {
    let o = Command::new(bella::testing::python())
        .arg(format!("{SCRIPTS}/{script}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    // The checkers' per-check lines are worth seeing in `cargo test -- --nocapture`.
    print!("{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        o.status.success(),
        "{script} {}\n{}",
        args.join(" "),
        text(&o)
    );
}

/// fixture.py into a fresh temp dir, with a fresh seed (printed).
fn fixture(tag: &str) -> Temp {
    let t = Temp::new(tag);
    let seed = Rng::fresh_seed() % 1_000_000;
    println!("fixture seed {seed} in {}", t.0.display());
    script_ok("fixture.py", &[&t.s("fx"), &seed.to_string()]);
    t
}

/// `bella predict` of a checkpoint's method on the fixture's x, into `out`.
fn predict(t: &Temp, ck: &str, method: &str, out: &str) {
    bella_ok(&[
        "predict",
        "--checkpoint",
        &t.s(ck),
        "--method",
        method,
        "--in",
        &t.s("fx/x.safetensors"),
        "--out",
        &t.s(out),
        "--backend",
        "cpu",
    ]);
}

fn export(t: &Temp, ck: &str, method: &str, out: &str) {
    bella_ok(&[
        "export",
        "--checkpoint",
        &t.s(ck),
        "--method",
        method,
        "--out",
        &t.s(out),
    ]);
}

/// What a run asked for, for check_peft.py: the base it was given, particles, rank, alpha
/// and target layers.
struct Run<'a> {
    base: &'a str,
    k: usize,
    r: usize,
    alpha: &'a str,
    targets: &'a str,
}

/// check_peft.py on an export and the prediction made from the same checkpoint.
fn check_peft(t: &Temp, exp: &str, pred: &str, run: Run) {
    script_ok(
        "check_peft.py",
        &[
            &t.s(exp),
            &t.s("fx/x.safetensors"),
            &t.s(pred),
            "--base",
            &t.s(run.base),
            "--particles",
            &run.k.to_string(),
            "--r",
            &run.r.to_string(),
            "--alpha",
            run.alpha,
            "--targets",
            run.targets,
        ],
    );
}

#[test]
fn checker_passes_peft_adapters_and_catches_planted_faults() {
    if !bella::testing::python_with("torch, peft, safetensors, numpy", "peft", "the PEFT tests") {
        return;
    }
    let t = fixture("selftest");
    std::fs::create_dir_all(t.path("work")).unwrap();
    script_ok("selftest.py", &[&t.s("fx"), &t.s("work")]);
}

#[test]
fn export_loads_in_peft_and_matches_predict() {
    if !bella::testing::python_with("torch, peft, safetensors, numpy", "peft", "the PEFT tests") {
        return;
    }
    let t = fixture("export");

    // ReLU (`0`, `2`, `4`), safetensors data, an ensemble of 3 on every layer.
    bella_ok(&[
        "train",
        "--model",
        &t.s("fx/base.safetensors"),
        "--data",
        &t.s("fx/data.safetensors"),
        "--methods",
        "bella_ensemble",
        "--particles",
        "3",
        "--rank",
        "4",
        "--alpha",
        "8",
        "--epochs",
        "3",
        "--checkpoint",
        &t.s("ck1"),
        "--quiet",
        "--backend",
        "cpu",
    ]);
    predict(&t, "ck1", "bella_ensemble", "pred1.safetensors");
    export(&t, "ck1", "bella_ensemble", "exp1");
    check_peft(
        &t,
        "exp1",
        "pred1.safetensors",
        Run {
            base: "fx/base.safetensors",
            k: 3,
            r: 4,
            alpha: "8",
            targets: "0,2,4",
        },
    );

    // The same model from .npz data, SVGD, LoRA on the first and last layer only, another
    // rank and a scale that is not a power of two.
    bella_ok(&[
        "train",
        "--model",
        &t.s("fx/base.safetensors"),
        "--data",
        &t.s("fx/data.npz"),
        "--methods",
        "bella_svgd",
        "--particles",
        "2",
        "--rank",
        "2",
        "--alpha",
        "3",
        "--target-modules",
        "0,4",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--checkpoint",
        &t.s("ck2"),
        "--quiet",
        "--backend",
        "cpu",
    ]);
    predict(&t, "ck2", "bella_svgd", "pred2.safetensors");
    export(&t, "ck2", "bella_svgd", "exp2");
    check_peft(
        &t,
        "exp2",
        "pred2.safetensors",
        Run {
            base: "fx/base.safetensors",
            k: 2,
            r: 2,
            alpha: "3",
            targets: "0,4",
        },
    );

    // GELU (tanh) with layers under a stem (`net.0`, `net.2`, `net.4`): one LoRA and an
    // ensemble, every layer (the default).
    bella_ok(&[
        "train",
        "--model",
        &t.s("fx/gelu/base.safetensors"),
        "--data",
        &t.s("fx/data.safetensors"),
        "--methods",
        "single_lora,bella_ensemble",
        "--particles",
        "2",
        "--rank",
        "4",
        "--alpha",
        "8",
        "--epochs",
        "2",
        "--checkpoint",
        &t.s("ck3"),
        "--quiet",
        "--backend",
        "cpu",
    ]);
    for (method, k) in [("single_lora", 1), ("bella_ensemble", 2)] {
        let (pred, exp) = (
            format!("pred3_{method}.safetensors"),
            format!("exp3_{method}"),
        );
        predict(&t, "ck3", method, &pred);
        export(&t, "ck3", method, &exp);
        check_peft(
            &t,
            &exp,
            &pred,
            Run {
                base: "fx/gelu/base.safetensors",
                k,
                r: 4,
                alpha: "8",
                targets: "net.0,net.2,net.4",
            },
        );
    }
}

/// `logits [K, N, C]` of a safetensors file.
fn logits(path: &Path, key: &str) -> (Vec<usize>, Vec<f32>) {
    let named =
        bella::io::safetensors::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = named
        .get(key)
        .unwrap_or_else(|| panic!("{}: no `{key}`", path.display()));
    (t.shape.clone(), t.to_f32())
}

#[test]
fn peft_adapters_start_bella_exactly() {
    if !bella::testing::python_with("torch, peft, safetensors, numpy", "peft", "the PEFT tests") {
        return;
    }
    let t = fixture("init");
    // (fixture subdir, adapters PEFT saved, base); the ReLU model with all three, the GELU one
    // with layers under `net.` with its two.
    for (sub, k) in [("fx", 3usize), ("fx/gelu", 2)] {
        let dirs: Vec<String> = (0..k).map(|p| t.s(&format!("{sub}/peft_{p}"))).collect();
        let tag = sub.replace('/', "_");
        let (ck, pred, exp) = (
            format!("ck_{tag}"),
            format!("pred_{tag}.safetensors"),
            format!("exp_{tag}"),
        );
        bella_ok(&[
            "train",
            "--model",
            &t.s(&format!("{sub}/base.safetensors")),
            "--data",
            &t.s("fx/data.safetensors"),
            "--init-from-peft",
            &dirs.join(","),
            "--methods",
            "bella_ensemble",
            "--epochs",
            "0",
            "--checkpoint",
            &t.s(&ck),
            "--quiet",
            "--backend",
            "cpu",
        ]);
        predict(&t, &ck, "bella_ensemble", &pred);

        // bella's logits are PEFT's (PeftModel in f32 on the user's nn.Sequential).
        let (gs, got) = logits(&t.path(&pred), "logits");
        let (ws, want) = logits(&t.path(&format!("{sub}/peft_logits.safetensors")), "logits");
        assert_eq!(gs, ws, "{sub}: logits shape");
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        let c = compare(&got, &want, Scale::Own);
        println!(
            "{sub}: bella predict vs PEFT: rel {:.2e}, max|d| {:.2e} of {:.3}",
            c.rel_err, c.max_abs_err, c.scale
        );
        assert!(
            c.rel_err <= 1e-5 && c.max_abs_err <= 1e-5 * c.scale,
            "{sub}: bella's logits from PEFT's adapters are not PEFT's: rel {:.3e}, max|d| {:.3e} (scale {:.3}, worst flat index {:?})",
            c.rel_err,
            c.max_abs_err,
            c.scale,
            c.worst_index
        );

        // Exported back: PEFT's own tensors, bit for bit, and a valid export.
        export(&t, &ck, "bella_ensemble", &exp);
        let mut pairs = Vec::new();
        for (p, d) in dirs.iter().enumerate() {
            pairs.push(t.s(&format!("{exp}/particle_{p}")));
            pairs.push(d.clone());
        }
        let pairs: Vec<&str> = pairs.iter().map(|s| s.as_str()).collect();
        script_ok("same_adapters.py", &pairs);
        let targets = if sub == "fx" {
            "0,2,4"
        } else {
            "net.0,net.2,net.4"
        };
        check_peft(
            &t,
            &exp,
            &pred,
            Run {
                base: &format!("{sub}/base.safetensors"),
                k,
                r: 4,
                alpha: "8",
                targets,
            },
        );
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn bad_peft_adapters_are_one_line_errors() {
    if !bella::testing::python_with("torch, peft, safetensors, numpy", "peft", "the PEFT tests") {
        return;
    }
    let t = fixture("bad");
    let train = |init: &str, ck: &str| {
        bella(&[
            "train",
            "--model",
            &t.s("fx/base.safetensors"),
            "--data",
            &t.s("fx/data.safetensors"),
            "--init-from-peft",
            init,
            "--methods",
            "bella_ensemble",
            "--epochs",
            "0",
            "--checkpoint",
            ck,
            "--quiet",
            "--backend",
            "cpu",
        ])
    };
    // An existing checkpoint, which no failed run may touch.
    let ck = t.s("ck");
    let good = format!("{},{}", t.s("fx/peft_0"), t.s("fx/peft_1"));
    let o = train(&good, &ck);
    assert!(o.status.success(), "{}", text(&o));
    let before = snapshot(&t.path("ck"));
    assert!(!before.is_empty(), "the checkpoint has no files");

    // (second adapter, what the one line must mention)
    let cases: [(&str, &[&str]); 5] = [
        // lora shapes for Linear(10,20), Linear(20,16): layer 0's lora_B, layer 2's lora_A
        ("bad_wide", &["bad_wide"]),
        // target_modules ["6"]: the base has no layer 6
        ("bad_target", &["bad_target"]),
        // r = 8 beside peft_0's r = 4
        ("bad_rank", &["bad_rank"]),
        ("bad_noconfig", &["bad_noconfig", "adapter_config.json"]),
        ("no_such_dir", &["no_such_dir"]),
    ];
    for (bad, words) in cases {
        let init = format!("{},{}", t.s("fx/peft_0"), t.s(&format!("fx/{bad}")));
        let o = train(&init, &ck);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code().is_some() && !o.status.success(),
            "{bad}: expected a non-zero exit (no signal)\n{}",
            text(&o)
        );
        assert!(!err.contains("panicked"), "{bad}: a panic\n{}", text(&o));
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{bad}: expected one line on stderr\n{}",
            text(&o)
        );
        for w in words {
            assert!(
                lines[0].contains(w),
                "{bad}: the error does not name `{w}`: {}",
                lines[0]
            );
        }
        println!("{bad}: {}", lines[0]);
        assert!(
            snapshot(&t.path("ck")) == before,
            "{bad}: the failed run changed the checkpoint"
        );
    }
}
