//! `--resume` checks everything before it writes anything: a resume that cannot run (a
//! method's file missing or corrupt, another base, other settings, a method the run does
//! not train, a loss that diverges in the first resumed epoch) leaves every file of the
//! checkpoint byte-identical. `run.json` records the run's methods, and a plain `--resume`
//! continues exactly those; a `run.json` from before methods were recorded still resumes.

use bella::backend::cpu::CpuBackend;
use bella::nn::{save_model, Activation, DenseParticles};
use bella::train::checkpoint::{CheckpointDir, RunRecord};
use bella::train::{self, Method, RunOptions, TrainConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn opts(cfg: TrainConfig, dir: &Path, methods: &[Method], resume: bool) -> RunOptions {
    RunOptions {
        cfg,
        methods: methods.to_vec(),
        checkpoint: Some(dir.to_path_buf()),
        resume,
        base: None,
        data: None,
        init_from_peft: Vec::new(),
        quiet: true,
        plots: None,
    }
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bella-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Every file in `dir` (names and bytes).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// `f` fails with an error containing every needle, and the checkpoint is as it was.
fn fails_untouched(dir: &Path, what: &str, needles: &[&str], f: impl FnOnce() -> String) {
    let before = snapshot(dir);
    let e = f();
    for n in needles {
        assert!(e.contains(n), "{what}: error `{e}` does not mention `{n}`");
    }
    let after = snapshot(dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{what}: files were added or removed"
    );
    for (name, bytes) in &before {
        assert!(
            after[name] == *bytes,
            "{what}: {name} changed although the resume failed"
        );
    }
}

fn epoch_of(path: &Path) -> String {
    bella::io::safetensors::read_metadata(path).unwrap()["epoch"].clone()
}

const TWO: [Method; 2] = [Method::SingleLora, Method::BellaSvgd];

#[test]
fn failed_resume_leaves_every_file_byte_identical() {
    let be = CpuBackend::new();
    let dir = temp("failed");
    train::run(&be, &opts(tiny(1), &dir, &TWO, false)).unwrap();
    let resume = |cfg: TrainConfig, methods: &[Method]| {
        train::run(&be, &opts(cfg, &dir, methods, true))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let svgd = dir.join("bella_svgd.safetensors");
    let base = dir.join("base.safetensors");
    let (good_svgd, good_base) = (std::fs::read(&svgd).unwrap(), std::fs::read(&base).unwrap());

    // Settings that change the model; a method this run does not train.
    let mut cfg = tiny(2);
    cfg.rank = 3;
    fails_untouched(&dir, "other rank", &["different settings"], || {
        resume(cfg, &[])
    });
    fails_untouched(
        &dir,
        "untrained method",
        &["bella_ensemble", "trains"],
        || resume(tiny(2), &[Method::BellaEnsemble]),
    );

    // A method's file missing (the second one, after the first loaded fine), or corrupt.
    std::fs::remove_file(&svgd).unwrap();
    fails_untouched(
        &dir,
        "missing method file",
        &["bella_svgd.safetensors", "does not exist"],
        || resume(tiny(2), &[]),
    );
    std::fs::write(&svgd, &good_svgd[..good_svgd.len() / 2]).unwrap();
    fails_untouched(
        &dir,
        "corrupt method file",
        &["bella_svgd.safetensors"],
        || resume(tiny(2), &[]),
    );
    std::fs::write(&svgd, &good_svgd).unwrap();

    // Another base: given with --model, or swapped into the checkpoint (same shapes, other
    // weights: only the recorded fingerprint tells; other shapes).
    let other_dir = temp("other-base");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = other_dir.join("other.safetensors");
    save_model(
        &other,
        &DenseParticles::random_spec(&[64, 24, 16, 8], Activation::Relu, 99),
    )
    .unwrap();
    fails_untouched(
        &dir,
        "--model differs",
        &["--model", "not the base"],
        || {
            let mut o = opts(tiny(2), &dir, &[], true);
            o.base = Some(other.clone());
            train::run(&be, &o).map(|_| ()).unwrap_err().to_string()
        },
    );
    std::fs::copy(&other, &base).unwrap();
    fails_untouched(
        &dir,
        "base swapped",
        &["base.safetensors", "not the base"],
        || resume(tiny(2), &[]),
    );
    let wider = other_dir.join("wider.safetensors");
    save_model(
        &wider,
        &DenseParticles::random_spec(&[64, 30, 16, 8], Activation::Relu, 99),
    )
    .unwrap();
    std::fs::copy(&wider, &base).unwrap();
    fails_untouched(&dir, "base of other shapes", &["base.safetensors"], || {
        resume(tiny(2), &[])
    });
    std::fs::write(&base, &good_base).unwrap();

    // A loss that diverges in the first resumed epoch: nothing new was good, so nothing
    // (not even run.json, whose learning rate and epochs differ) is written.
    let mut cfg = tiny(3);
    cfg.lr = 1e30;
    fails_untouched(
        &dir,
        "divergence",
        &["loss is", "last good checkpoint"],
        || resume(cfg, &[]),
    );

    // With everything restored the same resume runs.
    train::run(&be, &opts(tiny(2), &dir, &[], true)).unwrap();
    assert_eq!(epoch_of(&svgd), "2");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&other_dir).ok();
}

#[test]
fn resume_continues_the_recorded_methods_only() {
    let be = CpuBackend::new();
    let (a, b) = (temp("two-straight"), temp("two-resumed"));
    train::run(&be, &opts(tiny(2), &a, &TWO, false)).unwrap();
    train::run(&be, &opts(tiny(1), &b, &TWO, false)).unwrap();
    let ck = CheckpointDir::open(&b);
    assert_eq!(ck.load_record().unwrap().methods, Some(TWO.to_vec()));

    // No methods given: the run's own, in its order, exactly as a straight run.
    let report = train::run(&be, &opts(tiny(2), &b, &[], true)).unwrap();
    let names: Vec<&str> = report.methods.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(names, ["single_lora", "bella_svgd"]);
    for m in TWO {
        let f = format!("{}.safetensors", m.name());
        assert_eq!(
            bella::io::safetensors::read(&a.join(&f)).unwrap(),
            bella::io::safetensors::read(&b.join(&f)).unwrap(),
            "{f}: the resumed run differs from the straight one"
        );
    }
    let mut files: Vec<String> = snapshot(&b).into_keys().collect();
    files.sort();
    assert_eq!(
        files,
        [
            "base.safetensors",
            "bella_svgd.safetensors",
            "run.json",
            "single_lora.safetensors"
        ]
    );
    let record = ck.load_record().unwrap();
    assert_eq!((record.cfg.epochs, record.methods), (2, Some(TWO.to_vec())));

    // A subset continues just that one; run.json still records both.
    train::run(&be, &opts(tiny(3), &b, &[Method::BellaSvgd], true)).unwrap();
    assert_eq!(epoch_of(&b.join("bella_svgd.safetensors")), "3");
    assert_eq!(epoch_of(&b.join("single_lora.safetensors")), "2");
    assert_eq!(ck.load_record().unwrap().methods, Some(TWO.to_vec()));

    // A run.json from before methods and the base fingerprint were recorded: the methods
    // with a checkpoint file are the run's.
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("run.json")).unwrap()).unwrap();
    let obj = old.as_object_mut().unwrap();
    obj.remove("methods").unwrap();
    obj.remove("base_fingerprint").unwrap();
    std::fs::write(b.join("run.json"), old.to_string()).unwrap();
    let legacy: RunRecord = ck.load_record().unwrap();
    assert_eq!((legacy.methods, legacy.base_fingerprint), (None, None));
    let report = train::run(&be, &opts(tiny(3), &b, &[], true)).unwrap();
    let names: Vec<&str> = report.methods.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(names, ["single_lora", "bella_svgd"]);
    assert_eq!(epoch_of(&b.join("single_lora.safetensors")), "3");
    // ... and it is recorded from then on.
    assert_eq!(ck.load_record().unwrap().methods, Some(TWO.to_vec()));
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

fn bella(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bella"))
        .args(args)
        .output()
        .expect("running bella")
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command line as the issue reports it: a two-method run resumes with a plain
/// `--resume`, and a resume that cannot run changes nothing.
#[test]
fn cli_resume_of_a_two_method_run() {
    let dir = temp("cli");
    let ck = dir.join("ck");
    let c = ck.to_str().unwrap();
    let common = [
        "train",
        "--quiet",
        "--backend",
        "cpu",
        "--pretrain-epochs",
        "1",
        "--per-class",
        "5",
        "--particles",
        "2",
        "--checkpoint",
        c,
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        common.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| bella(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&run(with(&[
        "--epochs",
        "1",
        "--methods",
        "single_lora,bella_svgd",
    ])));

    // The missing-file case first: nothing may change.
    let svgd = ck.join("bella_svgd.safetensors");
    let good = std::fs::read(&svgd).unwrap();
    std::fs::remove_file(&svgd).unwrap();
    fails_untouched(&ck, "cli missing method file", &["does not exist"], || {
        let out = run(with(&["--resume", "--epochs", "2"]));
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    });
    std::fs::write(&svgd, good).unwrap();

    let table = ok(&run(with(&["--resume", "--epochs", "2"])));
    assert!(
        table.contains("single_lora") && table.contains("bella_svgd"),
        "{table}"
    );
    assert!(
        !table.contains("bella_ensemble") && !table.contains("full_ensemble"),
        "{table}"
    );
    assert!(!ck.join("bella_ensemble.safetensors").exists());
    assert_eq!(epoch_of(&svgd), "2");
    std::fs::remove_dir_all(&dir).ok();
}
