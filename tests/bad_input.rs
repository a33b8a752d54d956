//! `bella op` on bad input: malformed safetensors, lying headers, missing tensors, wrong
//! shapes, bad values, unknown ops and backends. Each must exit non-zero with a message on
//! stderr and never panic. Every group first runs a valid file, so a binary that fails on
//! everything cannot pass.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One tensor of a hand-built safetensors file.
struct T {
    name: &'static str,
    dtype: &'static str,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn f32s(name: &'static str, shape: &[usize]) -> T {
    let n: usize = shape.iter().product();
    // Distinct, non-zero, moderate values: valid input for every op.
    let data = (0..n)
        .flat_map(|i| (0.25 + 0.1 * ((i * 7) % 11) as f32).to_le_bytes())
        .collect();
    T {
        name,
        dtype: "F32",
        shape: shape.to_vec(),
        data,
    }
}

fn scalar(name: &'static str, v: f32) -> T {
    T {
        name,
        dtype: "F32",
        shape: vec![],
        data: v.to_le_bytes().to_vec(),
    }
}

fn i64s(name: &'static str, vals: &[i64]) -> T {
    let data = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    T {
        name,
        dtype: "I64",
        shape: vec![vals.len()],
        data,
    }
}

/// A valid file: header JSON padded to 8 bytes, tensors back to back.
fn file(ts: &[T]) -> Vec<u8> {
    let (mut entries, mut off) = (Vec::new(), 0);
    for t in ts {
        entries.push(format!(
            r#""{}":{{"dtype":"{}","shape":{:?},"data_offsets":[{},{}]}}"#,
            t.name,
            t.dtype,
            t.shape,
            off,
            off + t.data.len()
        ));
        off += t.data.len();
    }
    let data: Vec<u8> = ts.iter().flat_map(|t| t.data.iter().copied()).collect();
    raw(&format!("{{{}}}", entries.join(",")), &data)
}

/// A file with the given header text and data bytes, whatever they say.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad_input");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run_args(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bella"))
        .args(args)
        .output()
        .expect("running bella")
}

/// Runs `bella op OP` on `bytes` (written to a file named after `case`).
fn run(case: &str, op: &str, bytes: &[u8], backend: &str) -> Output {
    // Tests run in parallel and reuse case names: a counter keeps their files apart.
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let slug: String = case
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let slug = format!("{}_{n:03}_{backend}_{slug}", std::process::id());
    let (inp, out) = (
        tmp(&format!("{slug}.in.safetensors")),
        tmp(&format!("{slug}.out.safetensors")),
    );
    std::fs::write(&inp, bytes).unwrap();
    let o = run_args(&[
        "op",
        op,
        "--in",
        inp.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--backend",
        backend,
    ]);
    let _ = (std::fs::remove_file(&inp), std::fs::remove_file(&out));
    o
}

fn expect_ok(case: &str, op: &str, bytes: &[u8]) {
    expect_ok_on(case, op, bytes, "cpu")
}

fn expect_ok_on(case: &str, op: &str, bytes: &[u8], backend: &str) {
    let o = run(case, op, bytes, backend);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "valid input `{case}` to {op} on {backend} failed: {}\n{err}",
        o.status
    );
}

/// The failure contract. `mention`: words the message must name (case-insensitive),
/// e.g. the tensor at fault. Returns a problem description, or None.
fn check_err(case: &str, o: &Output, mention: &[&str]) -> Option<String> {
    let err = String::from_utf8_lossy(&o.stderr);
    let low = err.to_lowercase();
    let code = o.status.code();
    let problem = if err.contains("panicked") || code == Some(101) {
        "panicked".to_string()
    } else if code.is_none() {
        format!("killed by a signal ({})", o.status)
    } else if o.status.success() {
        "exited 0".to_string()
    } else if err.trim().is_empty() {
        "no message on stderr".to_string()
    } else if let Some(m) = mention.iter().find(|m| !low.contains(&m.to_lowercase())) {
        format!("message does not mention `{m}`")
    } else {
        println!("ok   {case}: {}", err.trim().lines().next().unwrap_or(""));
        return None;
    };
    Some(format!(
        "{case}: {problem}; exit {:?}; stderr: {}",
        code,
        err.trim()
    ))
}

/// (case name, op, file bytes, words the message must name)
type Case = (&'static str, &'static str, Vec<u8>, Vec<&'static str>);

fn expect_all(cases: Vec<Case>, backend: &str) {
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|(case, op, bytes, mention)| {
            check_err(case, &run(case, op, bytes, backend), mention)
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{} bad inputs mishandled on {backend}:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn relu_ok() -> Vec<u8> {
    file(&[f32s("x", &[5])])
}

fn malformed_cases() -> Vec<Case> {
    let good = relu_ok();
    let x20 = vec![0u8; 20];
    let with_len = |n: u64| {
        let mut f = good.clone();
        f[..8].copy_from_slice(&n.to_le_bytes());
        f
    };
    let mut not_utf8 = raw("\u{1}", &x20);
    not_utf8[8] = 0xff;
    let r = "relu_forward";
    #[rustfmt::skip]
    let cases = vec![
        ("empty file", r, vec![], vec![]),
        ("shorter than the length prefix", r, good[..5].to_vec(), vec![]),
        ("truncated in the header", r, good[..12].to_vec(), vec![]),
        ("truncated in the data", r, good[..good.len() - 3].to_vec(), vec![]),
        ("header length past EOF", r, with_len(1_000_000), vec![]),
        ("header length u64::MAX", r, with_len(u64::MAX), vec![]),
        ("header not JSON", r, raw("{this is not json", &x20), vec![]),
        ("header JSON not an object", r, raw("[1, 2, 3]", &x20), vec![]),
        ("header not UTF-8", r, not_utf8, vec![]),
        ("offsets past the end", r,
            raw(r#"{"x":{"dtype":"F32","shape":[5],"data_offsets":[0,1000]}}"#, &x20), vec![]),
        ("offsets reversed", r,
            raw(r#"{"x":{"dtype":"F32","shape":[0],"data_offsets":[20,0]}}"#, &x20), vec![]),
        ("dtype-size mismatch", r,
            raw(r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,20]}}"#, &x20), vec![]),
        ("f64 size mismatch", r,
            raw(r#"{"x":{"dtype":"F64","shape":[5],"data_offsets":[0,20]}}"#, &x20), vec![]),
        ("overlapping tensors", "relu_backward",
            raw(r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"dy":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}}"#, &x20), vec![]),
        ("unknown dtype", r,
            raw(r#"{"x":{"dtype":"F99","shape":[5],"data_offsets":[0,20]}}"#, &x20), vec![]),
        ("shape product overflows", r,
            raw(r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,20]}}"#, &x20), vec![]),
        ("duplicate tensor name", r,
            raw(r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &x20[..8]), vec![]),
        ("missing data_offsets", r, raw(r#"{"x":{"dtype":"F32","shape":[5]}}"#, &x20), vec![]),
    ];
    cases
}

fn lora(x: &[usize], w: &[usize], a: &[usize], b: &[usize]) -> Vec<T> {
    let (x, w) = (f32s("x", x), f32s("weight", w));
    vec![
        x,
        w,
        f32s("lora_a", a),
        f32s("lora_b", b),
        scalar("scale", 2.0),
    ]
}

fn with(mut ts: Vec<T>, name: &'static str, shape: &[usize]) -> Vec<T> {
    ts.retain(|t| t.name != name);
    ts.push(f32s(name, shape));
    ts
}

fn without(mut ts: Vec<T>, name: &str) -> Vec<T> {
    ts.retain(|t| t.name != name);
    ts
}

// K=2, M=3, O=5, I=4, r=2
fn lora_good() -> Vec<T> {
    lora(&[3, 4], &[5, 4], &[2, 2, 4], &[2, 5, 2])
}

fn lora_bwd_good() -> Vec<T> {
    with(with(lora_good(), "dy", &[2, 3, 5]), "h", &[2, 3, 2])
}

fn matmul(a: &[usize], b: &[usize], trans_a: f32, trans_b: f32) -> Vec<u8> {
    let (a, b) = (f32s("a", a), f32s("b", b));
    let (ta, tb) = (scalar("trans_a", trans_a), scalar("trans_b", trans_b));
    file(&[a, b, ta, tb, scalar("alpha", 1.0)])
}

fn svgd(score: &[usize], kernel: &[usize]) -> Vec<u8> {
    let (th, sc, k) = (
        f32s("theta", &[3, 2]),
        f32s("score", score),
        f32s("kernel", kernel),
    );
    file(&[th, sc, k, scalar("bandwidth", 1.0)])
}

fn shape_cases() -> Vec<Case> {
    let (g, lf) = (lora_good, "lora_forward");
    #[rustfmt::skip]
    let cases = vec![
        ("missing lora_b", lf, file(&without(g(), "lora_b")), vec!["lora_b"]),
        ("missing scale", lf, file(&without(g(), "scale")), vec!["scale"]),
        ("missing x", lf, file(&without(g(), "x")), vec!["x"]),
        // Which of x / weight / lora_a is "wrong" is a judgement call: ask only for a shape error.
        ("weight I mismatch", lf, file(&lora(&[3, 4], &[5, 3], &[2, 2, 4], &[2, 5, 2])), vec!["shape"]),
        ("lora_a K mismatch", lf, file(&lora(&[3, 4], &[5, 4], &[3, 2, 4], &[2, 5, 2])), vec![]),
        ("lora_b r mismatch", lf, file(&lora(&[3, 4], &[5, 4], &[2, 2, 4], &[2, 5, 3])), vec![]),
        ("per-particle x with wrong K", lf, file(&with(g(), "x", &[3, 3, 4])), vec!["x"]),
        ("x 4-D", lf, file(&with(g(), "x", &[1, 2, 3, 4])), vec!["x"]),
        ("bias wrong length", lf, file(&with(g(), "bias", &[6])), vec!["bias"]),
        ("scale with 2 elements", lf, file(&with(g(), "scale", &[2])), vec!["scale"]),
        ("missing dy", "lora_backward", file(&without(lora_bwd_good(), "dy")), vec!["dy"]),
        ("h wrong", "lora_backward", file(&with(lora_bwd_good(), "h", &[2, 3, 3])), vec!["h"]),
        ("matmul inner mismatch", "matmul", matmul(&[3, 4], &[5, 6], 0.0, 0.0), vec![]),
        ("matmul inner mismatch, trans", "matmul", matmul(&[3, 4], &[4, 5], 1.0, 0.0), vec![]),
        ("matmul batch mismatch", "matmul", matmul(&[2, 3, 4], &[3, 4, 6], 0.0, 0.0), vec![]),
        ("theta 1-D", "pairwise_sqdist", file(&[f32s("theta", &[6])]), vec!["theta"]),
        ("svgd kernel wrong", "svgd_direction", svgd(&[3, 2], &[3, 2]), vec!["kernel"]),
        ("svgd score wrong", "svgd_direction", svgd(&[3, 3], &[3, 3]), vec!["score"]),
        ("relu_backward dy wrong", "relu_backward", file(&[f32s("x", &[4]), f32s("dy", &[5])]), vec!["dy"]),
        ("labels wrong length", "softmax_xent", xent(i64s("labels", &[0, 1])), vec!["labels"]),
        ("logits 2-D", "ensemble_stats", file(&[f32s("logits", &[3, 4])]), vec!["logits"]),
    ];
    cases
}

fn adamw(step: T, grad_shape: &[usize]) -> Vec<u8> {
    let mut ts = vec![f32s("param", &[2, 3]), f32s("grad", grad_shape)];
    ts.extend([
        f32s("m", &[2, 3]),
        f32s("v", &[2, 3]),
        scalar("lr", 0.01),
        scalar("beta1", 0.9),
    ]);
    ts.extend([
        scalar("beta2", 0.999),
        scalar("eps", 1e-8),
        scalar("weight_decay", 0.0),
        step,
    ]);
    file(&ts)
}

fn xent(labels: T) -> Vec<u8> {
    file(&[f32s("logits", &[2, 3, 4]), labels])
}

fn f32_labels(vals: &[f32]) -> T {
    let data = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    T {
        name: "labels",
        dtype: "F32",
        shape: vec![vals.len()],
        data,
    }
}

fn value_cases() -> Vec<Case> {
    let (sx, ad) = ("softmax_xent", "adamw_step");
    #[rustfmt::skip]
    let cases = vec![
        ("label == C", sx, xent(i64s("labels", &[0, 4, 1])), vec!["label"]),
        ("label far past C", sx, xent(i64s("labels", &[0, 1, 1 << 40])), vec!["label"]),
        ("negative label", sx, xent(i64s("labels", &[0, -1, 1])), vec!["label"]),
        ("fractional label", sx, xent(f32_labels(&[0.0, 1.5, 2.0])), vec!["label"]),
        ("negative float label", sx, xent(f32_labels(&[0.0, -1.0, 2.0])), vec!["label"]),
        ("trans flag 2", "matmul", matmul(&[3, 4], &[4, 5], 2.0, 0.0), vec!["trans_a"]),
        ("trans flag 0.5", "matmul", matmul(&[3, 4], &[4, 5], 0.0, 0.5), vec!["trans_b"]),
        ("empty scalar", "lora_forward", file(&with(lora_good(), "scale", &[0])), vec!["scale"]),
        ("adamw step 0", ad, adamw(i64s("step", &[0]), &[2, 3]), vec!["step"]),
        ("adamw grad shape", ad, adamw(i64s("step", &[1]), &[3, 2]), vec!["grad"]),
        ("empty x", "relu_forward", file(&[f32s("x", &[0])]), vec![]),
        ("empty theta", "pairwise_sqdist", file(&[f32s("theta", &[0, 3])]), vec![]),
        ("empty logits M=0", sx, file(&[f32s("logits", &[2, 0, 4]), i64s("labels", &[])]), vec![]),
        ("empty C=0", "ensemble_stats", file(&[f32s("logits", &[2, 3, 0])]), vec![]),
        ("lora r=0", "lora_forward", file(&lora(&[3, 4], &[5, 4], &[2, 0, 4], &[2, 5, 0])), vec![]),
    ];
    cases
}

#[test]
fn malformed_safetensors() {
    expect_ok("relu valid", "relu_forward", &relu_ok());
    expect_all(malformed_cases(), "cpu");
}

#[test]
fn missing_tensors_and_wrong_shapes() {
    expect_ok("lora valid", "lora_forward", &file(&lora_good()));
    expect_ok(
        "lora_backward valid",
        "lora_backward",
        &file(&lora_bwd_good()),
    );
    expect_ok(
        "matmul valid",
        "matmul",
        &matmul(&[4, 3], &[4, 5], 1.0, 0.0),
    );
    expect_ok("svgd valid", "svgd_direction", &svgd(&[3, 2], &[3, 3]));
    expect_all(shape_cases(), "cpu");
}

#[test]
fn bad_values_and_empty_tensors() {
    expect_ok(
        "xent valid",
        "softmax_xent",
        &xent(i64s("labels", &[0, 3, 2])),
    );
    expect_ok(
        "xent valid f32 labels",
        "softmax_xent",
        &xent(f32_labels(&[0.0, 3.0, 2.0])),
    );
    expect_ok(
        "adamw valid",
        "adamw_step",
        &adamw(i64s("step", &[1]), &[2, 3]),
    );
    expect_all(value_cases(), "cpu");
}

/// The same bad shapes and values through each other backend that runs here: a GPU kernel
/// must never see a label ≥ C or a mismatched shape. Backends that do not run are skipped.
#[test]
fn bad_values_on_other_backends() {
    for backend in ["wgpu", "ptx-sim", "cuda"] {
        let o = run("probe", "relu_forward", &relu_ok(), backend);
        if !o.status.success() {
            let why = String::from_utf8_lossy(&o.stderr);
            println!("notice: {backend} skipped: {}", why.trim());
            continue;
        }
        let xent_ok = xent(i64s("labels", &[0, 3, 2]));
        expect_ok_on("xent valid", "softmax_xent", &xent_ok, backend);
        expect_all(
            shape_cases().into_iter().chain(value_cases()).collect(),
            backend,
        );
    }
}

#[test]
fn bad_command_lines() {
    let good = relu_ok();
    expect_ok("relu valid", "relu_forward", &good);
    let mut problems = Vec::new();
    let o = run("unknown op", "no_such_op", &good, "cpu");
    problems.extend(check_err("unknown op", &o, &["no_such_op"]));
    let o = run("unknown backend", "relu_forward", &good, "tpu");
    problems.extend(check_err("unknown backend", &o, &["tpu"]));
    let (missing, out) = (tmp("does_not_exist.safetensors"), tmp("o"));
    let (missing, out) = (missing.to_str().unwrap(), out.to_str().unwrap());
    let o = run_args(&["op", "relu_forward", "--in", missing, "--out", out]);
    problems.extend(check_err("input file missing", &o, &[]));
    let inp = tmp(&format!("relu_cli_{}.safetensors", std::process::id()));
    std::fs::write(&inp, &good).unwrap();
    let bad_out = "/nonexistent_dir/x/out.safetensors";
    let o = run_args(&[
        "op",
        "relu_forward",
        "--in",
        inp.to_str().unwrap(),
        "--out",
        bad_out,
    ]);
    problems.extend(check_err("output folder missing", &o, &[]));
    let _ = std::fs::remove_file(&inp);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
