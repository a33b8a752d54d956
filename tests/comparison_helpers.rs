//! The comparison helpers of `bella::testing` catch what they must, and the float64 oracle
//! computes what DESIGN.md says.
//!
//! Planted bugs, for every helper: one wrong element in a 10⁶-element output fails the
//! element-wise check while the norm-wise check alone passes it (which is why the
//! element-wise check exists); a NaN fails; a shape (or length) mismatch fails; a correct
//! output, rounded to f32, passes.
//!
//! The oracle: tiny cases of every op, the expected numbers worked out by hand in the
//! comments (2×2 products, softmax of [0, ln 3], the median of an even count, ...).

use bella::backend::cpu::CpuBackend;
use bella::ops::named::{run_named, HostTensor, Named};
use bella::oracle::{self, Tensor64};
use bella::rng::Rng;
use bella::testing::{
    compare, compare_f32, compare_outputs, rel_err, Comparison, Scale, ATOL, RTOL, TOLERANCE,
};

const N: usize = 1_000_000;
/// Where the planted bug goes.
const BAD: usize = 654_321;

/// A 10⁶-element reference of standard normals (‖ref‖ ≈ 1000, max |ref| ≈ 5).
fn normal_reference() -> Vec<f64> {
    let mut rng = Rng::new(20240611);
    rng.normal_vec(N).into_iter().map(|v| v as f64).collect()
}

/// Entropy-like values in `[0, ln 10]`.
fn entropy_reference() -> Vec<f64> {
    let mut rng = Rng::new(7);
    let ln_c = 10f64.ln();
    (0..N).map(|_| rng.uniform() as f64 * ln_c).collect()
}

fn rounded(reference: &[f64]) -> Vec<f32> {
    reference.iter().map(|&r| r as f32).collect()
}

/// `out` with one element moved by `delta`: 0.05 is ~1e-2 of max |ref| (an element-wise
/// failure) but only ~5e-5 of ‖ref‖ (a norm-wise pass).
fn planted(reference: &[f64], delta: f64) -> Vec<f32> {
    let mut out = rounded(reference);
    out[BAD] = (reference[BAD] + delta) as f32;
    out
}

fn with_nan(reference: &[f64]) -> Vec<f32> {
    let mut out = rounded(reference);
    out[BAD] = f32::NAN;
    out
}

/// The checks every helper must make, on the comparisons it produced.
fn assert_catches(
    helper: &str,
    correct: Comparison,
    planted: Comparison,
    nan: Comparison,
    mismatch: Comparison,
) {
    assert!(
        correct.passed(),
        "{helper}: correct output fails: {}",
        correct.describe()
    );
    assert!(
        correct.rel_err < 1e-6 && correct.elem_err() < 1e-6,
        "{helper}: {}",
        correct.describe()
    );

    assert!(
        planted.norm_ok(),
        "{helper}: the planted bug should pass the norm check alone (rel err {:.3e})",
        planted.rel_err
    );
    assert!(
        planted.rel_err > 1e-6,
        "{helper}: the norm check should see the bug a little"
    );
    assert!(
        !planted.elementwise_ok(),
        "{helper}: one wrong element passes: {}",
        planted.describe()
    );
    assert!(!planted.passed(), "{helper}: one wrong element passes");
    assert_eq!(
        planted.worst_index,
        Some(BAD),
        "{helper}: wrong worst element"
    );

    assert!(
        !nan.passed() && !nan.norm_ok() && !nan.elementwise_ok(),
        "{helper}: NaN passes"
    );
    assert_eq!(
        nan.worst_index,
        Some(BAD),
        "{helper}: the NaN is the worst element"
    );
    assert!(nan.worst_values.unwrap().0.is_nan());

    assert!(!mismatch.passed(), "{helper}: a shape mismatch passes");
    assert!(
        mismatch.mismatch.is_some(),
        "{helper}: mismatch not reported"
    );
}

#[test]
fn compare_own_scale_catches_planted_bugs() {
    let r = normal_reference();
    assert_catches(
        "compare(Own)",
        compare(&rounded(&r), &r, Scale::Own),
        compare(&planted(&r, 0.05), &r, Scale::Own),
        compare(&with_nan(&r), &r, Scale::Own),
        compare(&rounded(&r[1..]), &r, Scale::Own),
    );
}

#[test]
fn compare_range_scale_catches_planted_bugs() {
    let r = entropy_reference();
    let ln_c = Scale::Range(10f64.ln());
    assert_catches(
        "compare(Range)",
        compare(&rounded(&r), &r, ln_c),
        compare(&planted(&r, 0.05), &r, ln_c),
        compare(&with_nan(&r), &r, ln_c),
        compare(&rounded(&r[..N - 1]), &r, ln_c),
    );
}

#[test]
fn range_scale_judges_tiny_entropies_absolutely() {
    // Entropies of ~1e-11 (one logit dominating by ~30), computed in f32 with an absolute
    // error of ~1e-7 of ln C: right at the range's scale, hopeless relative to themselves.
    let r: Vec<f64> = (0..1000).map(|i| 1e-11 * (1.0 + i as f64)).collect();
    let out: Vec<f32> = r.iter().map(|&v| (v + 2e-7) as f32).collect();
    assert!(compare(&out, &r, Scale::Range(10f64.ln())).passed());
    assert!(!compare(&out, &r, Scale::Own).passed());
    // But an error of 1e-3 (a real bug at that scale) still fails.
    let bad: Vec<f32> = r.iter().map(|&v| (v + 1e-3) as f32).collect();
    assert!(!compare(&bad, &r, Scale::Range(10f64.ln())).elementwise_ok());
}

#[test]
fn compare_f32_catches_planted_bugs() {
    let r = normal_reference();
    let r32 = rounded(&r);
    assert_catches(
        "compare_f32",
        compare_f32(&r32, &r32),
        compare_f32(&planted(&r, 0.05), &r32),
        compare_f32(&with_nan(&r), &r32),
        compare_f32(&r32, &r32[1..]),
    );
}

#[test]
fn compare_outputs_catches_planted_bugs() {
    let r = normal_reference();
    let want = vec![("y".to_string(), Tensor64::new(&[1000, 1000], r.clone()))];
    let got =
        |data: Vec<f32>, shape: &[usize]| vec![("y".to_string(), HostTensor::float(shape, data))];
    let one = |c: Vec<Comparison>| {
        assert_eq!(c.len(), 1);
        let c = c.into_iter().next().unwrap();
        assert_eq!((c.case.as_str(), c.output.as_str()), ("case", "y"));
        c
    };
    assert_catches(
        "compare_outputs",
        one(compare_outputs(
            "case",
            &got(rounded(&r), &[1000, 1000]),
            &want,
        )),
        one(compare_outputs(
            "case",
            &got(planted(&r, 0.05), &[1000, 1000]),
            &want,
        )),
        one(compare_outputs(
            "case",
            &got(with_nan(&r), &[1000, 1000]),
            &want,
        )),
        // Same values, same count, wrong shape.
        one(compare_outputs("case", &got(rounded(&r), &[N]), &want)),
    );
}

#[test]
fn compare_outputs_checks_names_and_order() {
    let t = |v: Vec<f64>| Tensor64::new(&[2], v);
    let h = |v: Vec<f32>| HostTensor::float(&[2], v);
    let want = vec![
        ("a".to_string(), t(vec![1.0, 2.0])),
        ("b".to_string(), t(vec![3.0, 4.0])),
    ];
    let right = vec![
        ("a".to_string(), h(vec![1.0, 2.0])),
        ("b".to_string(), h(vec![3.0, 4.0])),
    ];
    assert!(compare_outputs("c", &right, &want)
        .iter()
        .all(Comparison::passed));
    let swapped = vec![right[1].clone(), right[0].clone()];
    assert!(compare_outputs("c", &swapped, &want)
        .iter()
        .all(|c| !c.passed()));
    let missing = vec![right[0].clone()];
    let c = compare_outputs("c", &missing, &want);
    assert!(c[0].passed() && !c[1].passed());
    let extra = vec![
        right[0].clone(),
        right[1].clone(),
        ("z".to_string(), h(vec![0.0, 0.0])),
    ];
    let c = compare_outputs("c", &extra, &want);
    assert_eq!(c.len(), 3);
    assert!(!c[2].passed());
}

#[test]
fn compare_outputs_judges_entropies_against_ln_c() {
    // probs [M=2, C=10]: entropies are judged against ln 10, probs against themselves.
    let want = vec![
        ("probs".to_string(), Tensor64::new(&[2, 10], vec![0.1; 20])),
        (
            "entropy".to_string(),
            Tensor64::new(&[2], vec![1e-11, 2e-11]),
        ),
    ];
    let got = vec![
        (
            "probs".to_string(),
            HostTensor::float(&[2, 10], vec![0.1; 20]),
        ),
        (
            "entropy".to_string(),
            HostTensor::float(&[2], vec![1e-7, 0.0]),
        ),
    ];
    let c = compare_outputs("c", &got, &want);
    assert!(c.iter().all(Comparison::passed), "{}", c[1].describe());
    assert_eq!(c[1].scale, 10f64.ln());
}

#[test]
fn compare_outputs_judges_one_element_lora_sums_against_one() {
    // lora_backward at K = M = I = O = r = 1: dx's two terms cancelled to -5.4e-7 in a CI
    // run; an f32 ulp of the terms (1.4e-9) passes against 1, a wrong term (1e-3) does not.
    // Bigger dx and the other outputs stay judged against themselves.
    let one = |v: f64| Tensor64::new(&[1, 1], vec![v]);
    let want = vec![
        ("dx".to_string(), one(-5.424642e-7)),
        (
            "d_lora_a".to_string(),
            Tensor64::new(&[1, 1, 1], vec![0.25]),
        ),
        ("d_lora_b".to_string(), Tensor64::new(&[1, 1, 1], vec![0.5])),
    ];
    let got = |dx: f32| {
        vec![
            ("dx".to_string(), HostTensor::float(&[1, 1], vec![dx])),
            (
                "d_lora_a".to_string(),
                HostTensor::float(&[1, 1, 1], vec![0.25]),
            ),
            (
                "d_lora_b".to_string(),
                HostTensor::float(&[1, 1, 1], vec![0.5]),
            ),
        ]
    };
    let c = compare_outputs("c", &got(-5.438924e-7), &want);
    assert!(c.iter().all(Comparison::passed), "{}", c[0].describe());
    assert_eq!(c[0].scale, 1.0);
    assert_eq!(c[1].scale, 0.25);
    let c = compare_outputs("c", &got(1e-3), &want);
    assert!(!c[0].passed(), "a wrong one-element dx passed");
    // the same for lora_forward's y (outputs y, h); a two-element y keeps its own scale
    let fwd = |y: &[f64]| {
        vec![
            ("y".to_string(), Tensor64::new(&[1, 1, y.len()], y.to_vec())),
            ("h".to_string(), Tensor64::new(&[1, 1, 1], vec![0.3])),
        ]
    };
    let got_y = |y: &[f32]| {
        vec![
            (
                "y".to_string(),
                HostTensor::float(&[1, 1, y.len()], y.to_vec()),
            ),
            ("h".to_string(), HostTensor::float(&[1, 1, 1], vec![0.3])),
        ]
    };
    assert!(compare_outputs("c", &got_y(&[2e-6]), &fwd(&[2.001e-6]))[0].passed());
    let c = compare_outputs("c", &got_y(&[2e-6, 2e-6]), &fwd(&[2e-6, 3e-6]));
    assert_eq!(
        c[0].scale, 3e-6,
        "a two-element y is judged against its own max"
    );
    assert!(!c[0].passed(), "off by a third of itself");
}

#[test]
fn norm_only_rel_err_misses_one_wrong_element() {
    // `rel_err` is the norm-wise building block: it alone lets the planted bug through.
    let r = normal_reference();
    let r32 = rounded(&r);
    assert!(rel_err(&planted(&r, 0.05), &r32) <= TOLERANCE);
    assert_eq!(rel_err(&with_nan(&r), &r32), f64::INFINITY);
    assert_eq!(rel_err(&r32[1..], &r32), f64::INFINITY);
    assert!(rel_err(&r32, &r32) == 0.0);
}

#[test]
fn the_bounds_are_tight() {
    // An error of 2e-4 of max |ref| on one element fails; 5e-5 passes.
    let r = vec![1.0, -2.0, 0.5];
    assert!(!compare(&[1.0, -2.0 + 4e-4, 0.5], &r, Scale::Own).elementwise_ok());
    let c = compare(&[1.0, -2.0 + 1e-4, 0.5], &r, Scale::Own);
    assert!(c.passed());
    assert_eq!(c.bound(), RTOL * 2.0 + ATOL);
    assert!(c.bound() <= 2.0 * 1e-4 + 1e-20);
    // An all-zero reference is matched exactly, and an infinity fails.
    assert!(compare(&[0.0, 0.0], &[0.0, 0.0], Scale::Own).passed());
    assert!(!compare(&[0.0, 1e-6], &[0.0, 0.0], Scale::Own).passed());
    assert!(!compare(&[f32::INFINITY, 1.0], &[1.0, 1.0], Scale::Own).passed());
}

// ---------------------------------------------------------------------------------------
// The oracle, on cases worked out by hand.

fn named(items: &[(&str, HostTensor)]) -> Named {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}
fn t(shape: &[usize], v: &[f32]) -> HostTensor {
    HostTensor::float(shape, v.to_vec())
}
fn s(v: f32) -> HostTensor {
    HostTensor::scalar(v)
}
fn int(v: i64) -> HostTensor {
    HostTensor::int(&[], vec![v])
}

/// The oracle's outputs of `op`, by name, with their shapes checked.
fn oracle_out(
    op: &str,
    inputs: &[(&str, HostTensor)],
    shapes: &[(&str, &[usize])],
) -> Vec<Vec<f64>> {
    let out = oracle::run_f64(op, &named(inputs)).unwrap_or_else(|e| panic!("{op}: {e}"));
    assert_eq!(out.len(), shapes.len(), "{op}: number of outputs");
    out.into_iter()
        .zip(shapes)
        .map(|((name, t), (want_name, want_shape))| {
            assert_eq!(&name, want_name, "{op}");
            assert_eq!(&t.shape, want_shape, "{op} `{name}`");
            t.data
        })
        .collect()
}

fn assert_near(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn oracle_lora_forward_by_hand() {
    // x = [1, 2], W = I₂, bias = [1, −1], A = [[1, 1]], B = [[2], [0]], s = 0.5:
    // h = x·Aᵀ = 3; y = x + bias + 0.5·3·[2, 0] = [2, 1] + [3, 0] = [5, 1].
    let inputs = [
        ("x", t(&[1, 2], &[1.0, 2.0])),
        ("weight", t(&[2, 2], &[1.0, 0.0, 0.0, 1.0])),
        ("bias", t(&[2], &[1.0, -1.0])),
        ("lora_a", t(&[1, 1, 2], &[1.0, 1.0])),
        ("lora_b", t(&[1, 2, 1], &[2.0, 0.0])),
        ("scale", s(0.5)),
    ];
    let o = oracle_out(
        "lora_forward",
        &inputs,
        &[("y", &[1, 1, 2]), ("h", &[1, 1, 1])],
    );
    assert_near(&o[0], &[5.0, 1.0], "y");
    assert_near(&o[1], &[3.0], "h");

    // Per-particle x, no bias, K = 2: particle 1 has x = [0, 1], A = [[0, 1]], B = [[0], [1]]:
    // h₁ = 1, y₁ = [0, 1] + 0.5·1·[0, 1] = [0, 1.5]; particle 0 as above without bias: [4, 2].
    let inputs = [
        ("x", t(&[2, 1, 2], &[1.0, 2.0, 0.0, 1.0])),
        ("weight", t(&[2, 2], &[1.0, 0.0, 0.0, 1.0])),
        ("lora_a", t(&[2, 1, 2], &[1.0, 1.0, 0.0, 1.0])),
        ("lora_b", t(&[2, 2, 1], &[2.0, 0.0, 0.0, 1.0])),
        ("scale", s(0.5)),
    ];
    let o = oracle_out(
        "lora_forward",
        &inputs,
        &[("y", &[2, 1, 2]), ("h", &[2, 1, 1])],
    );
    assert_near(&o[0], &[4.0, 2.0, 0.0, 1.5], "y");
    assert_near(&o[1], &[3.0, 1.0], "h");
}

#[test]
fn oracle_lora_backward_by_hand() {
    // Shared x = [1, 2], W = I₂, s = 0.5, dy = [1, 1] for both particles.
    // Particle 0: A = [[1, 1]], B = [[2], [0]], h = 3: g = dy·B = 2,
    //   d_lora_b = 0.5·dyᵀh = [1.5, 1.5], d_lora_a = 0.5·g·x = [1, 2],
    //   dx₀ = dy·W + 0.5·g·A = [1, 1] + [1, 1] = [2, 2].
    // Particle 1: A = [[0, 1]], B = [[0], [1]], h = 2: g = 1,
    //   d_lora_b = [1, 1], d_lora_a = [0.5, 1], dx₁ = [1, 1] + [0, 0.5] = [1, 1.5].
    // Shared x: dx = dx₀ + dx₁ = [3, 3.5].
    let inputs = [
        ("x", t(&[1, 2], &[1.0, 2.0])),
        ("weight", t(&[2, 2], &[1.0, 0.0, 0.0, 1.0])),
        ("lora_a", t(&[2, 1, 2], &[1.0, 1.0, 0.0, 1.0])),
        ("lora_b", t(&[2, 2, 1], &[2.0, 0.0, 0.0, 1.0])),
        ("dy", t(&[2, 1, 2], &[1.0, 1.0, 1.0, 1.0])),
        ("h", t(&[2, 1, 1], &[3.0, 2.0])),
        ("scale", s(0.5)),
    ];
    let shapes: [(&str, &[usize]); 3] = [
        ("dx", &[1, 2]),
        ("d_lora_a", &[2, 1, 2]),
        ("d_lora_b", &[2, 2, 1]),
    ];
    let o = oracle_out("lora_backward", &inputs, &shapes);
    assert_near(&o[0], &[3.0, 3.5], "dx");
    assert_near(&o[1], &[1.0, 2.0, 0.5, 1.0], "d_lora_a");
    assert_near(&o[2], &[1.5, 1.5, 1.0, 1.0], "d_lora_b");
}

#[test]
fn oracle_matmul_by_hand() {
    // a = [[1, 2], [3, 4]], b = [[5, 6], [7, 8]], alpha = 0.5.
    let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
    let run = |a: &HostTensor, ta: i64, tb: i64, shape: &[usize]| {
        let inputs = [
            ("a", a.clone()),
            ("b", b.clone()),
            ("trans_a", int(ta)),
            ("trans_b", int(tb)),
            ("alpha", s(0.5)),
        ];
        oracle_out("matmul", &inputs, &[("c", shape)]).remove(0)
    };
    // ab = [[19, 22], [43, 50]]
    assert_near(&run(&a, 0, 0, &[2, 2]), &[9.5, 11.0, 21.5, 25.0], "ab");
    // aᵀb = [[1·5+3·7, 1·6+3·8], [2·5+4·7, 2·6+4·8]] = [[26, 30], [38, 44]]
    assert_near(&run(&a, 1, 0, &[2, 2]), &[13.0, 15.0, 19.0, 22.0], "aᵀb");
    // abᵀ = [[1·5+2·6, 1·7+2·8], [3·5+4·6, 3·7+4·8]] = [[17, 23], [39, 53]]
    assert_near(&run(&a, 0, 1, &[2, 2]), &[8.5, 11.5, 19.5, 26.5], "abᵀ");
    // aᵀbᵀ = (ba)ᵀ; ba = [[23, 34], [31, 46]], so aᵀbᵀ = [[23, 31], [34, 46]]
    assert_near(&run(&a, 1, 1, &[2, 2]), &[11.5, 15.5, 17.0, 23.0], "aᵀbᵀ");
    // Batched a = [a, I₂] with a shared b: the second block is 0.5·b.
    let batched = t(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 1.0, 0.0, 0.0, 1.0]);
    let want = [9.5, 11.0, 21.5, 25.0, 2.5, 3.0, 3.5, 4.0];
    assert_near(&run(&batched, 0, 0, &[2, 2, 2]), &want, "batched");
}

#[test]
fn oracle_svgd_family_by_hand() {
    // θ = [[0, 0], [3, 4], [0, 1]]: d₀₁ = 25, d₀₂ = 1, d₁₂ = 9 + 9 = 18.
    let theta = t(&[3, 2], &[0.0, 0.0, 3.0, 4.0, 0.0, 1.0]);
    let o = oracle_out(
        "pairwise_sqdist",
        &[("theta", theta.clone())],
        &[("sqdist", &[3, 3])],
    );
    assert_near(
        &o[0],
        &[0.0, 25.0, 1.0, 25.0, 0.0, 18.0, 1.0, 18.0, 0.0],
        "sqdist",
    );

    let rbf = |theta: HostTensor, k: usize, h: Option<f32>| {
        let mut inputs = vec![("theta", theta)];
        if let Some(h) = h {
            inputs.push(("bandwidth", s(h)));
        }
        oracle_out(
            "rbf_kernel",
            &inputs,
            &[("kernel", &[k, k]), ("bandwidth", &[1])],
        )
    };
    // Odd count of pairs {25, 1, 18}: median 18, h = 18 / ln 4.
    let o = rbf(theta.clone(), 3, None);
    let h = 18.0 / 4f64.ln();
    assert_near(&o[1], &[h], "bandwidth, odd count");
    assert_near(
        &o[0][..3],
        &[1.0, (-25.0 / h).exp(), (-1.0 / h).exp()],
        "kernel row 0",
    );
    // Even count: 1-D θ = 0, 1, 3, 7 has pairs 1, 9, 49, 4, 36, 16, sorted 1 4 9 16 36 49:
    // median (9 + 16) / 2 = 12.5, h = 12.5 / ln 5.
    let o = rbf(t(&[4, 1], &[0.0, 1.0, 3.0, 7.0]), 4, None);
    let h = 12.5 / 5f64.ln();
    assert_near(&o[1], &[h], "bandwidth, even count");
    assert_near(
        &o[0][4..8],
        &[(-1.0 / h).exp(), 1.0, (-4.0 / h).exp(), (-36.0 / h).exp()],
        "row 1",
    );
    assert_eq!(oracle::median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(oracle::median(&[]), None);
    // A given bandwidth is used as is: k = exp(−d / 2).
    let o = rbf(theta, 3, Some(2.0));
    assert_near(&o[1], &[2.0], "given bandwidth");
    assert_near(
        &o[0][3..6],
        &[(-12.5f64).exp(), 1.0, (-9.0f64).exp()],
        "row 1, h = 2",
    );
    // K = 1 gives [[1]] with h = 1; identical particles (median 0) give h = 1 too.
    assert_near(
        &rbf(t(&[1, 3], &[1.0, 2.0, 3.0]), 1, None).concat(),
        &[1.0, 1.0],
        "K = 1",
    );
    let o = rbf(t(&[2, 2], &[1.0, 2.0, 1.0, 2.0]), 2, None);
    assert_near(&o[1], &[1.0], "h = 1 for a zero median");

    // SVGD, K = 2, D = 1: θ = [0, 1], score = [1, −1], h = 2, kernel k₀₁ = 0.5, k₁₀ = 0.25:
    // φ₀ = ½ [k₀₀ s₀ + k₁₀ s₁ + (2/h) k₁₀ (θ₀ − θ₁)] = ½ [1 − 0.25 − 0.25] = 0.25,
    // φ₁ = ½ [k₀₁ s₀ + (2/h) k₀₁ (θ₁ − θ₀) + k₁₁ s₁] = ½ [0.5 + 0.5 − 1] = 0.
    let inputs = [
        ("theta", t(&[2, 1], &[0.0, 1.0])),
        ("score", t(&[2, 1], &[1.0, -1.0])),
        ("kernel", t(&[2, 2], &[1.0, 0.5, 0.25, 1.0])),
        ("bandwidth", s(2.0)),
    ];
    let o = oracle_out("svgd_direction", &inputs, &[("phi", &[2, 1])]);
    assert_near(&o[0], &[0.25, 0.0], "phi");
}

#[test]
fn oracle_adamw_by_hand() {
    // param 1, grad 0.5, m = v = 0, lr 0.1, betas 0.9/0.999, eps 0, wd 0.1, step 1:
    // m = 0.05, v = 0.001·0.25 = 0.00025, m̂ = 0.5, v̂ = 0.25, √v̂ = 0.5,
    // param = 1·(1 − 0.01) − 0.1·0.5/0.5 = 0.89.
    let step = |p: f32, m: f32, v: f32, t: i64| {
        let inputs = [
            ("param", HostTensor::float(&[1], vec![p])),
            ("grad", HostTensor::float(&[1], vec![0.5])),
            ("m", HostTensor::float(&[1], vec![m])),
            ("v", HostTensor::float(&[1], vec![v])),
            ("lr", s(0.1)),
            ("beta1", s(0.9)),
            ("beta2", s(0.999)),
            ("eps", s(0.0)),
            ("weight_decay", s(0.1)),
            ("step", int(t)),
        ];
        oracle_out(
            "adamw_step",
            &inputs,
            &[("param", &[1]), ("m", &[1]), ("v", &[1])],
        )
        .concat()
    };
    let tol = |got: &[f64], want: &[f64]| {
        // The hyper-parameters arrive as f32: 0.1 and 0.9 are off by ~1e-8 relative, and
        // 1 − f32(0.999) = 9.99987e-4 is off by 1.3e-5 relative, which moves v (and only v,
        // in these cases) by as much. 2e-5 relative covers that and nothing else.
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 2e-5 * w.abs(), "{got:?} vs {want:?}");
        }
    };
    tol(&step(1.0, 0.0, 0.0, 1), &[0.89, 0.05, 0.00025]);
    // Step 2, same gradient: m = 0.045 + 0.05 = 0.095, m̂ = 0.095/0.19 = 0.5;
    // v = 0.999·0.00025 + 0.00025 = 0.00049975, v̂ = 0.00049975/0.001999 = 0.25:
    // param = 0.89·0.99 − 0.1 = 0.7811.
    tol(&step(0.89, 0.05, 0.00025, 2), &[0.7811, 0.095, 0.00049975]);
}

#[test]
fn oracle_activations_by_hand() {
    let x = t(&[4], &[-1.0, 0.0, 1.0, 3.0]);
    let dy = t(&[4], &[2.0, 2.0, 2.0, 2.0]);
    let y = |op: &str| oracle_out(op, &[("x", x.clone())], &[("y", &[4])]).remove(0);
    let dx = |op: &str| {
        oracle_out(op, &[("x", x.clone()), ("dy", dy.clone())], &[("dx", &[4])]).remove(0)
    };
    assert_near(&y("relu_forward"), &[0.0, 0.0, 1.0, 3.0], "relu");
    // relu'(0) = 0 (1[x > 0]).
    assert_near(&dx("relu_backward"), &[0.0, 0.0, 2.0, 2.0], "relu'");
    // gelu(x) = 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))): u(1) = 0.7978846·1.044715 =
    // 0.8335624, tanh = 0.6823840, gelu(1) = 0.8411920 (PyTorch approximate="tanh" gives
    // the same); gelu(−1) = −1 + gelu(1) = −0.1588080 (gelu(x) − gelu(−x) = x).
    // gelu'(0) = 0.5; gelu'(1) = 0.5(1 + t) + 0.5(1 − t²)·0.7978846·(1 + 0.134145) = 1.0829641;
    // gelu'(−1) = 1 − gelu'(1) (gelu' (x) + gelu'(−x) = 1).
    let g1 = 0.841_191_990_608_276_8;
    let gd1 = 1.082_964_083_845_782_6;
    let tol = |got: &[f64], want: &[f64]| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
        }
    };
    tol(
        &y("gelu_forward"),
        &[g1 - 1.0, 0.0, g1, 2.996_362_607_918_227],
    );
    tol(
        &dx("gelu_backward"),
        &[
            2.0 * (1.0 - gd1),
            1.0,
            2.0 * gd1,
            2.0 * 1.011_584_166_630_969_5,
        ],
    );
}

#[test]
fn oracle_softmax_xent_by_hand() {
    // Row 0: logits [0, ln 3], label 1: softmax = [1/4, 3/4], −ln(3/4) = ln(4/3).
    // Row 1: logits [1000, 1000] (stability), label 0: softmax = [1/2, 1/2], −ln(1/2) = ln 2.
    // loss = (ln(4/3) + ln 2)/2; dlogits = (softmax − onehot)/2.
    let ln3 = 3f32.ln();
    let inputs = [
        ("logits", t(&[1, 2, 2], &[0.0, ln3, 1000.0, 1000.0])),
        ("labels", HostTensor::int(&[2], vec![1, 0])),
    ];
    let o = oracle_out(
        "softmax_xent",
        &inputs,
        &[("loss", &[1]), ("dlogits", &[1, 2, 2])],
    );
    // ln3 is f32-rounded: softmax of it is 3/4 to ~1e-8.
    let near = |got: &[f64], want: &[f64]| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{got:?} vs {want:?}");
        }
    };
    near(&o[0], &[((4.0f64 / 3.0).ln() + 2f64.ln()) / 2.0]);
    near(&o[1], &[0.125, -0.125, -0.25, 0.25]);
    let p = oracle::softmax(&[0.0, 3f64.ln()]);
    assert_near(&p, &[0.25, 0.75], "softmax of [0, ln 3]");
}

#[test]
fn oracle_ensemble_stats_by_hand() {
    // K = 2, M = 1, C = 2: particle 0 logits [0, ln 3] → [1/4, 3/4], particle 1 [ln 3, 0]
    // → [3/4, 1/4]. probs = [1/2, 1/2], entropy = ln 2; each particle's entropy is
    // −(¼ ln ¼ + ¾ ln ¾) = ln 4 − ¾ ln 3; mutual info = ln 2 − ln 4 + ¾ ln 3 = ¾ ln 3 − ln 2.
    let ln3 = 3f64.ln();
    let inputs = [("logits", t(&[2, 1, 2], &[0.0, ln3 as f32, ln3 as f32, 0.0]))];
    let shapes: [(&str, &[usize]); 4] = [
        ("probs", &[1, 2]),
        ("entropy", &[1]),
        ("expected_entropy", &[1]),
        ("mutual_info", &[1]),
    ];
    let o = oracle_out("ensemble_stats", &inputs, &shapes);
    let near = |got: &[f64], want: f64| assert!((got[0] - want).abs() < 1e-7, "{got:?} vs {want}");
    near(&o[0], 0.5);
    near(&o[0][1..], 0.5);
    near(&o[1], 2f64.ln());
    near(&o[2], 4f64.ln() - 0.75 * ln3);
    near(&o[3], 0.75 * ln3 - 2f64.ln());
    assert!(
        (oracle::entropy(&[1.0, 0.0]) - 0.0).abs() == 0.0,
        "0 ln 0 = 0"
    );
}

#[test]
fn oracle_axpby_by_hand() {
    // 2·[1, 2] − 1·[3, 5] = [−1, −1]
    let inputs = [
        ("x", t(&[2], &[1.0, 2.0])),
        ("y", t(&[2], &[3.0, 5.0])),
        ("alpha", s(2.0)),
        ("beta", s(-1.0)),
    ];
    let o = oracle_out("axpby", &inputs, &[("out", &[2])]);
    assert_near(&o[0], &[-1.0, -1.0], "axpby");
}

#[test]
fn oracle_has_the_outputs_of_run_named() {
    // Same names, order and shapes as the library's named ops, for every op.
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(11);
    for op in bella::ops::OP_NAMES {
        let cases = bella::testing::cases(op, bella::testing::Sizes::Small, &mut rng);
        assert!(!cases.is_empty(), "{op}");
        let c = &cases[1.min(cases.len() - 1)];
        let want = run_named(&cpu, op, &c.inputs).unwrap();
        let got = oracle::run(op, &c.inputs).unwrap();
        let names = |v: &[(String, HostTensor)]| -> Vec<(String, Vec<usize>)> {
            v.iter()
                .map(|(n, t)| (n.clone(), t.shape.clone()))
                .collect()
        };
        assert_eq!(names(&got), names(&want), "{op} [{}]", c.name);
    }
}

#[test]
fn oracle_rejects_bad_input() {
    let bad = |op: &str, inputs: &[(&str, HostTensor)]| {
        assert!(
            oracle::run(op, &named(inputs)).is_err(),
            "{op} accepted bad input"
        );
    };
    let a = t(&[2, 3], &[0.0; 6]);
    bad(
        "matmul",
        &[
            ("a", a.clone()),
            ("b", a.clone()),
            ("trans_a", int(0)),
            ("trans_b", int(0)),
            ("alpha", s(1.0)),
        ],
    );
    bad(
        "matmul",
        &[
            ("a", a.clone()),
            ("b", a.clone()),
            ("trans_a", int(2)),
            ("trans_b", int(1)),
            ("alpha", s(1.0)),
        ],
    );
    bad(
        "softmax_xent",
        &[
            ("logits", t(&[1, 1, 2], &[0.0, 0.0])),
            ("labels", HostTensor::int(&[1], vec![2])),
        ],
    );
    bad("relu_forward", &[("x", t(&[0], &[]))]);
    bad(
        "relu_backward",
        &[("x", a.clone()), ("dy", t(&[3], &[0.0; 3]))],
    );
    bad(
        "rbf_kernel",
        &[("theta", a.clone()), ("bandwidth", s(-1.0))],
    );
    bad("pairwise_sqdist", &[("theta", t(&[6], &[0.0; 6]))]);
    bad(
        "axpby",
        &[("x", a.clone()), ("y", a.clone()), ("alpha", s(1.0))],
    );
    bad("no_such_op", &[]);
}
