//! `bella op` on bad input: malformed safetensors, lying headers, missing tensors, wrong
//! shapes, bad values, unknown ops and backends, outputs too large for memory. Each must
//! exit non-zero with a one-line message on stderr that says what is wrong (the op, the
//! tensor, the expected and the actual shape or value, the file), and never panic or abort.
//! Every group first runs a valid file, so a binary that fails on everything cannot pass.

use bella::ops::named::HostTensor;
use std::path::{Path, PathBuf};
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

/// A `bella op` run and the input file it read (named in messages about the file).
struct Ran {
    out: Output,
    input: String,
}

/// A fresh pair of input/output paths for `case` (tests run in parallel and reuse case
/// names: a counter keeps their files apart).
fn paths(case: &str, backend: &str) -> (PathBuf, PathBuf) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let slug: String = case
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let slug = format!("{}_{n:03}_{backend}_{slug}", std::process::id());
    (
        tmp(&format!("{slug}.in.safetensors")),
        tmp(&format!("{slug}.out.safetensors")),
    )
}

fn op_args<'a>(op: &'a str, inp: &'a Path, out: &'a Path, backend: &'a str) -> [&'a str; 8] {
    let (inp, out) = (inp.to_str().unwrap(), out.to_str().unwrap());
    ["op", op, "--in", inp, "--out", out, "--backend", backend]
}

/// Runs `bella op OP` on `bytes` (written to a file named after `case`).
fn run(case: &str, op: &str, bytes: &[u8], backend: &str) -> Ran {
    let (inp, out) = paths(case, backend);
    std::fs::write(&inp, bytes).unwrap();
    let o = run_args(&op_args(op, &inp, &out, backend));
    let _ = (std::fs::remove_file(&inp), std::fs::remove_file(&out));
    Ran {
        out: o,
        input: inp.display().to_string(),
    }
}

fn expect_ok(case: &str, op: &str, bytes: &[u8]) {
    expect_ok_on(case, op, bytes, "cpu")
}

fn expect_ok_on(case: &str, op: &str, bytes: &[u8], backend: &str) {
    let o = run(case, op, bytes, backend).out;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "valid input `{case}` to {op} on {backend} failed: {}\n{err}",
        o.status
    );
}

/// Stands for the input file's path in a `mention` list: the message must name the file.
const INPUT: &str = "<input>";

/// The failure contract: a non-zero exit (no panic, no abort, no signal) with a one-line
/// message on stderr that contains every entry of `mention` (case-insensitive). An entry
/// `a|b` asks for either; `!a` asks that `a` does not appear; [`INPUT`] asks for the input
/// file's path (which is taken out of the message before the other entries are looked for,
/// so that numbers in the path cannot stand in for numbers in the message).
/// Returns a problem description, or None.
fn check_err(case: &str, ran: &Ran, mention: &[String]) -> Option<String> {
    let o = &ran.out;
    let err = String::from_utf8_lossy(&o.stderr);
    let shown = err.trim();
    let names_input = !ran.input.is_empty() && shown.contains(&ran.input);
    let low = if ran.input.is_empty() {
        shown.to_lowercase()
    } else {
        shown.replace(&ran.input, INPUT).to_lowercase()
    };
    let has = |m: &str| m.split('|').any(|alt| low.contains(&alt.to_lowercase()));
    let code = o.status.code();
    let problem = if err.contains("panicked") || code == Some(101) {
        "panicked".to_string()
    } else if code == Some(134) || err.contains("memory allocation of") {
        "aborted".to_string()
    } else if code.is_none() {
        format!("killed by a signal ({})", o.status)
    } else if o.status.success() {
        "exited 0".to_string()
    } else if shown.is_empty() {
        "no message on stderr".to_string()
    } else if shown.lines().count() != 1 {
        format!("message is {} lines, not one", shown.lines().count())
    } else if let Some(m) = mention.iter().find(|m| match m.strip_prefix('!') {
        Some(banned) => has(banned),
        None if m.as_str() == INPUT => !names_input,
        None => !has(m),
    }) {
        match m.strip_prefix('!') {
            Some(banned) => format!("message mentions {banned:?}"),
            None if m.as_str() == INPUT => "message does not name the input file".to_string(),
            None => format!("message does not mention {m:?}"),
        }
    } else {
        println!("ok   {case}: {shown}");
        return None;
    };
    Some(format!("{case}: {problem}; exit {code:?}; stderr: {shown}"))
}

/// Words a message must name (see [`check_err`]).
fn names(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// (case name, op, file bytes, words the message must name)
type Case = (&'static str, &'static str, Vec<u8>, Vec<String>);

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
    // What a header that runs past the end of the file must report: its length and the file's.
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap());
    let past_end = |n: u64, file_len: usize| {
        let mut m = names(&[INPUT, "header length"]);
        m.extend([n.to_string(), format!("{file_len} bytes")]);
        m
    };
    let r = "relu_forward";
    #[rustfmt::skip]
    let cases = vec![
        ("empty file", r, vec![], names(&[INPUT, "not a safetensors file", "0 bytes"])),
        ("shorter than the length prefix", r, good[..5].to_vec(),
            names(&[INPUT, "not a safetensors file", "5 bytes"])),
        ("truncated in the header", r, good[..12].to_vec(), past_end(header_len, 12)),
        // The header says 20 data bytes, 17 are there.
        ("truncated in the data", r, good[..good.len() - 3].to_vec(),
            names(&[INPUT, "data", "20", "17"])),
        ("header length past EOF", r, with_len(1_000_000), past_end(1_000_000, good.len())),
        ("header length u64::MAX", r, with_len(u64::MAX), names(&[INPUT, "header", "too large"])),
        ("header not JSON", r, raw("{this is not json", &x20), names(&[INPUT, "header", "json"])),
        ("header JSON not an object", r, raw("[1, 2, 3]", &x20), names(&[INPUT, "header", "json"])),
        ("header not UTF-8", r, not_utf8, names(&[INPUT, "header", "utf-8"])),
        // F32 [5] is 20 bytes; the offsets claim 1000.
        ("offsets past the end", r,
            raw(r#"{"x":{"dtype":"F32","shape":[5],"data_offsets":[0,1000]}}"#, &x20),
            names(&[INPUT, "`x`", "20", "1000"])),
        ("offsets reversed", r,
            raw(r#"{"x":{"dtype":"F32","shape":[0],"data_offsets":[20,0]}}"#, &x20),
            names(&[INPUT, "`x`", "offset"])),
        // F32 [3] is 12 bytes, the offsets span 20.
        ("dtype-size mismatch", r,
            raw(r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,20]}}"#, &x20),
            names(&[INPUT, "`x`", "12", "20"])),
        // F64 [5] is 40 bytes, the offsets span 20.
        ("f64 size mismatch", r,
            raw(r#"{"x":{"dtype":"F64","shape":[5],"data_offsets":[0,20]}}"#, &x20),
            names(&[INPUT, "`x`", "40", "20"])),
        ("overlapping tensors", "relu_backward",
            raw(r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"dy":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}}"#, &x20),
            names(&[INPUT, "`dy`", "offset"])),
        ("unknown dtype", r,
            raw(r#"{"x":{"dtype":"F99","shape":[5],"data_offsets":[0,20]}}"#, &x20),
            names(&[INPUT, "F99"])),
        ("shape product overflows", r,
            raw(r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,20]}}"#, &x20),
            names(&[INPUT, "overflow", "shape"])),
        ("duplicate tensor name", r,
            raw(r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &x20[..8]),
            names(&[INPUT, "duplicate", "`x`"])),
        ("missing data_offsets", r, raw(r#"{"x":{"dtype":"F32","shape":[5]}}"#, &x20),
            names(&[INPUT, "data_offsets"])),
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
    let (g, lf, lb) = (lora_good, "lora_forward", "lora_backward");
    #[rustfmt::skip]
    let cases = vec![
        ("missing lora_b", lf, file(&without(g(), "lora_b")), names(&[lf, "missing", "`lora_b`"])),
        ("missing scale", lf, file(&without(g(), "scale")), names(&[lf, "missing", "`scale`"])),
        ("missing x", lf, file(&without(g(), "x")), names(&[lf, "missing", "`x`"])),
        // Which of x / weight / lora_a is "wrong" is a judgement call: ask for either
        // tensor, its shape and what was expected.
        ("weight I mismatch", lf, file(&lora(&[3, 4], &[5, 3], &[2, 2, 4], &[2, 5, 2])),
            names(&[lf, "`x`|`weight`|`lora_a`", "[3, 4]|[5, 3]|[2, 2, 4]", "expected"])),
        // K comes from one of lora_a / lora_b; the other is blamed.
        ("lora_a K mismatch", lf, file(&lora(&[3, 4], &[5, 4], &[3, 2, 4], &[2, 5, 2])),
            names(&[lf, "`lora_a`|`lora_b`", "[3, 2, 4]|[2, 5, 2]", "expected"])),
        ("lora_b r mismatch", lf, file(&lora(&[3, 4], &[5, 4], &[2, 2, 4], &[2, 5, 3])),
            names(&[lf, "`lora_b`", "[2, 5, 3]", "[2, 5, 2]"])),
        ("per-particle x with wrong K", lf, file(&with(g(), "x", &[3, 3, 4])),
            names(&[lf, "`x`", "[3, 3, 4]", "[2, 3, 4]"])),
        ("x 4-D", lf, file(&with(g(), "x", &[1, 2, 3, 4])), names(&[lf, "`x`", "[1, 2, 3, 4]", "expected"])),
        ("bias wrong length", lf, file(&with(g(), "bias", &[6])), names(&[lf, "`bias`", "[6]", "[5]"])),
        ("scale with 2 elements", lf, file(&with(g(), "scale", &[2])),
            names(&[lf, "`scale`", "[2]", "scalar"])),
        ("missing dy", lb, file(&without(lora_bwd_good(), "dy")), names(&[lb, "missing", "`dy`"])),
        ("h wrong", lb, file(&with(lora_bwd_good(), "h", &[2, 3, 3])),
            names(&[lb, "`h`", "[2, 3, 3]", "[2, 3, 2]"])),
        ("matmul inner mismatch", "matmul", matmul(&[3, 4], &[5, 6], 0.0, 0.0),
            names(&["matmul", "inner", "[3, 4]", "[5, 6]"])),
        // op(a) = aᵀ is [4, 3]: its 3 columns meet b's 4 rows.
        ("matmul inner mismatch, trans", "matmul", matmul(&[3, 4], &[4, 5], 1.0, 0.0),
            names(&["matmul", "inner", "[4, 3]", "[4, 5]"])),
        ("matmul batch mismatch", "matmul", matmul(&[2, 3, 4], &[3, 4, 6], 0.0, 0.0),
            names(&["matmul", "`b`", "[3, 4, 6]", "batch"])),
        ("theta 1-D", "pairwise_sqdist", file(&[f32s("theta", &[6])]),
            names(&["pairwise_sqdist", "`theta`", "[6]", "2-D"])),
        ("svgd kernel wrong", "svgd_direction", svgd(&[3, 2], &[3, 2]),
            names(&["svgd_direction", "`kernel`", "[3, 2]", "[3, 3]"])),
        ("svgd score wrong", "svgd_direction", svgd(&[3, 3], &[3, 3]),
            names(&["svgd_direction", "`score`", "[3, 3]", "[3, 2]"])),
        ("relu_backward dy wrong", "relu_backward", file(&[f32s("x", &[4]), f32s("dy", &[5])]),
            names(&["relu_backward", "`dy`", "[5]", "[4]"])),
        ("labels wrong length", "softmax_xent", xent(i64s("labels", &[0, 1])),
            names(&["softmax_xent", "`labels`", "[2]", "[3]"])),
        ("logits 2-D", "ensemble_stats", file(&[f32s("logits", &[3, 4])]),
            names(&["ensemble_stats", "`logits`", "[3, 4]", "3-D"])),
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
    let (sx, ad, lf) = ("softmax_xent", "adamw_step", "lora_forward");
    #[rustfmt::skip]
    let cases = vec![
        ("label == C", sx, xent(i64s("labels", &[0, 4, 1])),
            names(&[sx, "label 4", "position 1", "4 classes"])),
        ("label far past C", sx, xent(i64s("labels", &[0, 1, 1 << 40])),
            names(&[sx, "label 1099511627776", "too large|out of range"])),
        ("negative label", sx, xent(i64s("labels", &[0, -1, 1])), names(&[sx, "label -1", "negative"])),
        ("fractional label", sx, xent(f32_labels(&[0.0, 1.5, 2.0])),
            names(&[sx, "`labels`", "integer", "1.5"])),
        ("negative float label", sx, xent(f32_labels(&[0.0, -1.0, 2.0])),
            names(&[sx, "label -1", "negative"])),
        ("trans flag 2", "matmul", matmul(&[3, 4], &[4, 5], 2.0, 0.0),
            names(&["matmul", "`trans_a`", "0 or 1", "got 2"])),
        ("trans flag 0.5", "matmul", matmul(&[3, 4], &[4, 5], 0.0, 0.5),
            names(&["matmul", "`trans_b`", "0.5"])),
        ("empty scalar", lf, file(&with(lora_good(), "scale", &[0])),
            names(&[lf, "`scale`", "[0]", "scalar"])),
        ("adamw step 0", ad, adamw(i64s("step", &[0]), &[2, 3]), names(&[ad, "step", "≥ 1|>= 1", "got 0"])),
        ("adamw grad shape", ad, adamw(i64s("step", &[1]), &[3, 2]),
            names(&[ad, "`grad`", "[3, 2]", "[2, 3]"])),
        ("empty x", "relu_forward", file(&[f32s("x", &[0])]),
            names(&["relu_forward", "`x`", "[0]", "non-empty"])),
        ("empty theta", "pairwise_sqdist", file(&[f32s("theta", &[0, 3])]),
            names(&["pairwise_sqdist", "`theta`", "[0, 3]", "non-empty"])),
        ("empty logits M=0", sx, file(&[f32s("logits", &[2, 0, 4]), i64s("labels", &[])]),
            names(&[sx, "`logits`", "[2, 0, 4]", "non-empty"])),
        ("empty C=0", "ensemble_stats", file(&[f32s("logits", &[2, 3, 0])]),
            names(&["ensemble_stats", "`logits`", "[2, 3, 0]", "non-empty"])),
        ("lora r=0", lf, file(&lora(&[3, 4], &[5, 4], &[2, 0, 4], &[2, 5, 0])),
            names(&[lf, "rank", "r=0"])),
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
        let o = run("probe", "relu_forward", &relu_ok(), backend).out;
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
        let problems = huge_outputs_refused(backend);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

#[test]
fn bad_command_lines() {
    let good = relu_ok();
    expect_ok("relu valid", "relu_forward", &good);
    let mut problems = Vec::new();
    let o = run("unknown op", "no_such_op", &good, "cpu");
    let known = names(&[
        "unknown op",
        "`no_such_op`",
        "known",
        "lora_forward",
        "ensemble_stats",
    ]);
    problems.extend(check_err("unknown op", &o, &known));
    let o = run("unknown backend", "relu_forward", &good, "tpu");
    problems.extend(check_err(
        "unknown backend",
        &o,
        &names(&["unknown backend", "`tpu`"]),
    ));
    let (missing, out) = (tmp("does_not_exist.safetensors"), tmp("o"));
    let o = Ran {
        out: run_args(&op_args("relu_forward", &missing, &out, "cpu")),
        input: missing.display().to_string(),
    };
    let why = names(&["cannot open", INPUT, "no such file"]);
    problems.extend(check_err("input file missing", &o, &why));
    let inp = tmp(&format!("relu_cli_{}.safetensors", std::process::id()));
    std::fs::write(&inp, &good).unwrap();
    let bad_out = Path::new("/nonexistent_dir/x/out.safetensors");
    let o = Ran {
        out: run_args(&op_args("relu_forward", &inp, bad_out, "cpu")),
        input: inp.display().to_string(),
    };
    // The path the user gave, and the reason; not the name of a temporary file.
    let why = names(&[
        "cannot write",
        "/nonexistent_dir/x/out.safetensors:",
        "no such file",
        "!.tmp",
    ]);
    problems.extend(check_err("output folder missing", &o, &why));
    let _ = std::fs::remove_file(&inp);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Virtual-memory cap (KiB) for the runs whose outputs cannot fit: a binary that tries to
/// allocate them fails at once (and the test reports the abort) instead of paging the
/// machine. 8 GiB is far above what the inputs (a few MiB) need.
const CAP_KIB: u64 = 8 << 20;

/// `bella ARGS` under [`CAP_KIB`] where the shell can set it.
fn run_capped(args: &[&str]) -> Output {
    if cfg!(unix) {
        let script = format!("ulimit -v {CAP_KIB} 2>/dev/null; exec \"$0\" \"$@\"");
        Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_bella")])
            .args(args)
            .output()
            .expect("running bella under sh")
    } else {
        run_args(args)
    }
}

/// (case name, op, input tensors)
type HugeCase = (&'static str, &'static str, Vec<(String, HostTensor)>);

/// Inputs of a few MiB whose outputs are 2^40 f32 (4 TiB): each must be refused up front
/// with a one-line error naming the op and the memory budget, never an abort.
fn huge_cases() -> Vec<HugeCase> {
    const N: usize = 1 << 20;
    let t = |name: &str, shape: &[usize]| {
        let n = shape.iter().product();
        (name.to_string(), HostTensor::float(shape, vec![0.5; n]))
    };
    let s = |name: &str, v: f32| (name.to_string(), HostTensor::scalar(v));
    vec![
        // c [N, N] = a [N, 1] · b [1, N].
        (
            "matmul outer product of 2^20",
            "matmul",
            vec![
                t("a", &[N, 1]),
                t("b", &[1, N]),
                s("trans_a", 0.0),
                s("trans_b", 0.0),
                s("alpha", 1.0),
            ],
        ),
        // y [K=1, M=N, O=N] from I = r = 1.
        (
            "lora_forward y of 2^40",
            "lora_forward",
            vec![
                t("x", &[N, 1]),
                t("weight", &[N, 1]),
                t("lora_a", &[1, 1, 1]),
                t("lora_b", &[1, N, 1]),
                s("scale", 1.0),
            ],
        ),
        // sqdist [K, K] with K = N.
        (
            "pairwise_sqdist of 2^20 particles",
            "pairwise_sqdist",
            vec![t("theta", &[N, 1])],
        ),
    ]
}

/// Runs [`huge_cases`] on `backend`; returns the problems.
fn huge_outputs_refused(backend: &str) -> Vec<String> {
    huge_cases()
        .into_iter()
        .filter_map(|(case, op, tensors)| {
            let (inp, out) = paths(case, backend);
            bella::io::safetensors::write(&inp, &tensors).expect("writing the input");
            let o = run_capped(&op_args(op, &inp, &out, backend));
            let _ = (std::fs::remove_file(&inp), std::fs::remove_file(&out));
            let ran = Ran {
                out: o,
                input: inp.display().to_string(),
            };
            check_err(case, &ran, &names(&[op, "budget"]))
        })
        .collect()
}

#[test]
fn outputs_too_large_for_memory() {
    expect_ok(
        "matmul valid",
        "matmul",
        &matmul(&[4, 3], &[4, 5], 1.0, 0.0),
    );
    expect_ok("lora valid", "lora_forward", &file(&lora_good()));
    expect_ok(
        "pairwise_sqdist valid",
        "pairwise_sqdist",
        &file(&[f32s("theta", &[3, 2])]),
    );
    let problems = huge_outputs_refused("cpu");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
