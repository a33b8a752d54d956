//! Internal: test helpers for `tests/` and `bella doctor`, no stability promise.
//!
//! Shared test bodies: every op on random inputs (fresh seeds, odd sizes, K=1, r=1, M=1,
//! shared and per-particle `x`, sizes past one tile, and past the 65535-workgroup dispatch
//! limit) compared with the float64 [`oracle`](crate::oracle), norm-wise and element-wise.
//! `tests/cross_backend.rs` instantiates them per backend (the CPU backend included) with
//! [`backend_tests!`](crate::backend_tests); `bella doctor` runs the same cases.
//!
//! Comparison helpers: [`compare`] (f32 output against an f64 reference),
//! [`compare_f32`] (against an f32 reference), [`compare_outputs`] (an op's named outputs
//! against the oracle's). Each reports a [`Comparison`] that passes only if the output has
//! the reference's shape, holds no NaN, and meets both bounds:
//! `‖out − ref‖ / ‖ref‖ ≤ TOLERANCE` and `max |out − ref| ≤ RTOL · max |ref| + ATOL`.
//! The norm bound alone lets a few wrong elements through (one bad element in 10⁶ moves the
//! norm by ~1e-3 of its own size); the element-wise bound does not.
//!
//! [`half`]: the bf16/f16 checks (`cast`, 16-bit `matmul`, refusals), for
//! `tests/half_precision.rs` and `bella doctor`.

pub mod half;

use crate::backend::{self, Backend, BackendKind};
use crate::error::{BellaError, Result};
use crate::ops::named::{run_named, HostTensor, Named};
use crate::oracle::{self, Tensor64};
use crate::rng::Rng;
use std::sync::Arc;

/// Largest norm-wise relative error `‖out − ref‖ / ‖ref‖` accepted against the reference.
/// f32 kernels land at 1e-7 to 1e-6 on these cases (rounding of sums of up to ~10⁵ terms);
/// 1e-4 leaves two orders of margin and is still far below any wrong formula.
pub const TOLERANCE: f64 = 1e-4;

/// Element-wise relative bound: `max |out − ref| ≤ RTOL · scale + ATOL`, `scale` being
/// `max |ref|` (see [`Scale`]). Measuring every element against the largest one, not
/// against itself, is what lets f32 results whose small elements come out of cancelling
/// sums (a matmul entry near 0, an SVGD direction that nearly balances) pass at all, while
/// one element off by 1e-4 of the output's range still fails. Same figure as
/// [`TOLERANCE`]: an f32 kernel's worst element is within ~1e-6 of the range.
pub const RTOL: f64 = 1e-4;

/// Absolute floor of the element-wise bound, for outputs whose reference is all but zero
/// (a K = 1 distance matrix, a relu of negatives, C = 1 entropies, `dlogits` of one class).
/// Kernels compute those exactly, up to subnormals that GPUs flush to zero (below 1.2e-38),
/// so the floor sits just above that and tolerates nothing else.
pub const ATOL: f64 = 1e-30;

/// Reference norms below this are compared absolutely (see [`rel_err`]).
const REL_ERR_FLOOR: f64 = 1e-30;

/// Norm-wise only: `‖out − ref‖ / max(‖ref‖, 1e-30)`, infinite for a length mismatch or a
/// NaN. The floor only matters for outputs that are all but zero. One wrong element of many
/// hardly moves this number: prefer [`compare_f32`], which also bounds every element.
pub fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    let reference: Vec<f64> = reference.iter().map(|&r| r as f64).collect();
    compare(out, &reference, Scale::Own).rel_err
}

/// What an output's errors are measured against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// The reference itself: `‖ref‖` norm-wise, `max |ref|` element-wise.
    Own,
    /// A known range `r` of the values, for outputs that are small differences of larger
    /// quantities: `max(‖ref‖, √n · r)` norm-wise, `max(max |ref|, r)` element-wise.
    Range(f64),
}

/// One output compared with its reference: both errors, the worst element, and whether
/// it passes ([`Comparison::passed`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The input case (sizes) it came from.
    pub case: String,
    /// The output's name.
    pub output: String,
    /// Norm-wise: `‖out − ref‖ / ‖ref‖` (norm scale as in [`Scale`]); ∞ on a mismatch or NaN.
    pub rel_err: f64,
    /// Element-wise: `max |out − ref|`; ∞ on a mismatch or NaN.
    pub max_abs_err: f64,
    /// What `max_abs_err` is measured against: `max |ref|`, or the [`Scale::Range`].
    pub scale: f64,
    /// Flat index of the worst element (the first NaN if there is one).
    pub worst_index: Option<usize>,
    /// `(out, ref)` at `worst_index`.
    pub worst_values: Option<(f64, f64)>,
    /// Why the output could not be compared at all (names, shapes, lengths), if so.
    pub mismatch: Option<String>,
}

impl Comparison {
    /// The element-wise bound `RTOL · scale + ATOL`.
    pub fn bound(&self) -> f64 {
        RTOL * self.scale + ATOL
    }
    /// `max |out − ref| / scale`: the element-wise error relative to the output's scale
    /// (what [`RTOL`] bounds).
    pub fn elem_err(&self) -> f64 {
        if self.scale > 0.0 {
            self.max_abs_err / self.scale
        } else if self.max_abs_err == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    }
    /// Norm-wise check: `rel_err ≤ TOLERANCE`.
    pub fn norm_ok(&self) -> bool {
        self.mismatch.is_none() && self.rel_err <= TOLERANCE
    }
    /// Element-wise check: `max |out − ref| ≤ RTOL · scale + ATOL` (false for NaN).
    pub fn elementwise_ok(&self) -> bool {
        self.mismatch.is_none() && self.max_abs_err <= self.bound()
    }
    /// Same shape, no NaN, and both checks.
    pub fn passed(&self) -> bool {
        self.norm_ok() && self.elementwise_ok()
    }
    /// One line for a failure message.
    pub fn describe(&self) -> String {
        if let Some(m) = &self.mismatch {
            return format!("[{}] `{}`: {m}", self.case, self.output);
        }
        let worst = match (self.worst_index, self.worst_values) {
            (Some(i), Some((o, r))) => format!(", worst at [{i}]: {o:e} vs {r:e}"),
            _ => String::new(),
        };
        format!(
            "[{}] `{}`: norm err {:.3e} (≤ {TOLERANCE:.0e}), max |Δ| {:.3e} (≤ {:.3e} = {RTOL:.0e}·{:.3e} + {ATOL:.0e}){worst}",
            self.case,
            self.output,
            self.rel_err,
            self.max_abs_err,
            self.bound(),
            self.scale
        )
    }
    fn mismatched(why: String) -> Self {
        Comparison {
            case: String::new(),
            output: String::new(),
            rel_err: f64::INFINITY,
            max_abs_err: f64::INFINITY,
            scale: 0.0,
            worst_index: None,
            worst_values: None,
            mismatch: Some(why),
        }
    }
}

/// Compare an f32 output with an f64 reference of the same length, both ways (see
/// [`Comparison`]). A NaN anywhere in `out` (or `reference`) fails: its index is reported.
pub fn compare(out: &[f32], reference: &[f64], scale: Scale) -> Comparison {
    if out.len() != reference.len() {
        return Comparison::mismatched(format!(
            "{} elements, the reference has {}",
            out.len(),
            reference.len()
        ));
    }
    let (mut diff_sq, mut ref_sq, mut ref_max) = (0.0f64, 0.0f64, 0.0f64);
    let (mut max_abs, mut worst, mut first_nan) = (0.0f64, 0, None);
    for (i, (&o, &r)) in out.iter().zip(reference).enumerate() {
        let d = (o as f64 - r).abs();
        if d.is_nan() {
            first_nan = first_nan.or(Some(i));
            continue;
        }
        diff_sq += d * d;
        ref_sq += r * r;
        ref_max = ref_max.max(r.abs());
        if d > max_abs {
            (max_abs, worst) = (d, i);
        }
    }
    let (norm_scale, elem_scale) = match scale {
        Scale::Own => (ref_sq.sqrt(), ref_max),
        Scale::Range(r) => (
            ref_sq.sqrt().max((out.len() as f64).sqrt() * r),
            ref_max.max(r),
        ),
    };
    let (rel_err, max_abs) = match first_nan {
        // A NaN is the worst element there can be, and fails both checks.
        Some(i) => {
            worst = i;
            (f64::INFINITY, f64::INFINITY)
        }
        None => (diff_sq.sqrt() / norm_scale.max(REL_ERR_FLOOR), max_abs),
    };
    let worst = (!out.is_empty()).then_some(worst);
    Comparison {
        case: String::new(),
        output: String::new(),
        rel_err,
        max_abs_err: max_abs,
        scale: elem_scale,
        worst_index: worst,
        worst_values: worst.map(|i| (out[i] as f64, reference[i])),
        mismatch: None,
    }
}

/// [`compare`] against an f32 reference (scale: the reference itself), for unit tests that
/// check one kernel against another.
pub fn compare_f32(out: &[f32], reference: &[f32]) -> Comparison {
    let reference: Vec<f64> = reference.iter().map(|&r| r as f64).collect();
    compare(out, &reference, Scale::Own)
}

/// The scale an op output is judged at. Entropies live in `[0, ln C]`, and each is computed
/// in f32 from logits of up to ~100 through a log-sum-exp, so a kernel's error on one is
/// absolute, ~1e-7 of the logits' size, however small the entropy: a row whose top logit
/// dominates by ~30 has an entropy of ~1e-11 that no f32 formula gets to 1e-4 of itself.
/// `mutual_info = entropy − expected_entropy` is a difference of two such numbers (exactly
/// 0 for K = 1). So these three are judged element by element against `ln C`, the range
/// every one of their elements lives in: 1e-4 of it is still far below any real bug
/// (a wrong sign, a missing particle or a wrong mean moves an entropy by ~0.1·ln C).
///
/// `softmax_xent` has the same floor: its loss is `logsumexp(l) − l_label` from logits of up
/// to ~100, so an f32 kernel's error on it is absolute, ~1e-5 nat, even when the label's
/// logit dominates and the loss is 1e-4 (then 1e-4 of itself is out of f32's reach, as is
/// the label's `dlogits = (p − 1)/M` with `p` within 1e-4 of 1). So `loss` is judged against
/// 1 nat and `dlogits` against `1/M`, the size of a label's entry whenever `p` is not ≈ 1;
/// a real bug (a wrong label, mean or shift) moves the loss by ≳ 0.01 nat.
pub fn output_scale(output: &str, reference: &[(String, Tensor64)]) -> Scale {
    let shape_of = |name: &str| {
        reference
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shape.clone())
    };
    let has = |name: &str| shape_of(name).is_some();
    let single = |name: &str| shape_of(name).is_some_and(|s| s.iter().product::<usize>() == 1);
    match (output, shape_of("probs"), shape_of("dlogits")) {
        ("entropy" | "expected_entropy" | "mutual_info", Some(p), _) if p.len() == 2 => {
            Scale::Range((p[1] as f64).ln())
        }
        ("loss", _, Some(_)) => Scale::Range(1.0),
        // `dx = dy · f'(x)`: an f32 kernel's error is ~1e-7 of `|dy|` (the cases draw
        // dy ~ N(0, 1)) whatever `f'(x)` is, and GELU's derivative crosses 0 at x ≈ −0.75,
        // so a one-element case can sit arbitrarily close to 0: judged against 1, |dy|'s size.
        ("dx", None, None) if reference.len() == 1 => Scale::Range(1.0),
        // The LoRA ops' one-element case (K = M = I = O = r = 1): `y = x·W + s·(x·A)·B` and
        // `dx = dy·W + s·(dy·B)·A` are sums of two terms of ~0.1–1 (the cases' scales) that
        // can cancel (a CI run saw dx = −5.4e-7, off by 1.4e-9 = an f32 ulp of the terms):
        // judged against 1, as axpby.
        ("y" | "dx", None, None) if single(output) && (has("h") || has("d_lora_a")) => {
            Scale::Range(1.0)
        }
        // `axpby`'s `alpha·x + beta·y` of terms ~1 (x, y ~ N(0, 1), |alpha|, |beta| < 1) can
        // cancel to ~1e-5, whose f32 error is ~1e-7 of the terms: judged against 1.
        ("out", None, None) if reference.len() == 1 => Scale::Range(1.0),
        ("dlogits", _, Some(d)) if d.len() == 3 && d[1] > 0 => Scale::Range(1.0 / d[1] as f64),
        _ => Scale::Own,
    }
}

/// Compare an op's named outputs with the oracle's: same names in the same order, same
/// shapes, and each output as in [`compare`] at its [`output_scale`]. Missing or extra
/// outputs and shape mismatches come back as failed comparisons.
pub fn compare_outputs(
    case: &str,
    got: &[(String, HostTensor)],
    want: &[(String, Tensor64)],
) -> Vec<Comparison> {
    let mut result = Vec::new();
    for (at, (name, w)) in want.iter().enumerate() {
        let mut c = match got.get(at) {
            None => Comparison::mismatched("missing from the output".into()),
            Some((gname, _)) if gname != name => {
                Comparison::mismatched(format!("output {at} is `{gname}`, expected `{name}`"))
            }
            Some((_, g)) if g.shape != w.shape => Comparison::mismatched(format!(
                "shape {:?}, the reference is {:?}",
                g.shape, w.shape
            )),
            Some((_, g)) => compare(&g.to_f32(), &w.data, output_scale(name, want)),
        };
        c.case = case.to_string();
        c.output = name.clone();
        result.push(c);
    }
    for (name, _) in got.iter().skip(want.len()) {
        let mut c = Comparison::mismatched("not an output of the op".into());
        c.case = case.to_string();
        c.output = name.clone();
        result.push(c);
    }
    result
}

/// Backends named in `BELLA_REQUIRE` (comma list) must be present: a missing one fails.
pub fn required(name: &str) -> bool {
    std::env::var("BELLA_REQUIRE")
        .map(|v| v.split(',').any(|s| s.trim() == name))
        .unwrap_or(false)
}

/// The Python interpreter the tests run (`BELLA_PYTHON`, else `python3`).
pub fn python() -> String {
    std::env::var("BELLA_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether [`python`] imports every module of `modules` (e.g. `"numpy, safetensors"`). When
/// not: panics if `BELLA_REQUIRE` names `require`, else prints that `what` is skipped.
pub fn python_with(modules: &str, require: &str, what: &str) -> bool {
    let ok = std::process::Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            !required(require),
            "BELLA_REQUIRE has {require}, but `{} -c 'import {modules}'` fails",
            python()
        );
        println!(
            "notice: skipping {what}: {} cannot import {modules} (pip install them)",
            python()
        );
    }
    ok
}

/// Open a backend for a test, or print why it is skipped (panics if `BELLA_REQUIRE` names it).
pub fn backend_for_test(kind: BackendKind) -> Option<Arc<dyn Backend>> {
    match backend::open(kind) {
        Ok(b) => Some(b),
        Err(e) if required(kind.name()) => {
            panic!("BELLA_REQUIRE names {kind} but it is not available: {e}")
        }
        Err(e) => {
            eprintln!("notice: skipping {kind} tests: {e}");
            None
        }
    }
}

/// How big the random cases are. The simulator interprets every thread, so it gets smaller
/// (still multi-tile, multi-CTA) cases; GPUs also get a case past 65535 workgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizes {
    /// Multi-tile, multi-CTA cases small enough for the PTX simulator.
    Small,
    /// Every shape up to the largest training-like sizes.
    Full,
    /// `Full` plus cases past the 65535-per-dimension dispatch limit.
    Huge,
}

impl Sizes {
    /// The sizes a backend is tested at by default.
    pub fn for_backend(kind: BackendKind) -> Sizes {
        match kind {
            BackendKind::PtxSim => Sizes::Small,
            BackendKind::Cpu => Sizes::Full,
            BackendKind::Wgpu | BackendKind::Cuda => Sizes::Huge,
        }
    }
}

/// One named input set for an op.
pub struct Case {
    /// The sizes and options, for messages.
    pub name: String,
    /// Named inputs, as for `run_named` and the oracle.
    pub inputs: Named,
}

fn f(shape: &[usize], rng: &mut Rng, scale: f32) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::float(
        shape,
        rng.normal_vec(n).into_iter().map(|v| v * scale).collect(),
    )
}

fn scalar(v: f32) -> HostTensor {
    HostTensor::scalar(v)
}

fn case(name: String, items: Vec<(&str, HostTensor)>) -> Case {
    Case {
        name,
        inputs: items.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

/// LoRA layer shapes `(K, M, I, O, r)`: edge cases and sizes past the kernels' tiles.
fn lora_shapes(sizes: Sizes) -> Vec<(usize, usize, usize, usize, usize)> {
    // The last fixed shape has r > 64 and K·r > 64: kernels that group particles by rank
    // must take their other path.
    let mut v = vec![
        (1, 1, 1, 1, 1),
        (3, 5, 7, 6, 2),
        (1, 17, 33, 9, 1),
        (2, 1, 70, 65, 3),
        (3, 20, 18, 30, 70),
    ];
    if sizes == Sizes::Small {
        v.push((3, 37, 70, 67, 4));
    } else {
        v.push((4, 130, 129, 67, 8));
        v.push((8, 67, 300, 257, 16));
        // 128×128 tiles of the wgpu fused kernels: ragged on both sides, particle boundaries
        // inside a tile (per-particle x), r = 5 so 4-rank steps straddle particles.
        v.push((3, 200, 250, 250, 5));
    }
    v
}

/// `(K, D)` of the SVGD ops' cases: K = 80 takes the PTX fallback kernels (the tiled ones hold
/// K ≤ 64); K = 64 is the tiled kernels' largest, K = 45 one past a warp's 32 rows.
fn svgd_shapes(sizes: Sizes) -> Vec<(usize, usize)> {
    let mut shapes = vec![
        (1, 5),
        (2, 1),
        (5, 33),
        (8, 1000),
        (45, 129),
        (64, 40),
        (80, 37),
    ];
    if sizes != Sizes::Small {
        shapes.push((16, 70_001));
    }
    shapes
}

/// The random cases of `op`.
pub fn cases(op: &str, sizes: Sizes, rng: &mut Rng) -> Vec<Case> {
    let mut out = Vec::new();
    match op {
        "lora_forward" | "lora_backward" => {
            for (k, m, i, o, r) in lora_shapes(sizes) {
                for shared in [true, false] {
                    let x_shape: Vec<usize> = if shared { vec![m, i] } else { vec![k, m, i] };
                    let mut items = vec![
                        ("x", f(&x_shape, rng, 1.0)),
                        ("weight", f(&[o, i], rng, 0.3)),
                        ("lora_a", f(&[k, r, i], rng, 0.3)),
                        ("lora_b", f(&[k, o, r], rng, 0.3)),
                        ("scale", scalar(2.0 / r as f32)),
                    ];
                    if op == "lora_forward" {
                        if (k + m) % 2 == 1 || !shared {
                            items.push(("bias", f(&[o], rng, 1.0)));
                        }
                    } else {
                        items.push(("dy", f(&[k, m, o], rng, 1.0)));
                        items.push(("h", f(&[k, m, r], rng, 1.0)));
                    }
                    let tag = if shared { "shared x" } else { "per-particle x" };
                    out.push(case(format!("K={k} M={m} I={i} O={o} r={r} {tag}"), items));
                }
            }
        }
        "matmul" => {
            let mut shapes = vec![
                (1, 1, 1, 1),
                (3, 5, 7, 9),
                (2, 65, 33, 70),
                (2, 130, 133, 17),
                (1, 1, 37, 20),
                (2, 40, 1, 19),
                (1, 30, 41, 1),
                (3, 600, 580, 9),
            ];
            if sizes != Sizes::Small {
                shapes.push((4, 130, 257, 129));
                // Tiles of the wgpu kernels: a narrow product (n ≤ 16) and a short one (m ≤ 16)
                // over several split-k slices, and one big enough for 128×128 tiles with a
                // ragged edge on every side.
                shapes.push((2, 70, 5, 100));
                shapes.push((2, 3, 70, 45));
                shapes.push((1, 1030, 1027, 19));
            }
            for (kb, m, n, kk) in shapes {
                for ta in [false, true] {
                    for tb in [false, true] {
                        // Alternate which operand is shared, and cover the unbatched case.
                        let (ba, bb) = match (ta as usize + tb as usize + m) % 3 {
                            0 => (true, true),
                            1 => (true, false),
                            _ => (false, true),
                        };
                        let sa: Vec<usize> = if ta { vec![kk, m] } else { vec![m, kk] };
                        let sb: Vec<usize> = if tb { vec![n, kk] } else { vec![kk, n] };
                        let with = |b: bool, s: &[usize]| -> Vec<usize> {
                            if b {
                                [&[kb][..], s].concat()
                            } else {
                                s.to_vec()
                            }
                        };
                        let items = vec![
                            ("a", f(&with(ba, &sa), rng, 1.0)),
                            ("b", f(&with(bb, &sb), rng, 1.0)),
                            ("trans_a", HostTensor::int(&[], vec![ta as i64])),
                            ("trans_b", HostTensor::int(&[], vec![tb as i64])),
                            ("alpha", scalar(0.5)),
                        ];
                        out.push(case(
                            format!("Kb={kb} m={m} n={n} inner={kk} ta={ta} tb={tb} batched a={ba} b={bb}"),
                            items,
                        ));
                    }
                }
            }
        }
        "pairwise_sqdist" | "rbf_kernel" | "svgd_direction" => {
            for (k, d) in svgd_shapes(sizes) {
                for given in [false, true] {
                    if given && op == "pairwise_sqdist" {
                        continue;
                    }
                    let mut items = vec![("theta", f(&[k, d], rng, 0.1))];
                    match op {
                        "rbf_kernel" if given => {
                            items.push(("bandwidth", scalar(0.7 * d as f32 * 0.02)))
                        }
                        "svgd_direction" => {
                            items.push(("score", f(&[k, d], rng, 1.0)));
                            let kern: Vec<f32> = (0..k * k).map(|_| rng.uniform()).collect();
                            items.push(("kernel", HostTensor::float(&[k, k], kern)));
                            items.push(("bandwidth", scalar(0.3 + rng.uniform())));
                        }
                        _ => {}
                    }
                    out.push(case(format!("K={k} D={d}"), items));
                    if op == "pairwise_sqdist" || op == "svgd_direction" {
                        break;
                    }
                }
            }
        }
        "svgd_step" => {
            // The SVGD shapes (the fused PTX kernel up to K = 64, the two ops at K = 80). m and v start non-zero and the steps are past the first: at step 1
            // from m = v = 0 AdamW moves each element by lr · sign(g), which an f32 φ near
            // zero may flip against the float64 oracle's.
            let steps = [2, 3, 5, 10, 20, 100, 1000, 7];
            for ((k, d), step) in svgd_shapes(sizes).into_iter().zip(steps) {
                let kern: Vec<f32> = (0..k * k).map(|_| rng.uniform()).collect();
                let items = vec![
                    ("theta", f(&[k, d], rng, 0.1)),
                    ("score", f(&[k, d], rng, 1.0)),
                    ("kernel", HostTensor::float(&[k, k], kern)),
                    ("bandwidth", scalar(0.3 + rng.uniform())),
                    ("grad_scale", scalar(-0.5)),
                    ("m", f(&[k, d], rng, 0.1)),
                    (
                        "v",
                        HostTensor::float(&[k, d], rng.uniform_vec(k * d, 0.01, 0.1)),
                    ),
                    ("lr", scalar(1e-2)),
                    ("beta1", scalar(0.9)),
                    ("beta2", scalar(0.999)),
                    ("eps", scalar(1e-8)),
                    ("weight_decay", scalar(0.01)),
                    ("step", HostTensor::int(&[], vec![step])),
                ];
                out.push(case(format!("K={k} D={d} step={step}"), items));
            }
        }
        "adamw_step" => {
            let mut lens = vec![1, 7, 1000];
            if sizes != Sizes::Small {
                lens.push(300_001);
            }
            for (n, step) in lens.into_iter().zip([1, 3, 10, 1000]) {
                let items = vec![
                    ("param", f(&[n], rng, 1.0)),
                    ("grad", f(&[n], rng, 1.0)),
                    ("m", f(&[n], rng, 0.1)),
                    ("v", HostTensor::float(&[n], rng.uniform_vec(n, 0.0, 0.1))),
                    ("lr", scalar(1e-2)),
                    ("beta1", scalar(0.9)),
                    ("beta2", scalar(0.999)),
                    ("eps", scalar(1e-8)),
                    ("weight_decay", scalar(0.01)),
                    ("step", HostTensor::int(&[], vec![step])),
                ];
                out.push(case(format!("n={n} step={step}"), items));
            }
        }
        "relu_forward" | "relu_backward" | "gelu_forward" | "gelu_backward" => {
            let mut shapes: Vec<Vec<usize>> = vec![vec![1], vec![3, 5, 7], vec![1000, 3]];
            if sizes != Sizes::Small {
                shapes.push(vec![257, 1031]);
            }
            if sizes == Sizes::Huge {
                // 65536 × 256 + 1 elements: one workgroup/CTA of 256 per 256 elements
                // needs more than 65535 groups in one dimension.
                shapes.push(vec![65_536 * 256 + 1]);
            }
            for s in shapes {
                let mut items = vec![("x", f(&s, rng, 2.0))];
                if op.ends_with("backward") {
                    items.push(("dy", f(&s, rng, 1.0)));
                }
                out.push(case(format!("shape {s:?}"), items));
            }
        }
        "axpby" => {
            let mut shapes: Vec<Vec<usize>> = vec![vec![1], vec![3, 5, 7], vec![1000, 3]];
            if sizes != Sizes::Small {
                shapes.push(vec![257, 1031]);
            }
            if sizes == Sizes::Huge {
                // Past the 65535-workgroup limit, as for the activations.
                shapes.push(vec![65_536 * 256 + 1]);
            }
            for s in shapes {
                let (alpha, beta) = (2.0 * rng.uniform() - 1.0, 2.0 * rng.uniform() - 1.0);
                let items = vec![
                    ("x", f(&s, rng, 1.0)),
                    ("y", f(&s, rng, 1.0)),
                    ("alpha", scalar(alpha)),
                    ("beta", scalar(beta)),
                ];
                out.push(case(
                    format!("shape {s:?} alpha={alpha:.3} beta={beta:.3}"),
                    items,
                ));
            }
        }
        "softmax_xent" | "ensemble_stats" => {
            let mut shapes = vec![(1, 1, 1), (1, 3, 10), (4, 7, 3), (5, 33, 257)];
            if sizes != Sizes::Small {
                shapes.push((8, 300, 1000));
            }
            if sizes == Sizes::Huge {
                // One row per workgroup: 70 000 rows pass the dispatch limit.
                shapes.push((2, 35_000, 10));
            }
            for (k, m, c) in shapes {
                // Large logits check stability.
                let mut items =
                    vec![("logits", f(&[k, m, c], rng, if c > 5 { 30.0 } else { 3.0 }))];
                if op == "softmax_xent" {
                    let labels = (0..m).map(|_| rng.below(c) as i64).collect();
                    items.push(("labels", HostTensor::int(&[m], labels)));
                }
                out.push(case(format!("K={k} M={m} C={c}"), items));
            }
        }
        _ => {}
    }
    out
}

/// Run every case of `op` on `be` and on the float64 oracle; both errors of each output.
pub fn compare_op(be: &dyn Backend, op: &str, sizes: Sizes, seed: u64) -> Result<Vec<Comparison>> {
    let mut rng = Rng::new(seed);
    let mut result = Vec::new();
    for c in cases(op, sizes, &mut rng) {
        let want = oracle::run_f64(op, &c.inputs)
            .map_err(|e| BellaError::invalid(format!("oracle {op} [{}]: {e}", c.name)))?;
        let got = run_named(be, op, &c.inputs)
            .map_err(|e| BellaError::invalid(format!("{op} [{}]: {e}", c.name)))?;
        result.extend(compare_outputs(&c.name, &got, &want));
    }
    Ok(result)
}

/// The shared test body: `op` on backend `kind` matches the oracle on fresh random inputs,
/// norm-wise and element-wise.
pub fn check_op(kind: BackendKind, op: &str) {
    let Some(be) = backend_for_test(kind) else {
        return;
    };
    let seed = Rng::fresh_seed();
    let sizes = Sizes::for_backend(kind);
    let comps = compare_op(be.as_ref(), op, sizes, seed)
        .unwrap_or_else(|e| panic!("{op} on {kind} (seed {seed}) failed: {e}"));
    assert!(!comps.is_empty(), "no cases for {op}");
    let failures: Vec<String> = comps
        .iter()
        .filter(|c| !c.passed())
        .map(|c| c.describe())
        .collect();
    assert!(
        failures.is_empty(),
        "{op} on {kind} disagrees with the oracle (seed {seed}):\n  {}",
        failures.join("\n  ")
    );
}

/// Instantiate the shared test bodies for one backend: one `#[test]` per op.
#[doc(hidden)]
#[macro_export]
macro_rules! backend_tests {
    ($kind:expr) => {
        $crate::backend_tests!(@ops $kind;
            lora_forward, lora_backward, matmul, pairwise_sqdist, rbf_kernel, svgd_direction,
            adamw_step, svgd_step, relu_forward, relu_backward, gelu_forward, gelu_backward,
            softmax_xent, ensemble_stats, axpby);
    };
    (@ops $kind:expr; $($op:ident),*) => {
        $(
            #[test]
            fn $op() {
                $crate::testing::check_op($kind, stringify!($op));
            }
        )*
    };
}
