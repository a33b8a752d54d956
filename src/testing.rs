//! Shared test bodies: every op on random inputs (fresh seeds, odd sizes, K=1, r=1, M=1,
//! shared and per-particle `x`, sizes past one tile, and past the 65535-workgroup dispatch
//! limit) compared with the CPU reference by relative error. `tests/cross_backend.rs`
//! instantiates them per backend with [`backend_tests!`](crate::backend_tests); `bella doctor`
//! runs the same cases.

use crate::backend::{self, Backend, BackendKind};
use crate::error::Result;
use crate::ops::named::{run_named, HostTensor, Named};
use crate::rng::Rng;
use std::sync::Arc;

/// Largest relative error accepted between a backend and the CPU reference.
pub const TOLERANCE: f64 = 1e-4;

/// Reference norms below this are compared absolutely (see [`rel_err`]).
const REL_ERR_FLOOR: f64 = 1e-30;

/// `‖out − ref‖ / max(‖ref‖, 1e-30)`. The floor only matters for outputs that are all but
/// zero (an entropy of 1e-35 when one logit dominates by ~80): f32 kernels that flush
/// subnormals cannot resolve those relatively, and an absolute error below 1e-30 is no bug.
pub fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    rel_err_scaled(out, reference, 0.0)
}

/// `‖out − ref‖ / max(‖ref‖, scale, 1e-30)`: for an output that is a difference of larger
/// quantities, compared at the scale of those quantities.
pub fn rel_err_scaled(out: &[f32], reference: &[f32], scale: f64) -> f64 {
    if out.len() != reference.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&o, &r) in out.iter().zip(reference) {
        let d = o as f64 - r as f64;
        num += d * d;
        den += (r as f64) * (r as f64);
    }
    if num.is_nan() {
        return f64::INFINITY;
    }
    num.sqrt() / den.sqrt().max(scale).max(REL_ERR_FLOOR)
}

/// The norm an output is measured against beyond its own. Entropies live in `[0, ln C]`
/// and `mutual_info = entropy − expected_entropy` is a difference of two such numbers, so
/// all three are measured against that range (`√M · ln C` over M rows): f32 kernels resolve
/// them to ~1e-7 of it, while a row whose top logit dominates by ~30 has an entropy of
/// ~1e-11 that no f32 formula gets to 1e-4 relative, and K = 1 makes the reference MI exactly 0.
fn comparison_scale(output: &str, reference: &[(String, HostTensor)]) -> f64 {
    let probs = reference.iter().find(|(n, _)| n == "probs");
    match (output, probs) {
        ("entropy" | "expected_entropy" | "mutual_info", Some((_, p))) if p.shape.len() == 2 => {
            let (m, c) = (p.shape[0] as f64, p.shape[1] as f64);
            m.sqrt() * c.ln()
        }
        _ => 0.0,
    }
}

/// Backends named in `BELLA_REQUIRE` (comma list) must be present: a missing one fails.
pub fn required(name: &str) -> bool {
    std::env::var("BELLA_REQUIRE")
        .map(|v| v.split(',').any(|s| s.trim() == name))
        .unwrap_or(false)
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
    Small,
    Full,
    /// `Full` plus cases past the 65535-per-dimension dispatch limit.
    Huge,
}

impl Sizes {
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
    pub name: String,
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
    }
    v
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
            let mut shapes = vec![(1, 1, 1, 1), (3, 5, 7, 9), (2, 65, 33, 70)];
            if sizes != Sizes::Small {
                shapes.push((4, 130, 257, 129));
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
            let mut shapes = vec![(1, 5), (2, 1), (5, 33), (8, 1000)];
            if sizes != Sizes::Small {
                shapes.push((16, 70_001));
            }
            for (k, d) in shapes {
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

/// One output's comparison.
pub struct Comparison {
    pub case: String,
    pub output: String,
    pub rel_err: f64,
}

/// Run every case of `op` on `be` and on the CPU; the relative error of each output.
pub fn compare_op(be: &dyn Backend, op: &str, sizes: Sizes, seed: u64) -> Result<Vec<Comparison>> {
    let cpu = backend::cpu::CpuBackend::new();
    let mut rng = Rng::new(seed);
    let mut result = Vec::new();
    for c in cases(op, sizes, &mut rng) {
        let want = run_named(&cpu, op, &c.inputs)?;
        let got = run_named(be, op, &c.inputs)
            .map_err(|e| crate::error::BellaError::invalid(format!("{op} [{}]: {e}", c.name)))?;
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            let err = if w.shape != g.shape {
                f64::INFINITY
            } else {
                rel_err_scaled(&g.to_f32(), &w.to_f32(), comparison_scale(name, &want))
            };
            result.push(Comparison {
                case: c.name.clone(),
                output: name.clone(),
                rel_err: err,
            });
        }
    }
    Ok(result)
}

/// The shared test body: `op` on backend `kind` matches the CPU on fresh random inputs.
pub fn check_op(kind: BackendKind, op: &str) {
    let Some(be) = backend_for_test(kind) else {
        return;
    };
    let seed = Rng::fresh_seed();
    let sizes = Sizes::for_backend(kind);
    let comps = compare_op(be.as_ref(), op, sizes, seed)
        .unwrap_or_else(|e| panic!("{op} on {kind} (seed {seed}) failed: {e}"));
    assert!(!comps.is_empty(), "no cases for {op}");
    for c in comps {
        assert!(
            c.rel_err <= TOLERANCE,
            "{op} on {kind}, case [{}], output `{}`: relative error {:.3e} > {TOLERANCE:.0e} (seed {seed})",
            c.case,
            c.output,
            c.rel_err
        );
    }
}

/// Instantiate the shared test bodies for one backend: one `#[test]` per op.
#[macro_export]
macro_rules! backend_tests {
    ($kind:expr) => {
        $crate::backend_tests!(@ops $kind;
            lora_forward, lora_backward, matmul, pairwise_sqdist, rbf_kernel, svgd_direction,
            adamw_step, relu_forward, relu_backward, gelu_forward, gelu_backward,
            softmax_xent, ensemble_stats);
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
