#![allow(clippy::needless_range_loop)] // naive loops, written index by index on purpose
//! The CPU backend against (1) direct naive float64 loops written from DESIGN.md on random
//! inputs, (2) small cases computed by hand, (3) finite differences of the forwards for every
//! backward, and (4) an SVGD sanity check: particles spread to cover a 1-D Gaussian.

use bella::backend::cpu::CpuBackend;
use bella::ops::named::{run_named, HostTensor, Named};
use bella::ops::{self, Adapter};
use bella::rng::Rng;
use bella::testing::{cases, compare, rel_err, Scale, Sizes};
use bella::{Backend, Tensor};

fn get(n: &Named, k: &str) -> Vec<f64> {
    n[k].to_f32().into_iter().map(|v| v as f64).collect()
}
fn shape(n: &Named, k: &str) -> Vec<usize> {
    n[k].shape.clone()
}
fn scalar(n: &Named, k: &str) -> f64 {
    n.get(k).map(|t| t.to_f32()[0] as f64).unwrap_or(f64::NAN)
}

/// `op(a)[i][p]` of a row-major `[rows, cols]` block, transposed or not.
fn at(a: &[f64], trans: bool, rows_op: usize, cols_op: usize, i: usize, p: usize) -> f64 {
    if trans {
        a[p * rows_op + i]
    } else {
        a[i * cols_op + p]
    }
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Naive float64 implementation of every op, straight from DESIGN.md.
/// One AdamW step of `p` with gradient `g`, the moments and hyper-parameters from `n`.
fn naive_adamw(n: &Named, mut p: Vec<f64>, g: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut m, mut v) = (get(n, "m"), get(n, "v"));
    let (lr, b1, b2, eps, wd, t) = (
        scalar(n, "lr"),
        scalar(n, "beta1"),
        scalar(n, "beta2"),
        scalar(n, "eps"),
        scalar(n, "weight_decay"),
        scalar(n, "step") as i32,
    );
    for i in 0..p.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        let mh = m[i] / (1.0 - b1.powi(t));
        let vh = v[i] / (1.0 - b2.powi(t));
        p[i] = p[i] * (1.0 - lr * wd) - lr * mh / (vh.sqrt() + eps);
    }
    (p, m, v)
}

fn naive(op: &str, n: &Named) -> Vec<(String, Vec<f64>)> {
    match op {
        "lora_forward" | "lora_backward" => {
            let (x, w, a, b) = (
                get(n, "x"),
                get(n, "weight"),
                get(n, "lora_a"),
                get(n, "lora_b"),
            );
            let (sa, sw, sx) = (shape(n, "lora_a"), shape(n, "weight"), shape(n, "x"));
            let (k, r, i_) = (sa[0], sa[1], sa[2]);
            let o = sw[0];
            let shared = sx.len() == 2;
            let m = if shared { sx[0] } else { sx[1] };
            let s = scalar(n, "scale");
            let xv = |kk: usize, mm: usize, ii: usize| {
                if shared {
                    x[mm * i_ + ii]
                } else {
                    x[(kk * m + mm) * i_ + ii]
                }
            };
            if op == "lora_forward" {
                let bias = n.get("bias").map(|_| get(n, "bias"));
                let mut y = vec![0.0; k * m * o];
                let mut h = vec![0.0; k * m * r];
                for kk in 0..k {
                    for mm in 0..m {
                        for rr in 0..r {
                            h[(kk * m + mm) * r + rr] = (0..i_)
                                .map(|ii| xv(kk, mm, ii) * a[(kk * r + rr) * i_ + ii])
                                .sum();
                        }
                        for oo in 0..o {
                            let base: f64 =
                                (0..i_).map(|ii| xv(kk, mm, ii) * w[oo * i_ + ii]).sum();
                            let low: f64 = (0..r)
                                .map(|rr| h[(kk * m + mm) * r + rr] * b[(kk * o + oo) * r + rr])
                                .sum();
                            y[(kk * m + mm) * o + oo] =
                                base + bias.as_ref().map_or(0.0, |bv| bv[oo]) + s * low;
                        }
                    }
                }
                vec![("y".into(), y), ("h".into(), h)]
            } else {
                let (dy, h) = (get(n, "dy"), get(n, "h"));
                let mut dx = vec![0.0; if shared { m * i_ } else { k * m * i_ }];
                let mut da = vec![0.0; k * r * i_];
                let mut db = vec![0.0; k * o * r];
                for kk in 0..k {
                    let g = |mm: usize, rr: usize| -> f64 {
                        (0..o)
                            .map(|oo| dy[(kk * m + mm) * o + oo] * b[(kk * o + oo) * r + rr])
                            .sum()
                    };
                    for oo in 0..o {
                        for rr in 0..r {
                            db[(kk * o + oo) * r + rr] = s
                                * (0..m)
                                    .map(|mm| {
                                        dy[(kk * m + mm) * o + oo] * h[(kk * m + mm) * r + rr]
                                    })
                                    .sum::<f64>();
                        }
                    }
                    for mm in 0..m {
                        let gm: Vec<f64> = (0..r).map(|rr| g(mm, rr)).collect();
                        for ii in 0..i_ {
                            for rr in 0..r {
                                da[(kk * r + rr) * i_ + ii] += s * gm[rr] * xv(kk, mm, ii);
                            }
                            let v: f64 = (0..o)
                                .map(|oo| dy[(kk * m + mm) * o + oo] * w[oo * i_ + ii])
                                .sum::<f64>()
                                + s * (0..r)
                                    .map(|rr| gm[rr] * a[(kk * r + rr) * i_ + ii])
                                    .sum::<f64>();
                            let idx = if shared {
                                mm * i_ + ii
                            } else {
                                (kk * m + mm) * i_ + ii
                            };
                            dx[idx] += v;
                        }
                    }
                }
                vec![
                    ("dx".into(), dx),
                    ("d_lora_a".into(), da),
                    ("d_lora_b".into(), db),
                ]
            }
        }
        "matmul" => {
            let (a, b) = (get(n, "a"), get(n, "b"));
            let (sa, sb) = (shape(n, "a"), shape(n, "b"));
            let ta = scalar(n, "trans_a") == 1.0;
            let tb = scalar(n, "trans_b") == 1.0;
            let alpha = scalar(n, "alpha");
            let (ra, ca) = (sa[sa.len() - 2], sa[sa.len() - 1]);
            let (rb, cb) = (sb[sb.len() - 2], sb[sb.len() - 1]);
            let (mm, kk) = if ta { (ca, ra) } else { (ra, ca) };
            let nn = if tb { rb } else { cb };
            let batch = if sa.len() == 3 {
                sa[0]
            } else if sb.len() == 3 {
                sb[0]
            } else {
                1
            };
            let mut c = vec![0.0; batch * mm * nn];
            for bi in 0..batch {
                let ab = if sa.len() == 3 {
                    &a[bi * ra * ca..(bi + 1) * ra * ca]
                } else {
                    &a[..]
                };
                let bb = if sb.len() == 3 {
                    &b[bi * rb * cb..(bi + 1) * rb * cb]
                } else {
                    &b[..]
                };
                for i in 0..mm {
                    for j in 0..nn {
                        c[(bi * mm + i) * nn + j] = alpha
                            * (0..kk)
                                .map(|p| at(ab, ta, mm, kk, i, p) * at(bb, tb, kk, nn, p, j))
                                .sum::<f64>();
                    }
                }
            }
            vec![("c".into(), c)]
        }
        "pairwise_sqdist" | "rbf_kernel" | "svgd_direction" => {
            let t = get(n, "theta");
            let st = shape(n, "theta");
            let (k, d) = (st[0], st[1]);
            let sq: Vec<f64> = (0..k * k)
                .map(|ij| {
                    (0..d)
                        .map(|p| (t[(ij / k) * d + p] - t[(ij % k) * d + p]).powi(2))
                        .sum()
                })
                .collect();
            match op {
                "pairwise_sqdist" => vec![("sqdist".into(), sq)],
                "rbf_kernel" => {
                    let h = if n.contains_key("bandwidth") {
                        scalar(n, "bandwidth")
                    } else {
                        let mut v: Vec<f64> = (0..k)
                            .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
                            .map(|(i, j)| sq[i * k + j])
                            .collect();
                        v.sort_by(f64::total_cmp);
                        let med = if v.is_empty() {
                            0.0
                        } else if v.len() % 2 == 1 {
                            v[v.len() / 2]
                        } else {
                            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
                        };
                        let h = med / ((k + 1) as f64).ln();
                        if h > 0.0 && h.is_finite() {
                            h
                        } else {
                            1.0
                        }
                    };
                    vec![
                        ("kernel".into(), sq.iter().map(|v| (-v / h).exp()).collect()),
                        ("bandwidth".into(), vec![h]),
                    ]
                }
                _ => {
                    let (score, kern, h) =
                        (get(n, "score"), get(n, "kernel"), scalar(n, "bandwidth"));
                    let mut phi = vec![0.0; k * d];
                    for i in 0..k {
                        for p in 0..d {
                            phi[i * d + p] = (0..k)
                                .map(|j| {
                                    let kji = kern[j * k + i];
                                    kji * score[j * d + p]
                                        + 2.0 / h * kji * (t[i * d + p] - t[j * d + p])
                                })
                                .sum::<f64>()
                                / k as f64;
                        }
                    }
                    vec![("phi".into(), phi)]
                }
            }
        }
        "svgd_step" => {
            let gs = scalar(n, "grad_scale");
            let phi = naive("svgd_direction", n).remove(0).1;
            let g: Vec<f64> = phi.iter().map(|p| gs * p).collect();
            let (p, m, v) = naive_adamw(n, get(n, "theta"), &g);
            vec![("theta".into(), p), ("m".into(), m), ("v".into(), v)]
        }
        "adamw_step" => {
            let (p, m, v) = naive_adamw(n, get(n, "param"), &get(n, "grad"));
            vec![("param".into(), p), ("m".into(), m), ("v".into(), v)]
        }
        "relu_forward" => vec![(
            "y".into(),
            get(n, "x").iter().map(|&x| x.max(0.0)).collect(),
        )],
        "relu_backward" => {
            let (x, dy) = (get(n, "x"), get(n, "dy"));
            vec![(
                "dx".into(),
                x.iter()
                    .zip(&dy)
                    .map(|(&x, &d)| if x > 0.0 { d } else { 0.0 })
                    .collect(),
            )]
        }
        "gelu_forward" | "gelu_backward" => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let gelu = |x: f64| 0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh());
            let x = get(n, "x");
            if op == "gelu_forward" {
                vec![("y".into(), x.iter().map(|&v| gelu(v)).collect())]
            } else {
                // Central difference in float64 is exact enough to be the reference here.
                let dy = get(n, "dy");
                let e = 1e-6;
                vec![(
                    "dx".into(),
                    x.iter()
                        .zip(&dy)
                        .map(|(&v, &d)| d * (gelu(v + e) - gelu(v - e)) / (2.0 * e))
                        .collect(),
                )]
            }
        }
        "softmax_xent" | "ensemble_stats" => {
            let z = get(n, "logits");
            let s = shape(n, "logits");
            let (k, m, c) = (s[0], s[1], s[2]);
            let p: Vec<Vec<f64>> = (0..k * m)
                .map(|row| softmax(&z[row * c..(row + 1) * c]))
                .collect();
            if op == "softmax_xent" {
                let labels = get(n, "labels");
                let mut loss = vec![0.0; k];
                let mut dl = vec![0.0; k * m * c];
                for kk in 0..k {
                    for mm in 0..m {
                        let l = labels[mm] as usize;
                        let row = kk * m + mm;
                        loss[kk] -= p[row][l].ln() / m as f64;
                        for j in 0..c {
                            dl[row * c + j] =
                                (p[row][j] - if j == l { 1.0 } else { 0.0 }) / m as f64;
                        }
                    }
                }
                vec![("loss".into(), loss), ("dlogits".into(), dl)]
            } else {
                let ent = |q: &[f64]| -> f64 {
                    -q.iter()
                        .filter(|&&v| v > 0.0)
                        .map(|&v| v * v.ln())
                        .sum::<f64>()
                };
                let (mut probs, mut h, mut eh, mut mi) = (vec![], vec![], vec![], vec![]);
                for mm in 0..m {
                    let mean: Vec<f64> = (0..c)
                        .map(|j| (0..k).map(|kk| p[kk * m + mm][j]).sum::<f64>() / k as f64)
                        .collect();
                    let e: f64 = (0..k).map(|kk| ent(&p[kk * m + mm])).sum::<f64>() / k as f64;
                    let hh = ent(&mean);
                    probs.extend(mean);
                    h.push(hh);
                    eh.push(e);
                    mi.push(hh - e);
                }
                vec![
                    ("probs".into(), probs),
                    ("entropy".into(), h),
                    ("expected_entropy".into(), eh),
                    ("mutual_info".into(), mi),
                ]
            }
        }
        "axpby" => {
            let (a, b) = (scalar(n, "alpha"), scalar(n, "beta"));
            let out = get(n, "x")
                .iter()
                .zip(get(n, "y"))
                .map(|(x, y)| a * x + b * y)
                .collect();
            vec![("out".into(), out)]
        }
        _ => unreachable!("{op}"),
    }
}

fn rel64(got: &[f32], want: &[f64]) -> f64 {
    let w: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    rel_err(got, &w)
}

#[test]
fn every_op_matches_naive_float64() {
    let cpu = CpuBackend::new();
    let seed = Rng::fresh_seed();
    let mut rng = Rng::new(seed);
    for op in bella::ops::OP_NAMES {
        let cs = cases(op, Sizes::Small, &mut rng);
        assert!(!cs.is_empty(), "{op} has no cases");
        for c in cs {
            let got = run_named(&cpu, op, &c.inputs).unwrap();
            let want = naive(op, &c.inputs);
            assert_eq!(got.len(), want.len(), "{op}");
            for ((gn, g), (wn, w)) in got.iter().zip(&want) {
                assert_eq!(gn, wn);
                // Outputs that f32 resolves only absolutely are judged at the scales of
                // `testing::output_scale` (see there for why): dx = dy·f'(x) near a zero of
                // f' against dy's unit size, entropies and MI against ln C, the loss against
                // 1 nat, dlogits against 1/M.
                let logits = c.inputs.get("logits").map(|t| t.shape.clone());
                let scale = match (gn.as_str(), logits.as_deref()) {
                    ("dx", _) if op.ends_with("_backward") && op != "lora_backward" => {
                        Scale::Range(1.0)
                    }
                    ("entropy" | "expected_entropy" | "mutual_info", Some(&[_, _, cc])) => {
                        Scale::Range((cc as f64).ln())
                    }
                    ("loss", Some(_)) => Scale::Range(1.0),
                    ("out", _) if op == "axpby" => Scale::Range(1.0),
                    ("dlogits", Some(&[_, m, _])) => Scale::Range(1.0 / m as f64),
                    _ => Scale::Own,
                };
                let err = match scale {
                    Scale::Own => rel64(&g.to_f32(), w),
                    s => compare(&g.to_f32(), w, s).rel_err,
                };
                // gelu_backward's naive reference is a float64 finite difference (~1e-9).
                assert!(
                    err < 2e-5,
                    "{op} [{}] `{gn}`: rel err {err:.2e} (seed {seed})",
                    c.name
                );
            }
        }
    }
}

fn up(be: &dyn Backend, shape: &[usize], v: &[f32]) -> Tensor {
    be.upload(shape, v).unwrap()
}

#[test]
fn hand_computed_small_cases() {
    let be = CpuBackend::new();
    // lora_forward: x=[1,2], W=[[1,0],[0,1]], bias=[1,-1], A=[[1,1]], B=[[2],[0]], s=0.5:
    // h = 3, y = [1,2] + [1,-1] + 0.5·3·[2,0] = [5, 1].
    let x = up(&be, &[1, 2], &[1., 2.]);
    let w = up(&be, &[2, 2], &[1., 0., 0., 1.]);
    let bias = up(&be, &[2], &[1., -1.]);
    let a = up(&be, &[1, 1, 2], &[1., 1.]);
    let b = up(&be, &[1, 2, 1], &[2., 0.]);
    let ad = Adapter::from_tensors("t", &a, &b).unwrap();
    let out = ops::lora_forward(&be, &x, &w, Some(&bias), &ad, 0.5).unwrap();
    assert_eq!(be.download(&out.y).unwrap(), vec![5., 1.]);
    assert_eq!(be.download(&out.h).unwrap(), vec![3.]);
    // lora_backward with dy=[1,1]: g = dy·B = 2; d_lora_b = 0.5·dyᵀh = [1.5, 1.5];
    // d_lora_a = 0.5·g·x = [1, 2]; dx = dy·W + 0.5·g·A = [1,1] + [1,1] = [2, 2].
    let dy = up(&be, &[1, 1, 2], &[1., 1.]);
    let g = ops::lora_backward(&be, &dy, &x, &w, &ad, &out.h, 0.5).unwrap();
    assert_eq!(be.download(&g.d_lora_b).unwrap(), vec![1.5, 1.5]);
    assert_eq!(be.download(&g.d_lora_a).unwrap(), vec![1., 2.]);
    assert_eq!(be.download(&g.dx).unwrap(), vec![2., 2.]);
    // pairwise_sqdist of (0,0), (3,4), (0,1): 25, 1, 18.
    let th = up(&be, &[3, 2], &[0., 0., 3., 4., 0., 1.]);
    let d = be
        .download(&ops::pairwise_sqdist(&be, &th).unwrap())
        .unwrap();
    assert_eq!(d, vec![0., 25., 1., 25., 0., 18., 1., 18., 0.]);
    // Median of {25, 1, 18} is 18; h = 18 / ln 4.
    let (kern, h) = ops::rbf_kernel(&be, &th, None).unwrap();
    assert!((h - 18.0 / 4f32.ln()).abs() < 1e-5);
    let kv = be.download(&kern).unwrap();
    assert!((kv[1] - (-25.0 / h).exp()).abs() < 1e-7 && kv[0] == 1.0);
    // K = 1 gives [[1]].
    let one = up(&be, &[1, 3], &[1., 2., 3.]);
    let (k1, h1) = ops::rbf_kernel(&be, &one, None).unwrap();
    assert_eq!((be.download(&k1).unwrap(), h1), (vec![1.0], 1.0));
    // Identical particles: median 0, so h falls back to 1.
    let same = up(&be, &[2, 2], &[1., 1., 1., 1.]);
    assert_eq!(ops::rbf_kernel(&be, &same, None).unwrap().1, 1.0);
    // svgd_direction, K=2, D=1, θ=(0,1), score=(1,−1), k=[[1,e],[e,1]], h=2:
    // φ_0 = ½[1·1 + e·(−1) + (2/2)·e·(0−1)] = ½(1 − 2e).
    let e = 0.5f32;
    let phi = ops::svgd_direction(
        &be,
        &up(&be, &[2, 1], &[0., 1.]),
        &up(&be, &[2, 1], &[1., -1.]),
        &up(&be, &[2, 2], &[1., e, e, 1.]),
        2.0,
    )
    .unwrap();
    let pv = be.download(&phi).unwrap();
    assert!((pv[0] - 0.5 * (1.0 - 2.0 * e)).abs() < 1e-6, "{pv:?}");
    assert!((pv[1] + 0.5 * (1.0 - 2.0 * e)).abs() < 1e-6, "{pv:?}");
    // softmax_xent of equal logits: loss ln C, dlogits (1/C − onehot)/M.
    let z = up(&be, &[1, 2, 4], &[0.; 8]);
    let (loss, dl) = ops::softmax_xent(&be, &z, &[1, 3]).unwrap();
    assert!((be.download(&loss).unwrap()[0] - 4f32.ln()).abs() < 1e-6);
    assert_eq!(be.download(&dl).unwrap()[1], (0.25 - 1.0) / 2.0);
    // Stable for huge logits.
    let big = up(&be, &[1, 1, 2], &[1000., 0.]);
    let (l2, _) = ops::softmax_xent(&be, &big, &[1]).unwrap();
    assert!((be.download(&l2).unwrap()[0] - 1000.0).abs() < 1e-3);
    // adamw_step, step 1: m̂ = g, v̂ = g², so p ← p(1 − lr·wd) − lr·g/(|g| + eps).
    let hp = bella::backend::AdamW {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 0.0,
        weight_decay: 0.5,
        step: 1,
    };
    let (mut p, g, mut m, mut v) = (
        up(&be, &[2], &[1., 1.]),
        up(&be, &[2], &[2., -3.]),
        be.zeros(&[2]).unwrap(),
        be.zeros(&[2]).unwrap(),
    );
    ops::adamw_step(&be, &mut p, &g, &mut m, &mut v, &hp).unwrap();
    let pv = be.download(&p).unwrap();
    assert!(
        (pv[0] - (0.95 - 0.1)).abs() < 1e-6 && (pv[1] - (0.95 + 0.1)).abs() < 1e-6,
        "{pv:?}"
    );
    // ensemble_stats: two confident particles that disagree have MI = ln 2 − ~0.
    let z = up(&be, &[2, 1, 2], &[50., 0., 0., 50.]);
    let s = ops::ensemble_stats(&be, &z).unwrap();
    assert!((be.download(&s.mutual_info).unwrap()[0] - 2f32.ln()).abs() < 1e-5);
    assert_eq!(be.download(&s.probs).unwrap(), vec![0.5, 0.5]);
}

/// Central difference of `loss` along every coordinate of `v`.
fn numeric_grad(v: &[f32], eps: f32, loss: impl Fn(&[f32]) -> f64) -> Vec<f64> {
    let mut v = v.to_vec();
    (0..v.len())
        .map(|i| {
            let old = v[i];
            v[i] = old + eps;
            let up = loss(&v);
            v[i] = old - eps;
            let down = loss(&v);
            v[i] = old;
            (up - down) / (2.0 * eps as f64)
        })
        .collect()
}

#[test]
fn lora_backward_matches_finite_differences() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(Rng::fresh_seed());
    for shared in [true, false] {
        let (k, m, i, o, r) = (2, 3, 4, 5, 2);
        let x_shape: Vec<usize> = if shared { vec![m, i] } else { vec![k, m, i] };
        let xv = rng.normal_vec(x_shape.iter().product());
        let wv = rng.normal_vec(o * i);
        let av = rng.normal_vec(k * r * i);
        let bv = rng.normal_vec(k * o * r);
        let cv = rng.normal_vec(k * m * o); // L = Σ c ⊙ y, so dL/dy = c
        let s = 0.7;
        let loss = |xv: &[f32], av: &[f32], bv: &[f32]| -> f64 {
            let (a, b) = (up(&be, &[k, r, i], av), up(&be, &[k, o, r], bv));
            let ad = Adapter::from_tensors("t", &a, &b).unwrap();
            let y = ops::lora_forward(
                &be,
                &up(&be, &x_shape, xv),
                &up(&be, &[o, i], &wv),
                None,
                &ad,
                s,
            )
            .unwrap()
            .y;
            be.download(&y)
                .unwrap()
                .iter()
                .zip(&cv)
                .map(|(&y, &c)| y as f64 * c as f64)
                .sum()
        };
        let (a, b) = (up(&be, &[k, r, i], &av), up(&be, &[k, o, r], &bv));
        let ad = Adapter::from_tensors("t", &a, &b).unwrap();
        let x = up(&be, &x_shape, &xv);
        let w = up(&be, &[o, i], &wv);
        let h = ops::lora_forward(&be, &x, &w, None, &ad, s).unwrap().h;
        let g = ops::lora_backward(&be, &up(&be, &[k, m, o], &cv), &x, &w, &ad, &h, s).unwrap();
        let checks = [
            (
                "dx",
                be.download(&g.dx).unwrap(),
                numeric_grad(&xv, 1e-2, |v| loss(v, &av, &bv)),
            ),
            (
                "d_lora_a",
                be.download(&g.d_lora_a).unwrap(),
                numeric_grad(&av, 1e-2, |v| loss(&xv, v, &bv)),
            ),
            (
                "d_lora_b",
                be.download(&g.d_lora_b).unwrap(),
                numeric_grad(&bv, 1e-2, |v| loss(&xv, &av, v)),
            ),
        ];
        for (name, got, want) in checks {
            let err = rel64(&got, &want);
            assert!(err < 1e-3, "{name} (shared x: {shared}): rel err {err:.2e}");
        }
    }
}

#[test]
fn activation_and_xent_backwards_match_finite_differences() {
    let be = CpuBackend::new();
    let mut rng = Rng::new(Rng::fresh_seed());
    let n = 40;
    // Keep x away from relu's kink at 0, where the difference quotient is meaningless.
    let xv: Vec<f32> = rng
        .normal_vec(n)
        .into_iter()
        .map(|v| if v.abs() < 0.05 { v + 0.1 } else { v })
        .collect();
    let cv = rng.normal_vec(n);
    type Fwd = fn(&dyn Backend, &Tensor) -> bella::Result<Tensor>;
    type Bwd = fn(&dyn Backend, &Tensor, &Tensor) -> bella::Result<Tensor>;
    let pairs: [(&str, Fwd, Bwd); 2] = [
        ("relu", ops::relu_forward, ops::relu_backward),
        ("gelu", ops::gelu_forward, ops::gelu_backward),
    ];
    for (name, fwd, bwd) in pairs {
        let loss = |v: &[f32]| -> f64 {
            let y = fwd(&be, &up(&be, &[n], v)).unwrap();
            be.download(&y)
                .unwrap()
                .iter()
                .zip(&cv)
                .map(|(&y, &c)| y as f64 * c as f64)
                .sum()
        };
        let got = be
            .download(&bwd(&be, &up(&be, &[n], &xv), &up(&be, &[n], &cv)).unwrap())
            .unwrap();
        let err = rel64(&got, &numeric_grad(&xv, 1e-3, loss));
        assert!(err < 1e-3, "{name}_backward: rel err {err:.2e}");
    }
    // dlogits is the gradient of Σ_k loss_k (each particle's loss depends on its own logits).
    let (k, m, c) = (2, 3, 5);
    let zv = rng.normal_vec(k * m * c);
    let labels = [4u32, 0, 2];
    let loss = |v: &[f32]| -> f64 {
        let (l, _) = ops::softmax_xent(&be, &up(&be, &[k, m, c], v), &labels).unwrap();
        be.download(&l).unwrap().iter().map(|&x| x as f64).sum()
    };
    let (_, dl) = ops::softmax_xent(&be, &up(&be, &[k, m, c], &zv), &labels).unwrap();
    let err = rel64(&be.download(&dl).unwrap(), &numeric_grad(&zv, 1e-2, loss));
    assert!(err < 1e-3, "dlogits: rel err {err:.2e}");
}

/// SVGD on a 1-D Gaussian N(2, 0.5²): particles started in a tight clump far away must move
/// to the target and spread to its variance. With the repulsive term's sign flipped they
/// would collapse to the mode (variance → 0) and this fails.
#[test]
fn svgd_spreads_particles_over_a_gaussian() {
    let be = CpuBackend::new();
    let (mu, sigma) = (2.0f32, 0.5f32);
    let k = 64;
    let mut rng = Rng::new(Rng::fresh_seed());
    let mut theta: Vec<f32> = (0..k).map(|_| -1.0 + 0.01 * rng.normal()).collect();
    for _ in 0..2000 {
        let t = up(&be, &[k, 1], &theta);
        let score: Vec<f32> = theta.iter().map(|&x| -(x - mu) / (sigma * sigma)).collect();
        let (kern, h) = ops::rbf_kernel(&be, &t, None).unwrap();
        let phi = ops::svgd_direction(&be, &t, &up(&be, &[k, 1], &score), &kern, h).unwrap();
        for (x, p) in theta.iter_mut().zip(be.download(&phi).unwrap()) {
            *x += 0.02 * p;
        }
    }
    let mean = theta.iter().sum::<f32>() / k as f32;
    let var = theta.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / k as f32;
    assert!((mean - mu).abs() < 0.05, "mean {mean}");
    let target = sigma * sigma;
    assert!(
        (var - target).abs() < 0.3 * target,
        "variance {var}, target {target}"
    );
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let be = CpuBackend::new();
    let x = up(&be, &[2, 3], &[0.; 6]);
    let w = up(&be, &[4, 5], &[0.; 20]);
    let a = up(&be, &[1, 1, 3], &[0.; 3]);
    let b = up(&be, &[1, 4, 1], &[0.; 4]);
    let ad = Adapter::from_tensors("t", &a, &b).unwrap();
    let e = ops::lora_forward(&be, &x, &w, None, &ad, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`x`") && e.contains("[2, 3]"), "{e}");
    let e = ops::softmax_xent(&be, &up(&be, &[1, 1, 3], &[0.; 3]), &[3])
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 3"), "{e}");
    let e = ops::matmul(&be, &x, &x, false, false, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inner"), "{e}");
    let empty = up(&be, &[0, 3], &[]);
    assert!(ops::pairwise_sqdist(&be, &empty).is_err());
    let mut named = Named::new();
    named.insert("x".into(), HostTensor::float(&[2], vec![1., 2.]));
    let e = run_named(&be, "relu_backward", &named)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing input tensor `dy`"), "{e}");
}
